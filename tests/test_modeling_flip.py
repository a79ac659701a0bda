"""FLIP models: shapes, losses, switches, save/load, pretrained text encoder, memorisation, DDP gather, LoRA."""

import dataclasses
import logging
import math

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F
from transformers import BertModel

from modeling_flip import FlipConfig, FlipForCTR, FlipForPretraining, FlipModel
from modeling_flip.modeling_flip import binary_nce_loss, contrastive_loss, sampled_softmax_loss

FIELD_VOCAB_SIZES = [5, 8, 12, 6]
BACKBONES = ["dcnv2", "deepfm", "autoint"]
CTR_MODES = ["id", "text", "joint"]
MTM_LOSSES = ["nce", "sampled_softmax", "softmax"]


class FlipModelTester:
    """Builds tiny configs and random, consistent batches for every FLIP head."""

    def __init__(self, text_config, batch_size: int = 4, seq_length: int = 10):
        self.text_config = text_config
        self.batch_size = batch_size
        self.seq_length = seq_length

    def config_kwargs(self, **overrides) -> dict:
        """Tiny `FlipConfig` fields, without the text config."""
        kwargs = {
            "field_names": [f"f{i}" for i in range(len(FIELD_VOCAB_SIZES))],
            "field_vocab_sizes": FIELD_VOCAB_SIZES,
            "embedding_dim": 8,
            "low_rank": 4,
            "mlp_hidden_sizes": [16, 8],
            "projection_dim": 16,
            "nce_num_noise": 5,
            "mtm_embedding_dim": 8,
        }
        return {**kwargs, **overrides}

    def get_config(self, text_overrides: dict | None = None, **overrides) -> FlipConfig:
        """A tiny config; the text config is a copy (`text_overrides` change it), never the shared fixture."""
        text_config = {**self.text_config.to_dict(), **(text_overrides or {})}
        return FlipConfig(text_config=text_config, **self.config_kwargs(**overrides))

    def text_inputs(self, generator: torch.Generator) -> dict:
        shape = (self.batch_size, self.seq_length)
        input_ids = torch.randint(5, self.text_config.vocab_size, shape, generator=generator)
        attention_mask = torch.ones(shape, dtype=torch.long)
        attention_mask[0, -3:] = 0  # one padded row
        return {"input_ids": input_ids, "attention_mask": attention_mask}

    def field_ids(self, generator: torch.Generator) -> torch.Tensor:
        columns = [torch.randint(2, size, (self.batch_size,), generator=generator) for size in FIELD_VOCAB_SIZES]
        return torch.stack(columns, dim=1)  # (B, F)

    def pretraining_inputs(self, seed: int = 0) -> dict:
        generator = torch.Generator().manual_seed(seed)
        inputs = {**self.text_inputs(generator), "field_ids": self.field_ids(generator)}
        masked_positions = torch.zeros_like(inputs["input_ids"], dtype=torch.bool)
        masked_positions[:, 2:4] = True  # the tokens of one field value
        inputs["masked_input_ids"] = inputs["input_ids"].masked_fill(masked_positions, 4)
        inputs["mlm_labels"] = inputs["input_ids"].masked_fill(~masked_positions, -100)
        masked_fields = torch.zeros_like(inputs["field_ids"], dtype=torch.bool)
        masked_fields[torch.arange(self.batch_size), torch.arange(self.batch_size) % len(FIELD_VOCAB_SIZES)] = True
        inputs["masked_field_ids"] = inputs["field_ids"].masked_fill(masked_fields, 0)
        inputs["mtm_labels"] = inputs["field_ids"].masked_fill(~masked_fields, -100)
        return inputs

    def ctr_inputs(self, seed: int = 0) -> dict:
        generator = torch.Generator().manual_seed(seed)
        labels = torch.randint(0, 2, (self.batch_size,), generator=generator).float()
        return {**self.text_inputs(generator), "field_ids": self.field_ids(generator), "labels": labels}


@pytest.fixture
def tester(tiny_text_config) -> FlipModelTester:
    return FlipModelTester(tiny_text_config)


def _count_calls(module: torch.nn.Module) -> list:
    calls = []
    module.register_forward_hook(lambda *_: calls.append(1))
    return calls


# ------------------------------------------------------------------------------------------------ shapes and losses


def assert_keys_in_field_order(output) -> None:
    """The `transformers` convention: the keys set follow the output's fields (`output[0]` is the loss when there is
    one, and the Trainer's predictions come in that order)."""
    names = [field.name for field in dataclasses.fields(output) if getattr(output, field.name) is not None]
    assert list(output.keys()) == names
    assert output[0] is getattr(output, names[0]) and output.to_tuple()[0] is output[0]


@pytest.mark.parametrize("mtm_loss", MTM_LOSSES)
@pytest.mark.parametrize("backbone", BACKBONES)
def test_pretraining_shapes_and_finite_losses(tester, backbone, mtm_loss):
    torch.manual_seed(0)
    model = FlipForPretraining(tester.get_config(backbone=backbone, mtm_loss=mtm_loss))
    output = model(**tester.pretraining_inputs())
    batch, projection = tester.batch_size, model.config.projection_dim
    assert output.logits_per_tabular.shape == (batch, batch)
    assert output.tabular_embeds.shape == output.text_embeds.shape == (batch, projection)
    for name in ("loss", "icl_loss", "mlm_loss", "mtm_loss", "mlm_accuracy", "mtm_accuracy"):
        assert getattr(output, name).dim() == 0 and torch.isfinite(getattr(output, name)), name
    assert torch.allclose(output.loss, output.icl_loss + output.mlm_loss + output.mtm_loss)
    assert_keys_in_field_order(output)
    assert output[0] is output.loss


@pytest.mark.parametrize("ctr_mode", CTR_MODES)
@pytest.mark.parametrize("backbone", BACKBONES)
def test_ctr_shapes_and_losses(tester, backbone, ctr_mode):
    torch.manual_seed(0)
    model = FlipForCTR(tester.get_config(backbone=backbone, ctr_mode=ctr_mode))
    output = model(**tester.ctr_inputs())
    assert output.logits.shape == (tester.batch_size,)
    assert (output.id_logits is not None) == (ctr_mode != "text")
    assert (output.text_logits is not None) == (ctr_mode != "id")
    assert (output.alpha is not None) == (output.joint_loss is not None) == (ctr_mode == "joint")
    components = [loss for loss in (output.joint_loss, output.id_loss, output.text_loss) if loss is not None]
    assert torch.isfinite(output.loss) and torch.allclose(output.loss, sum(components))
    assert_keys_in_field_order(output)
    assert output[0] is output.loss and output[1] is output.logits
    if ctr_mode == "joint":  # alpha starts at 0: the joint logit is the text logit plus the (zero) bias
        assert torch.allclose(output.logits, output.text_logits)


def test_pretraining_loss_is_the_weighted_sum_of_its_losses(tester):
    model = FlipForPretraining(tester.get_config(icl_weight=0.5, mlm_weight=2.0, mtm_weight=3.0))
    output = model(**tester.pretraining_inputs())
    torch.testing.assert_close(output.loss, 0.5 * output.icl_loss + 2.0 * output.mlm_loss + 3.0 * output.mtm_loss)


def test_joint_ctr_loss_is_three_bces_plus_the_training_l2(tester):
    """logit = alpha z_id + (1 - alpha) z_text + b; loss = BCE(logit) + BCE(z_id) + BCE(z_text), by hand; in training
    also embedding_l2 * (|E|^2 + |E_linear|^2), never in evaluation."""
    torch.manual_seed(0)
    model = FlipForCTR(tester.get_config(ctr_mode="joint", joint_alpha_init=0.3, embedding_l2=0.01)).eval()
    tower = model.flip.tabular_model
    with torch.no_grad():
        model.joint_bias.fill_(0.2)
        for table in (tower.embeddings, tower.linear):  # from the 1e-4 init to sizes the L2 terms can tell apart
            table.weight.normal_(std=0.3)
    inputs = tester.ctr_inputs()
    labels = inputs["labels"]

    def bce(logits: torch.Tensor) -> torch.Tensor:
        probs = logits.sigmoid()
        return -(labels * probs.log() + (1 - labels) * (1 - probs).log()).mean()

    id_logits = tower(inputs["field_ids"])[1]
    text_logits = model.text_head(model.flip.encode_text(inputs["input_ids"], inputs["attention_mask"])[1])[:, 0]
    output = model(**inputs)
    torch.testing.assert_close(output.id_logits, id_logits)
    torch.testing.assert_close(output.text_logits, text_logits)
    torch.testing.assert_close(output.logits, 0.3 * id_logits + 0.7 * text_logits + 0.2)
    torch.testing.assert_close(output.loss, bce(output.logits) + bce(id_logits) + bce(text_logits))
    assert output.l2_loss is None
    trained = model.train()(**inputs)  # dropout on: the BCEs of this pass's own logits
    l2 = 0.01 * (tower.embeddings.weight.pow(2).sum() + tower.linear.weight.pow(2).sum())
    torch.testing.assert_close(trained.logits, 0.3 * trained.id_logits + 0.7 * trained.text_logits + 0.2)
    torch.testing.assert_close(trained.l2_loss, l2)
    expected = bce(trained.logits) + bce(trained.id_logits) + bce(trained.text_logits) + l2
    torch.testing.assert_close(trained.loss, expected)


def test_joint_alpha_init_from_a_pretraining_checkpoint(tester, tmp_path):
    FlipForPretraining(tester.get_config()).save_pretrained(tmp_path)
    model = FlipForCTR.from_pretrained(tmp_path, ctr_mode="joint", joint_alpha_init=0.5)  # alpha: a missing key
    output = model(**tester.ctr_inputs())
    assert output.alpha.item() == 0.5
    assert torch.allclose(output.logits, 0.5 * output.id_logits + 0.5 * output.text_logits)


def test_ctr_without_labels_has_no_loss(tester):
    inputs = tester.ctr_inputs()
    inputs.pop("labels")
    output = FlipForCTR(tester.get_config()).eval()(**inputs)
    assert output.loss is None and output.logits.shape == (tester.batch_size,)
    assert output[0] is output.logits


def test_flip_model_features(tester):
    model = FlipModel(tester.get_config()).eval()
    inputs = tester.ctr_inputs()
    output = model(
        input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"], field_ids=inputs["field_ids"]
    )
    batch, hidden = tester.batch_size, tester.text_config.hidden_size
    assert output.text_last_hidden_state.shape == (batch, tester.seq_length, hidden)
    assert output.tabular_hidden.shape == (batch, model.tabular_model.output_size)
    assert torch.equal(output.tabular_embeds, model.get_tabular_features(inputs["field_ids"]))
    assert torch.equal(output.text_embeds, model.get_text_features(inputs["input_ids"], inputs["attention_mask"]))
    assert_keys_in_field_order(output)


def test_mean_pooling_ignores_padding(tester):
    model = FlipModel(tester.get_config(text_pooling="mean")).eval()
    inputs = tester.text_inputs(torch.Generator().manual_seed(0))
    states, pooled = model.encode_text(**inputs)
    assert torch.allclose(pooled[0], states[0, : tester.seq_length - 3].mean(0), atol=1e-6)


@pytest.mark.parametrize("switches", [{}, {"use_icl": False}, {"use_mlm": False}, {"use_mtm": False}])
def test_every_trainable_parameter_gets_a_gradient(tester, switches):
    """Both towers learn, and nothing trainable is unused (DDP needs no `find_unused_parameters`)."""
    model = FlipForPretraining(tester.get_config(**switches))
    model(**tester.pretraining_inputs()).loss.backward()
    trainable = {name: p for name, p in model.named_parameters() if p.requires_grad}
    assert any(name.startswith("flip.text_model.") for name in trainable)
    assert any(name.startswith("flip.tabular_model.embeddings") for name in trainable)
    for name, parameter in trainable.items():
        assert parameter.grad is not None and parameter.grad.abs().sum() > 0, name
    frozen = {name for name, p in model.named_parameters() if not p.requires_grad}
    assert {"flip.tabular_model.linear.weight", "flip.tabular_model.backbone.logit.weight"} <= frozen


@pytest.mark.parametrize("ctr_mode", CTR_MODES)
def test_ctr_trainable_parameters_all_get_gradients(tester, ctr_mode):
    model = FlipForCTR(tester.get_config(ctr_mode=ctr_mode))
    model(**tester.ctr_inputs()).loss.backward()
    for name, parameter in model.named_parameters():
        if parameter.requires_grad:
            assert parameter.grad is not None and parameter.grad.abs().sum() > 0, name
    assert not any(p.requires_grad for p in model.flip.tabular_projection.parameters())


@pytest.mark.parametrize("loss", ["icl", "mlm", "mtm"])
def test_each_pretraining_loss_alone_trains_the_whole_tabular_tower(tester, loss):
    """Each loss's own gradient reaches every trainable tabular parameter (a detached row, a skipped tabular pass,
    a constant input would leave some at zero): ICL and MLM through the complete row, MTM through the masked one."""
    model = FlipForPretraining(tester.get_config())
    output = model(**tester.pretraining_inputs())
    params = {name: p for name, p in model.flip.tabular_model.named_parameters() if p.requires_grad}
    grads = torch.autograd.grad(getattr(output, f"{loss}_loss"), list(params.values()), allow_unused=True)
    for name, grad in zip(params, grads):
        assert grad is not None and grad.abs().sum() > 0, name


def _other_value(ids: torch.Tensor, where: torch.Tensor) -> torch.Tensor:
    """`ids` with every id at `where` replaced by another valid id (2 <-> 3; 2 is valid for tokens and fields)."""
    return torch.where(where, torch.where(ids == 2, 3, 2), ids)


def _forward_each(model: FlipForPretraining, *batches: dict) -> list:
    """The outputs of `model` on each batch, every pass drawing the same NCE noise ids."""
    outputs = []
    for batch in batches:
        torch.manual_seed(0)  # the same NCE noise ids
        outputs.append(model(**batch))
    return outputs


@pytest.mark.parametrize(
    ("loss", "complete", "labels"), [("mlm", "input_ids", "mlm_labels"), ("mtm", "field_ids", "mtm_labels")]
)
def test_masked_pass_never_sees_the_masked_values(tester, loss, complete, labels):
    """Changing the complete view at the masked positions (masked view and labels unchanged) changes the ICL loss
    but not the masked pass's loss: the MLM pass reads the masked text (plus the complete row), the MTM pass the
    masked row (plus the complete text)."""
    model = FlipForPretraining(tester.get_config()).eval()
    inputs = tester.pretraining_inputs()
    changed = {**inputs, complete: _other_value(inputs[complete], inputs[labels] != -100)}
    original, new = _forward_each(model, inputs, changed)
    assert torch.equal(getattr(new, f"{loss}_loss"), getattr(original, f"{loss}_loss"))
    assert not torch.equal(new.icl_loss, original.icl_loss)  # the change is real and read by the complete pass


@pytest.mark.parametrize("text_pooling", ["cls", "mean"])
def test_padding_tokens_change_nothing(tester, text_pooling):
    """Token ids under `attention_mask == 0` reach no loss: not through pooling, nor the MTM attention over the
    complete text, nor the masked text."""
    model = FlipForPretraining(tester.get_config(text_pooling=text_pooling)).eval()
    inputs = tester.pretraining_inputs()
    padding = inputs["attention_mask"] == 0
    assert padding.any()
    changed = {**inputs, **{key: _other_value(inputs[key], padding) for key in ("input_ids", "masked_input_ids")}}
    original, new = _forward_each(model, inputs, changed)
    for name in ("icl_loss", "mlm_loss", "mtm_loss"):
        torch.testing.assert_close(getattr(new, name), getattr(original, name), rtol=0, atol=1e-6, msg=name)


@pytest.mark.parametrize(
    ("switches", "text_passes", "tabular_passes"),
    [
        ({}, 2, 2),
        ({"use_icl": False}, 2, 2),
        ({"use_mlm": False}, 1, 2),
        ({"use_mtm": False}, 2, 1),
        ({"use_mlm": False, "use_mtm": False}, 1, 1),
    ],
)
def test_switches_remove_losses_and_passes(tester, switches, text_passes, tabular_passes):
    model = FlipForPretraining(tester.get_config(**switches))
    text_calls, tabular_calls = _count_calls(model.flip.text_model), _count_calls(model.flip.tabular_model)
    inputs = tester.pretraining_inputs()
    for name, masked_inputs in (
        ("use_mlm", ["masked_input_ids", "mlm_labels"]),
        ("use_mtm", ["masked_field_ids", "mtm_labels"]),
    ):
        if not switches.get(name, True):  # an ablated loss needs none of its inputs
            for key in masked_inputs:
                inputs.pop(key)
    output = model(**inputs)
    assert (len(text_calls), len(tabular_calls)) == (text_passes, tabular_passes)
    for loss in ("icl", "mlm", "mtm"):
        enabled = switches.get(f"use_{loss}", True)
        assert (getattr(output, f"{loss}_loss") is not None) == enabled
    assert (model.mlm_head is None) == (not switches.get("use_mlm", True))
    assert (model.mtm_head is None) == (not switches.get("use_mtm", True))


def test_return_loss_false_gives_embeddings_only(tester):
    model = FlipForPretraining(tester.get_config())
    text_calls = _count_calls(model.flip.text_model)
    output = model(**tester.pretraining_inputs(), return_loss=False)
    assert output.loss is None and output.icl_loss is None and output.mlm_loss is None and output.mtm_loss is None
    assert output.logits_per_tabular.shape == (tester.batch_size, tester.batch_size) and len(text_calls) == 1


def test_missing_masked_inputs_raise(tester):
    inputs = tester.pretraining_inputs()
    inputs.pop("mtm_labels")
    with pytest.raises(ValueError, match="mtm_labels"):
        FlipForPretraining(tester.get_config())(**inputs)


def test_learnable_temperature(tester):
    model = FlipForPretraining(tester.get_config(learn_temperature=True, temperature=0.5))
    assert math.isclose(model.log_temperature.exp().item(), 0.5, rel_tol=1e-6)
    model(**tester.pretraining_inputs()).loss.backward()
    assert model.log_temperature.grad.abs() > 0
    fixed = FlipForPretraining(tester.get_config())
    assert "log_temperature" not in dict(fixed.named_parameters())
    assert math.isclose(fixed.log_temperature.exp().item(), 0.7, rel_tol=1e-6)


@pytest.mark.parametrize("learn_temperature", [False, True])
def test_icl_uses_the_configured_temperature(tester, learn_temperature):
    """logits_per_tabular = (tabular_embeds . text_embeds) / tau, and the ICL loss is their symmetric InfoNCE."""
    model = FlipForPretraining(tester.get_config(temperature=0.3, learn_temperature=learn_temperature)).eval()
    output = model(**tester.pretraining_inputs())
    dots = output.tabular_embeds @ output.text_embeds.T  # (B, B)
    torch.testing.assert_close(output.logits_per_tabular * 0.3, dots)
    targets = torch.arange(tester.batch_size)
    expected = (F.cross_entropy(dots / 0.3, targets) + F.cross_entropy(dots.T / 0.3, targets)) / 2
    torch.testing.assert_close(output.icl_loss, expected)


def test_icl_training_pulls_matching_pairs_together(tiny_text_config):
    """After 40 steps on the ICL loss alone, each of 8 random rows has its own text as the most similar one (dot
    products of the projected views, whatever sign the temperature has); chance is 1/8."""
    tester = FlipModelTester(tiny_text_config, batch_size=8)
    model, batch = _memorise(tester, 40, tester.pretraining_inputs(), use_icl=True, use_mlm=False, use_mtm=False)
    with torch.no_grad():
        output = model(**batch)
    dots = output.tabular_embeds @ output.text_embeds.T  # (B, B)
    assert torch.equal(dots.argmax(dim=1), torch.arange(tester.batch_size))


def test_feature_frequencies_set_noise_distribution(tester):
    model = FlipForPretraining(tester.get_config())
    uniform = model.mtm_head.noise_probs.clone()
    assert uniform[0] == uniform[1] == 0 and torch.isclose(uniform.sum(), torch.tensor(1.0))
    counts = torch.arange(sum(FIELD_VOCAB_SIZES)).tolist()
    model.set_feature_frequencies(counts)
    probs = torch.tensor(counts, dtype=torch.float) / sum(counts)
    assert torch.allclose(model.mtm_head.noise_probs, probs)
    assert torch.allclose(model.mtm_head.feature_bias, probs.clamp_min(1e-10).log())  # NCE starts at -log K
    with pytest.raises(ValueError, match="non-negative"):
        model.set_feature_frequencies(counts[:-1])


# ------------------------------------------------------------------------------------------------ loss references


def test_contrastive_loss_matches_hand_computation():
    tabular = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    text = torch.tensor([[0.5, 0.5], [0.0, 2.0], [1.0, -1.0]])
    temperature = 0.5

    def row_loss(similarities: list[float], index: int) -> float:
        return -similarities[index] + math.log(sum(math.exp(s) for s in similarities))

    sims = [[sum(a * b for a, b in zip(t, x)) / temperature for x in text.tolist()] for t in tabular.tolist()]
    columns = [list(column) for column in zip(*sims)]
    expected = (sum(row_loss(sims[i], i) for i in range(3)) + sum(row_loss(columns[i], i) for i in range(3))) / 6
    loss, logits = contrastive_loss(tabular, text, torch.tensor(temperature))
    assert math.isclose(loss.item(), expected, rel_tol=1e-6)
    assert torch.allclose(logits, torch.tensor(sims))


def test_mtm_losses_match_hand_computation():
    scores = torch.tensor([[2.0, 0.5, -1.0]])  # target, then K = 2 noise ids
    noise_probs = [0.2, 0.5, 0.3]
    log_q = torch.tensor([noise_probs]).log()

    def log_sigmoid(x: float) -> float:
        return -math.log1p(math.exp(-x))

    nce_logits = [s - math.log(2 * q) for s, q in zip(scores[0].tolist(), noise_probs)]
    expected_nce = -log_sigmoid(nce_logits[0]) - log_sigmoid(-nce_logits[1]) - log_sigmoid(-nce_logits[2])
    assert math.isclose(binary_nce_loss(scores, log_q, num_noise=2).item(), expected_nce, rel_tol=1e-6)
    accidental = torch.tensor([[False, False, True]])  # the second noise id is the target itself: removed
    corrected = [s - math.log(q) for s, q in zip(scores[0].tolist(), noise_probs)][:2]
    expected_sampled = -corrected[0] + math.log(sum(math.exp(c) for c in corrected))
    assert math.isclose(sampled_softmax_loss(scores, log_q, accidental).item(), expected_sampled, rel_tol=1e-6)


def test_mlm_loss_matches_hand_computation(tester):
    """At each masked token: logits = tanh(W [masked-text state; complete-row state] + b) . word embeddings + bias,
    cross-entropy against the original token, mean over the masked tokens."""
    model = FlipForPretraining(tester.get_config()).eval()
    inputs = tester.pretraining_inputs()
    output = model(**inputs)
    states = model.flip.encode_text(inputs["masked_input_ids"], inputs["attention_mask"])[0]  # (B, L, D)
    row_states = model.flip.tabular_model(inputs["field_ids"])[0]  # (B, H)
    head, word_embeddings = model.mlm_head, model.flip.text_model.embeddings.word_embeddings.weight
    losses = []
    for row, position in (inputs["mlm_labels"] != -100).nonzero().tolist():
        fused = torch.tanh(head.dense.weight @ torch.cat([states[row, position], row_states[row]]) + head.dense.bias)
        logits = word_embeddings @ fused + head.bias  # (V_tok,)
        losses.append(torch.logsumexp(logits, 0) - logits[inputs["mlm_labels"][row, position]])
    torch.testing.assert_close(output.mlm_loss, torch.stack(losses).mean())


def _gather_worker(rank: int, world_size: int, init_file: str, tabular: torch.Tensor, text: torch.Tensor, results):
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world_size)
    rows = slice(rank * len(tabular) // world_size, (rank + 1) * len(tabular) // world_size)
    local_tabular = tabular[rows].clone().requires_grad_(True)
    local_text = text[rows].clone().requires_grad_(True)
    loss, logits = contrastive_loss(local_tabular, local_text, torch.tensor(0.7))
    loss.backward()
    results[rank] = (loss.detach(), logits.detach(), local_tabular.grad, local_text.grad)
    dist.destroy_process_group()


def test_all_gather_two_processes_match_one_process(tmp_path):
    generator = torch.Generator().manual_seed(0)
    tabular, text = torch.randn(8, 6, generator=generator), torch.randn(8, 6, generator=generator)
    results = mp.get_context("fork").Manager().dict()
    # fork: the workers need no fresh interpreter (re-importing transformers twice costs seconds on 2 cores)
    mp.start_processes(
        _gather_worker, args=(2, str(tmp_path / "init"), tabular, text, results), nprocs=2, start_method="fork"
    )

    full_tabular, full_text = tabular.clone().requires_grad_(True), text.clone().requires_grad_(True)
    full_loss, full_logits = contrastive_loss(full_tabular, full_text, torch.tensor(0.7))
    full_loss.backward()
    # DDP averages gradients over processes: the mean of the per-process losses and gradients is the 1-process one
    assert torch.allclose((results[0][0] + results[1][0]) / 2, full_loss.detach(), atol=1e-6)
    assert torch.allclose(torch.cat([results[0][1], results[1][1]]), full_logits.detach(), atol=1e-6)
    for index, full_grad in ((2, full_tabular.grad), (3, full_text.grad)):
        assert torch.allclose(torch.cat([results[0][index], results[1][index]]) / 2, full_grad, atol=1e-6)


# ------------------------------------------------------------------------------------------------ save / load


@pytest.mark.parametrize("model_class", [FlipModel, FlipForPretraining, FlipForCTR])
def test_save_load_same_outputs(tester, tmp_path, model_class):
    torch.manual_seed(0)
    model = model_class(tester.get_config(backbone="autoint", learn_temperature=True)).eval()
    model.save_pretrained(tmp_path)
    loaded = model_class.from_pretrained(tmp_path).eval()
    inputs = tester.pretraining_inputs() if model_class is FlipForPretraining else tester.ctr_inputs()
    if model_class is FlipModel:
        inputs = {key: inputs[key] for key in ("input_ids", "attention_mask", "field_ids")}
    outputs = []
    for candidate in (model, loaded):
        torch.manual_seed(1)  # NCE noise samples
        outputs.append(candidate(**inputs))
    assert outputs[0].keys() == outputs[1].keys()
    for key in outputs[0]:
        assert torch.equal(outputs[0][key], outputs[1][key]), key
    for name in ("modeling_flip.py", "configuration_flip.py", "tabular_backbones.py"):
        assert (tmp_path / name).is_file()
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    assert trainable == {name for name, p in loaded.named_parameters() if p.requires_grad}


def test_invalid_override_at_load_raises(tester, tmp_path):
    FlipForCTR(tester.get_config()).save_pretrained(tmp_path)
    with pytest.raises(ValueError, match="'ids'"):
        FlipForCTR.from_pretrained(tmp_path, ctr_mode="ids")


@pytest.mark.parametrize("model_class", [FlipForCTR, FlipModel])
def test_id_mode_from_pretraining_dir_has_no_text_tower(tester, tmp_path, caplog, model_class):
    pretrained = FlipForPretraining(tester.get_config())
    pretrained.save_pretrained(tmp_path)
    with caplog.at_level(logging.INFO):
        model = model_class.from_pretrained(tmp_path, ctr_mode="id")
    assert "LOAD REPORT" not in caplog.text  # neither unexpected text weights nor missing CTR weights
    towers = model if model_class is FlipModel else model.flip
    assert towers.text_model is None and towers.text_projection is None
    assert not [name for name, _ in model.named_parameters() if "text" in name]
    for name, tensor in towers.tabular_model.state_dict().items():
        assert torch.equal(tensor, pretrained.flip.tabular_model.state_dict()[name]), name
    output = model(field_ids=tester.ctr_inputs()["field_ids"])
    assert (output.tabular_embeds if model_class is FlipModel else output.logits).shape[0] == tester.batch_size


@pytest.mark.parametrize("model_class", [FlipModel, FlipForPretraining, FlipForCTR])
def test_from_text_pretrained_keeps_encoder_weights(tester, tiny_encoder_dir, model_class):
    model = model_class.from_text_pretrained(tiny_encoder_dir, **tester.config_kwargs())
    text_model = model if model_class is FlipModel else model.flip
    source = BertModel.from_pretrained(tiny_encoder_dir, add_pooling_layer=False)
    for name, tensor in source.state_dict().items():
        assert torch.equal(text_model.text_model.state_dict()[name], tensor), name
    assert model.config.text_config.hidden_size == source.config.hidden_size
    assert text_model.text_model.config is model.config.text_config
    assert model.config.text_config._attn_implementation == source.config._attn_implementation


def test_gradient_checkpointing_backward(tester):
    model = FlipForPretraining(tester.get_config())
    model.gradient_checkpointing_enable()
    layers = model.flip.text_model.encoder.layer
    assert model.is_gradient_checkpointing and all(layer.gradient_checkpointing for layer in layers)
    checkpointed = []
    layers[0]._gradient_checkpointing_func = _recording(layers[0]._gradient_checkpointing_func, checkpointed)
    model.train()
    model(**tester.pretraining_inputs()).loss.backward()
    assert len(checkpointed) == 2  # complete and masked text passes
    assert model.flip.text_model.embeddings.word_embeddings.weight.grad.abs().sum() > 0


def _recording(function, calls: list):
    def wrapper(*args, **kwargs):
        calls.append(1)
        return function(*args, **kwargs)

    return wrapper


# ------------------------------------------------------------------------------------------------ memorisation


def _memorisation_batch(rows: int = 64) -> dict:
    """Field 1 is a function of fields 0 and 2; the text spells every field value as one token."""
    generator = torch.Generator().manual_seed(0)
    field_ids = torch.stack(
        [
            torch.randint(2, FIELD_VOCAB_SIZES[0], (rows,), generator=generator),
            torch.zeros(rows, dtype=torch.long),
            torch.randint(2, FIELD_VOCAB_SIZES[2], (rows,), generator=generator),
            torch.randint(2, FIELD_VOCAB_SIZES[3], (rows,), generator=generator),
        ],
        dim=1,
    )
    field_ids[:, 1] = 2 + (field_ids[:, 0] + field_ids[:, 2]) % (FIELD_VOCAB_SIZES[1] - 2)
    token_base = torch.tensor([20, 30, 40, 60])  # disjoint token ranges per field
    input_ids = torch.cat([torch.full((rows, 1), 2), field_ids + token_base, torch.full((rows, 1), 3)], dim=1)
    masked_input_ids, mlm_labels = input_ids.clone(), torch.full_like(input_ids, -100)
    masked_input_ids[:, 2], mlm_labels[:, 2] = 4, input_ids[:, 2]  # the token of field 1
    masked_field_ids, mtm_labels = field_ids.clone(), torch.full_like(field_ids, -100)
    masked_field_ids[:, 1], mtm_labels[:, 1] = 0, field_ids[:, 1]
    return {
        "input_ids": input_ids,
        "attention_mask": torch.ones_like(input_ids),
        "field_ids": field_ids,
        "masked_input_ids": masked_input_ids,
        "mlm_labels": mlm_labels,
        "masked_field_ids": masked_field_ids,
        "mtm_labels": mtm_labels,
    }


def _memorise(
    tester: FlipModelTester, steps: int = 300, batch: dict | None = None, **switches
) -> tuple[FlipForPretraining, dict]:
    """Train a dropout-free model with Adam on `batch` (default: the memorisation batch); returns it in eval mode
    and the batch."""
    torch.manual_seed(0)
    no_dropout = {"hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0}
    switches = {"use_icl": False, **switches}
    config = tester.get_config(no_dropout, projection_dropout=0.0, mlm_head_dropout=0.0, **switches)
    model, batch = FlipForPretraining(config), _memorisation_batch() if batch is None else batch
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(steps):
        optimizer.zero_grad()
        model(**batch).loss.backward()
        optimizer.step()
    return model.eval(), batch


@pytest.mark.parametrize("mtm_loss", MTM_LOSSES)
def test_mtm_memorises_masked_field(tester, mtm_loss):
    model, batch = _memorise(tester, use_mlm=False, mtm_loss=mtm_loss)
    model.config.mtm_loss = "softmax"  # evaluate with the exact top-1 over the field's 6 values (chance 1/6)
    with torch.no_grad():
        assert model(**batch).mtm_accuracy > 0.6


def test_mlm_recovers_masked_field_tokens(tester):
    model, batch = _memorise(tester, use_mtm=False)
    with torch.no_grad():
        assert model(**batch).mlm_accuracy > 0.6  # over the whole text vocabulary (chance ~1/150)


# ------------------------------------------------------------------------------------------------ LoRA


def test_lora_on_text_tower_only(tester):
    from peft import LoraConfig, get_peft_model

    model = FlipForPretraining(tester.get_config())
    base_text = {name: tensor.clone() for name, tensor in model.flip.text_model.state_dict().items()}
    trained_modules = ["tabular_model", "tabular_projection", "text_projection", "mlm_head", "mtm_head"]
    lora_config = LoraConfig(
        r=4,
        lora_alpha=8,
        target_modules=r".*text_model\.encoder\.layer\.\d+\.attention\.self\.(query|value)",
        modules_to_save=trained_modules,
    )
    peft_model = get_peft_model(model, lora_config)
    trainable = [name for name, parameter in peft_model.named_parameters() if parameter.requires_grad]
    assert any("lora_" in name for name in trainable)
    assert all("lora_" in name or "modules_to_save" in name for name in trainable), trainable
    assert {module for module in trained_modules if any(f"{module}.modules_to_save" in n for n in trainable)} == set(
        trained_modules
    )
    optimizer = torch.optim.Adam([p for p in peft_model.parameters() if p.requires_grad], lr=1e-2)
    for _ in range(3):
        optimizer.zero_grad()
        peft_model(**tester.pretraining_inputs()).loss.backward()
        optimizer.step()
    text_model = peft_model.get_base_model().flip.text_model
    for name, tensor in text_model.state_dict().items():
        base_name = name.replace(".base_layer", "")
        if "lora_" not in name:
            assert torch.equal(tensor, base_text[base_name]), name
