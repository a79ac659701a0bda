"""CTR metrics: plain functions against sklearn / hand computation, the Trainer hook, the local evaluate module."""

import numpy as np
import pytest
from sklearn.metrics import log_loss as sk_log_loss
from sklearn.metrics import roc_auc_score
from transformers import EvalPrediction

from training.ctr_metrics import auc, compute_metrics, ctr_metrics, load_flip_ctr_metric, log_loss, rela_impr, sigmoid


@pytest.fixture
def scores():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, size=200)
    probs = np.clip(0.5 * labels + rng.uniform(0, 0.6, size=200), 1e-4, 1 - 1e-4)
    return labels, probs


def test_auc_and_logloss_match_sklearn(scores):
    labels, probs = scores
    assert auc(labels, probs) == pytest.approx(roc_auc_score(labels, probs))
    assert log_loss(labels, probs) == pytest.approx(sk_log_loss(labels, probs))
    manual = -np.mean(labels * np.log(probs) + (1 - labels) * np.log(1 - probs))
    assert log_loss(labels, probs) == pytest.approx(manual)


def test_auc_by_hand():
    # positives 0.8, 0.4; negatives 0.1, 0.5: pairs won 0.8>0.1, 0.8>0.5, 0.4>0.1 -> 3 of 4
    assert auc([1, 1, 0, 0], [0.8, 0.4, 0.1, 0.5]) == pytest.approx(0.75)


def test_rela_impr_by_hand():
    assert rela_impr(0.75, 0.70) == pytest.approx(25.0)  # (0.25 / 0.20 - 1) * 100
    assert rela_impr(0.80, 0.75) == pytest.approx(20.0)  # (0.30 / 0.25 - 1) * 100
    assert rela_impr(0.65, 0.70) == pytest.approx(-25.0)


def test_sigmoid_is_stable():
    values = sigmoid(np.array([-1000.0, 0.0, 1000.0]))
    assert np.all(np.isfinite(values))
    assert values.tolist() == pytest.approx([0.0, 0.5, 1.0])


def test_compute_metrics_takes_logits_from_a_tuple(scores):
    labels, probs = scores
    logits = np.log(probs / (1 - probs))
    per_batch_losses = np.array([0.7, 0.6])  # other outputs of the model (P6)
    expected = ctr_metrics(labels, probs)
    for predictions in (logits, (logits, per_batch_losses)):
        got = compute_metrics(EvalPrediction(predictions=predictions, label_ids=labels.astype(np.float32)))
        assert got == pytest.approx(expected)


def test_compute_metrics_scores_the_named_towers(scores):
    """A joint model's predictions (logits, id_logits, text_logits) add `id_auc` / `text_auc`, in that order."""
    labels, probs = scores
    logits = np.log(probs / (1 - probs))
    towers = (-logits, logits + np.random.default_rng(0).normal(0, 3, len(logits)))
    got = compute_metrics(EvalPrediction((logits, *towers), labels.astype(np.float32)), tower_names=("id", "text"))
    expected = ctr_metrics(labels, probs) | {"id_auc": 1 - auc(labels, probs)}
    expected["text_auc"] = auc(labels, sigmoid(towers[1]))
    assert got == pytest.approx(expected) and got["id_auc"] < 0.5 < got["text_auc"] < got["auc"]


def test_evaluate_module_loads_offline(scores, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    labels, probs = scores
    metric = load_flip_ctr_metric()
    metric.add_batch(prediction_scores=probs[:100], references=labels[:100])
    metric.add_batch(prediction_scores=probs[100:], references=labels[100:])
    assert metric.compute() == pytest.approx(ctr_metrics(labels, probs))
