"""CTR metrics as plain functions (AUC, LogLoss, RelaImpr) and the `compute_metrics` hook for `Trainer`.

The same AUC / LogLoss are available through the `evaluate` API from the local module
`training/metrics/flip_ctr` (works offline), see `load_flip_ctr_metric`.
"""

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from sklearn.metrics import log_loss as _sk_log_loss
from sklearn.metrics import roc_auc_score
from transformers import EvalPrediction

FLIP_CTR_METRIC_PATH = str(Path(__file__).parent / "metrics" / "flip_ctr")


def auc(labels: np.ndarray, probs: np.ndarray) -> float:
    """Area under the ROC curve of click probabilities `probs` (N,) against 0/1 `labels` (N,)."""
    return float(roc_auc_score(np.asarray(labels), np.asarray(probs)))


def log_loss(labels: np.ndarray, probs: np.ndarray) -> float:
    """Mean binary cross-entropy of probabilities `probs` (N,) against 0/1 `labels` (N,)."""
    return float(_sk_log_loss(np.asarray(labels), np.asarray(probs, dtype=np.float64), labels=[0, 1]))


def rela_impr(model_auc: float, base_auc: float) -> float:
    """RelaImpr in percent: `((AUC_model - 0.5) / (AUC_base - 0.5) - 1) * 100`."""
    return ((model_auc - 0.5) / (base_auc - 0.5) - 1.0) * 100.0


def sigmoid(logits: np.ndarray) -> np.ndarray:
    """Numerically stable logistic function in float64."""
    logits = np.asarray(logits, dtype=np.float64)
    return np.exp(-np.logaddexp(0.0, -logits))


def ctr_metrics(labels: np.ndarray, probs: np.ndarray) -> dict[str, float]:
    """`{"auc": ..., "logloss": ...}` of click probabilities against 0/1 labels."""
    return {"auc": auc(labels, probs), "logloss": log_loss(labels, probs)}


def compute_metrics(eval_pred: EvalPrediction, tower_names: Sequence[str] = ()) -> dict[str, float]:
    """`Trainer` hook: AUC / LogLoss of the click logits, the first prediction (N,). The next predictions, one per
    name in `tower_names`, are the logits (N,) of a joint model's towers (`training.finetune` keeps `id_logits`,
    `text_logits`): each adds `<name>_auc`. Further predictions (e.g. per-batch losses) are ignored."""
    predictions = eval_pred.predictions
    logits, *others = predictions if isinstance(predictions, (tuple, list)) else (predictions,)
    labels = np.asarray(eval_pred.label_ids).reshape(-1)
    metrics = ctr_metrics(labels, sigmoid(np.asarray(logits).reshape(-1)))
    for name, tower_logits in zip(tower_names, others, strict=False):
        metrics[f"{name}_auc"] = auc(labels, sigmoid(np.asarray(tower_logits).reshape(-1)))
    return metrics


def load_flip_ctr_metric():
    """The `flip_ctr` metric through `evaluate.load` from its local folder (no Hub access)."""
    import evaluate

    return evaluate.load(FLIP_CTR_METRIC_PATH)
