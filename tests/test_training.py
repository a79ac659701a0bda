"""End to end on a tiny synthetic table and a tiny random BERT (offline, CPU): pretrain -> finetune (id / text /
joint, baselines) -> evaluate -> predict -> reload with AutoModel(trust_remote_code=True); LoRA; resume; configs."""

import dataclasses
import json
import os
import signal
import stat
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModel, AutoModelForSequenceClassification, BertModel

from modeling_flip import FlipConfig, FlipForCTR, FlipForPretraining
from processing import FlipProcessor
from processing.atomic_io import current_umask
from training import evaluate, finetune, predict, pretrain
from training.arguments import ModelArguments, load_config_file, make_parser, parse_args
from training.ctr_metrics import auc
from training.export import load_id_tower
from training.model_builder import build_model

CONFIGS = Path(__file__).resolve().parents[1] / "training" / "configs"


def run_finetune(output_dir, common_args, *extra: str) -> dict:
    return finetune.main([str(CONFIGS / "finetune_tiny.yaml"), *common_args, "--output_dir", str(output_dir), *extra])


@pytest.fixture(scope="module")
def pretrained(common_args, tmp_path_factory) -> tuple[str, dict]:
    output_dir = str(tmp_path_factory.mktemp("pretrain"))
    results = pretrain.main([str(CONFIGS / "pretrain_tiny.yaml"), *common_args, "--output_dir", output_dir])
    return output_dir, results


@pytest.fixture(scope="module")
def finetuned(pretrained, common_args, tmp_path_factory) -> dict[str, tuple[str, dict]]:
    runs = {}
    for mode in ("id", "text", "joint"):
        output_dir = tmp_path_factory.mktemp(f"finetune-{mode}")
        runs[mode] = (
            str(output_dir),
            run_finetune(output_dir, common_args, "--init_from", pretrained[0], "--ctr_mode", mode),
        )
    return runs


def test_pretraining_logs_components_and_moves_both_towers(pretrained, tiny_encoder_dir):
    output_dir, results = pretrained
    assert results["validation"]["eval_loss"] > 0
    history = json.loads(Path(output_dir, "trainer_state.json").read_text())["log_history"]  # the final folder's
    train_logs = [entry for entry in history if "loss" in entry]
    assert {"icl_loss", "mlm_loss", "mtm_loss", "mtm_accuracy"} <= set(train_logs[-1])
    assert {"eval_icl_loss", "eval_mlm_loss", "eval_mtm_loss"} <= set(results["validation"])
    model = AutoModel.from_pretrained(output_dir, trust_remote_code=True)
    initial = BertModel.from_pretrained(tiny_encoder_dir)
    query = "encoder.layer.0.attention.self.query.weight"
    assert not torch.equal(model.text_model.state_dict()[query], initial.state_dict()[query])
    assert not [name for name in os.listdir(output_dir) if name.startswith("tmp-")]


@pytest.mark.parametrize("mode", ["id", "text", "joint"])
def test_finetune_modes_report_validation_and_test(finetuned, pretrained, mode):
    output_dir, results = finetuned[mode]
    assert results["ctr_mode"] == mode and results["init_from"] == pretrained[0]
    # the table's clicks follow the movie parity (15% flipped): every mode learns it (id 0.87, text / joint 0.93)
    assert results["validation"]["eval_auc"] > 0.7 and results["test"]["test_auc"] > 0.7
    assert json.loads(Path(output_dir, "results.json").read_text())["test"] == pytest.approx(results["test"])
    model = AutoModelForSequenceClassification.from_pretrained(output_dir, trust_remote_code=True)
    assert model.config.ctr_mode == mode
    assert (model.flip.text_model is None) == (mode == "id")
    assert type(AutoModel.from_pretrained(output_dir, trust_remote_code=True)).__name__ == "FlipModel"
    tower_aucs = {"validation": {"eval_id_auc", "eval_text_auc"}, "test": {"test_id_auc", "test_text_auc"}}
    for split, keys in tower_aucs.items():  # a joint model's towers are scored alone too
        assert (keys <= set(results[split])) == (mode == "joint") and not keys & set(results[split]) - keys


def test_a_joint_models_id_auc_is_its_id_tower_scored_alone(finetuned, table):
    """`test_id_auc` of the joint run equals the AUC of its ID tower exported alone (`flip export-id`'s model), so
    neither the towers' order nor the mixed logits stand in for it."""
    output_dir, results = finetuned["joint"]
    tower, processor = load_id_tower(output_dir), FlipProcessor.from_pretrained(output_dir)
    encoded = evaluate.load_split(table, "test", processor, tower.config, None)
    probs = predict.predict_probs(tower, processor, encoded, batch_size=64, progress=False)
    assert auc(encoded["labels"], probs) == pytest.approx(results["test"]["test_id_auc"], abs=1e-6)
    assert results["test"]["test_text_auc"] != pytest.approx(results["test"]["test_id_auc"], abs=1e-4)


def test_output_files_and_folders_follow_the_umask(finetuned):
    """Weights (safetensors writes 0o600), results.json, checkpoints: readable by whoever the umask lets read."""
    mask = current_umask()
    for root, _, files in os.walk(finetuned["id"][0]):
        assert stat.S_IMODE(os.stat(root).st_mode) == 0o777 & ~mask, root
        for name in files:
            assert stat.S_IMODE(os.stat(os.path.join(root, name)).st_mode) == 0o666 & ~mask, (root, name)


def test_finetuning_moves_the_pretrained_tabular_tower(finetuned, pretrained):
    pretrained_weights = load_file(os.path.join(pretrained[0], "model.safetensors"))
    finetuned_weights = load_file(os.path.join(finetuned["id"][0], "model.safetensors"))
    name = "flip.tabular_model.embeddings.weight"
    assert not torch.equal(pretrained_weights[name], finetuned_weights[name])


def test_joint_from_two_finetuned_towers(finetuned, tmp_path):
    (text_dir, _), (id_dir, _) = finetuned["text"], finetuned["id"]
    schema = FlipProcessor.from_pretrained(id_dir).schema
    args = ModelArguments(init_from=text_dir, init_tabular_from=id_dir, ctr_mode="joint")
    model = build_model(FlipForCTR, args, schema, text_model_path="unused: weights come from the checkpoints")
    for source, prefixes in ((id_dir, ("flip.tabular_model.",)), (text_dir, ("flip.text_model.", "text_head."))):
        weights = {
            k: v for k, v in load_file(os.path.join(source, "model.safetensors")).items() if k.startswith(prefixes)
        }
        assert weights and all(torch.equal(model.state_dict()[k], v) for k, v in weights.items()), source
    deepfm = FlipForCTR(FlipConfig(**{**FlipConfig.from_pretrained(id_dir).to_dict(), "backbone": "deepfm"}))
    deepfm.save_pretrained(tmp_path)
    with pytest.raises(ValueError, match="backbone 'deepfm'"):
        build_model(FlipForCTR, dataclasses.replace(args, init_tabular_from=str(tmp_path)), schema, "unused")


def test_evaluate_and_predict_match_the_training_run(finetuned, table, tmp_path):
    output_dir, results = finetuned["joint"]
    record = evaluate.main([output_dir, "--dataset", table, "--split", "test"])
    assert record["test_auc"] == pytest.approx(results["test"]["test_auc"], abs=1e-6)
    assert record["test_logloss"] == pytest.approx(results["test"]["test_logloss"], abs=1e-5)
    assert json.loads(Path(output_dir, "eval_test.json").read_text())["rows"] == record["rows"]
    rows = pd.read_csv(Path(table).parent / "rows.csv").tail(7)
    rows.drop(columns=["label"]).to_csv(tmp_path / "new.csv", index=False)
    scored_path = predict.main([output_dir, str(tmp_path / "new.csv"), "--output_file", str(tmp_path / "out.parquet")])
    scored = pd.read_parquet(scored_path)
    assert len(scored) == 7 and scored["ctr"].between(0, 1).all()
    assert list(scored.columns[:-1]) == [c for c in rows.columns if c != "label"]


def test_id_baseline_from_scratch_needs_no_text_weights(common_args, tmp_path):
    results = run_finetune(
        tmp_path, common_args, "--ctr_mode", "id", "--backbone", "deepfm", "--num_train_epochs", "1"
    )
    assert results["init_from"] is None and results["test"]["test_auc"] > 0.7  # 0.86 after one epoch
    config = json.loads(Path(tmp_path, "config.json").read_text())
    assert config["backbone"] == "deepfm" and config["ctr_mode"] == "id"


def test_text_finetuning_refuses_a_checkpoint_of_another_prompt(pretrained, common_args, tmp_path):
    """The text tower of a checkpoint pretrained on the full prompt must not be finetuned on prompts without the
    user id (a clear error before training); FLIP_ID reads no text, so it may."""
    hidden, source = ("--prompt_hidden_fields", "user_id"), ("--init_from", pretrained[0])
    with pytest.raises(ValueError, match="pass the checkpoint's --prompt_hidden_fields"):
        run_finetune(tmp_path / "text", common_args, *source, "--ctr_mode", "text", *hidden)
    results = run_finetune(tmp_path / "id", common_args, *source, "--ctr_mode", "id", *hidden, "--max_steps", "1")
    assert results["ctr_mode"] == "id" and not (tmp_path / "text").exists()


def test_lora_keeps_base_text_weights_and_merges(pretrained, common_args, table, tmp_path):
    from peft import PeftModel

    from modeling_flip import FlipForCTR

    extra = ["--init_from", pretrained[0], "--ctr_mode", "text", "--use_lora", "true", "--lora_r", "2"]
    results = run_finetune(tmp_path, common_args, *extra, "--num_train_epochs", "1")
    base = FlipForCTR.from_pretrained(pretrained[0], ctr_mode="text")
    base_text = {name: value.clone() for name, value in base.flip.text_model.state_dict().items()}
    adapted = PeftModel.from_pretrained(base, str(tmp_path / "adapter")).eval()
    text_tower = adapted.base_model.model.flip.text_model
    query = text_tower.encoder.layer[0].attention.self.query
    assert torch.equal(query.base_layer.weight, base_text["encoder.layer.0.attention.self.query.weight"])
    assert torch.equal(
        text_tower.encoder.layer[0].attention.self.key.weight, base_text["encoder.layer.0.attention.self.key.weight"]
    )
    merged = AutoModelForSequenceClassification.from_pretrained(tmp_path, trust_remote_code=True).eval()
    merged_query = merged.flip.text_model.encoder.layer[0].attention.self.query.weight
    assert not torch.equal(merged_query, base_text["encoder.layer.0.attention.self.query.weight"])
    batch = {"field_ids": torch.tensor([[2, 2, 3, 2]]), "input_ids": torch.tensor([[2, 6, 7, 5, 50, 3]])}
    with torch.no_grad():
        torch.testing.assert_close(adapted(**batch).logits, merged(**batch).logits, atol=1e-5, rtol=1e-4)
    # the saved merged model is the one the run scored (one epoch of rank-2 LoRA does not learn the table reliably)
    record = evaluate.main([str(tmp_path), "--dataset", table, "--split", "test"])
    assert record["test_auc"] == pytest.approx(results["test"]["test_auc"], abs=1e-6)


@pytest.mark.parametrize("embedding_lr", [None, 1e-4])
def test_text_and_embedding_learning_rates_are_their_param_groups(tiny_text_config, tmp_path, embedding_lr):
    """`text_learning_rate`: every trainable text-tower parameter, and only those, trains at that rate;
    `embedding_learning_rate`: the two ID tables (embeddings, first-order weights), and only those; the others at
    `learning_rate`; each group keeps its weight decay (none on biases and LayerNorms)."""
    from tests.test_modeling_flip import FlipModelTester
    from training.arguments import FlipTrainingArguments
    from training.trainer import FlipTrainer

    model = FlipForCTR(FlipModelTester(tiny_text_config).get_config(ctr_mode="joint"))
    no_evaluation = {"eval_strategy": "no", "load_best_model_at_end": False}
    args = FlipTrainingArguments(
        str(tmp_path),
        learning_rate=1e-3,
        text_learning_rate=1e-5,
        embedding_learning_rate=embedding_lr,
        weight_decay=0.1,
        **no_evaluation,
    )
    trainer = FlipTrainer(model=model, args=args)
    decay, names = set(trainer.get_decay_parameter_names(model)), {id(p): n for n, p in model.named_parameters()}
    tables = {"flip.tabular_model.embeddings.weight", "flip.tabular_model.linear.weight"}
    grouped = []
    for group in trainer.create_optimizer().param_groups:
        for name in (names[id(param)] for param in group["params"]):
            grouped.append(name)
            expected = 1e-5 if name.startswith("flip.text_model.") else embedding_lr if name in tables else None
            assert group["lr"] == (expected or 1e-3), name
            assert group["weight_decay"] == (0.1 if name in decay else 0.0), name
    assert sorted(grouped) == sorted(name for name, param in model.named_parameters() if param.requires_grad)
    assert any(name.startswith("flip.text_model.") for name in grouped) and "alpha" in grouped
    assert tables <= set(grouped)


@pytest.mark.parametrize("native", [False, True])
def test_cpu_bf16_warns_only_where_it_is_emulated(native, monkeypatch, tmp_path):
    from training import arguments

    monkeypatch.setattr(arguments, "cpu_has_native_bf16", lambda: native)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        arguments.FlipTrainingArguments(output_dir=str(tmp_path), use_cpu=True, bf16=True)
    emulated = [w for w in caught if "without native bf16" in str(w.message)]
    assert len(emulated) == (0 if native else 1)


def test_resume_matches_an_uninterrupted_run(common_args, tmp_path):
    """6 steps at once == 3 steps, stop, resume from checkpoint-3 to step 6 (constant lr, fixed seed)."""
    budget = ["--ctr_mode", "id", "--lr_scheduler_type", "constant", "--eval_strategy", "no", "--save_strategy"]
    budget += ["steps", "--save_steps", "3", "--load_best_model_at_end", "false", "--early_stopping_patience", "0"]
    straight = run_finetune(tmp_path / "straight", common_args, *budget, "--max_steps", "6")
    run_finetune(tmp_path / "resumed", common_args, *budget, "--max_steps", "3")
    # a save interrupted at step 9 leaves only its temporary folder, which resuming must ignore
    (tmp_path / "resumed" / "tmp-checkpoint-9" / "checkpoint-9").mkdir(parents=True)
    resumed = run_finetune(
        tmp_path / "resumed", common_args, *budget, "--max_steps", "6", "--resume_from_checkpoint", "true"
    )
    assert resumed["test"]["test_auc"] == pytest.approx(straight["test"]["test_auc"])
    assert resumed["test"]["test_logloss"] == pytest.approx(straight["test"]["test_logloss"], rel=1e-6)
    straight_weights = load_file(str(tmp_path / "straight" / "model.safetensors"))
    resumed_weights = load_file(str(tmp_path / "resumed" / "model.safetensors"))
    for name, value in straight_weights.items():
        torch.testing.assert_close(resumed_weights[name], value, atol=1e-6, rtol=1e-5)
    assert sorted(p.name for p in (tmp_path / "resumed").glob("checkpoint-*")) == ["checkpoint-3", "checkpoint-6"]


@pytest.mark.parametrize("config_file", sorted(CONFIGS.glob("*.yaml")), ids=lambda path: path.name)
def test_config_files_parse(config_file):
    script = pretrain if config_file.name.startswith("pretrain") else finetune
    model_args, data_args, lora_args, training_args = parse_args(
        make_parser(script.ARGUMENT_CLASSES, "test", None),
        [str(config_file), "--output_dir", "unused", "--use_cpu", "true"],
    )
    assert training_args.output_dir == "unused"  # the command line overrides the file
    assert set(load_config_file(str(config_file))) <= {
        name for instance in (model_args, data_args, lora_args, training_args) for name in vars(instance)
    }


def test_time_budget_stops_evaluates_and_saves(common_args, tmp_path):
    results = run_finetune(tmp_path, common_args, "--ctr_mode", "id", "--max_train_minutes", "1e-6")
    assert sorted(p.name for p in tmp_path.glob("checkpoint-*")) == ["checkpoint-1"]
    assert "eval_auc" in results["validation"]


def test_demo_table_has_rela_impr_against_dcnv2():
    from training.demo import results_table

    records = [  # the base is found by name, not by position
        {"stage": "prepare", "wall_time_s": 3.0},
        {
            "stage": "FLIP",
            "test": {"test_auc": 0.75, "test_logloss": 0.60},
            "train_rows_seen": 4096,
            "wall_time_s": 20.0,
        },
        {
            "stage": "DCNv2",
            "test": {"test_auc": 0.70, "test_logloss": 0.61},
            "train_rows_seen": 8,
            "wall_time_s": 10.0,
        },
    ]
    rows, markdown = results_table(records)
    assert [row["rela_impr_vs_dcnv2_pct"] for row in rows] == [25.0, 0.0]
    assert "| FLIP | 4,096 | 0.7500 | 0.6000 | +25.00% | 20 |" in markdown


def test_demo_table_says_when_a_row_is_budget_bound():
    """Issue 15 item 20: the joint model's row on the CPU budget says, in the table, how few rows it saw."""
    from training.demo import results_table

    records = [
        {
            "stage": "DCNv2",
            "test": {"test_auc": 0.73, "test_logloss": 0.6},
            "train_rows_seen": 480_000,
            "wall_time_s": 60,
        },
        {
            "stage": "FLIP",
            "test": {"test_auc": 0.62, "test_logloss": 0.66},
            "train_rows_seen": 3_840,
            "wall_time_s": 150,
        },
    ]
    markdown = results_table(records)[1]
    assert (
        "| FLIP | 3,840 | 0.6200 | 0.6600 | -47.83% (budget-bound: 0.8% of DCNv2's training rows) | 150 |" in markdown
    )
    assert "| DCNv2 | 480,000 | 0.7300 | 0.6000 | +0.00% | 60 |" in markdown


def test_push_to_hub_publishes_the_final_folder_not_the_trainer(common_args, tmp_path, monkeypatch):
    from huggingface_hub import ModelCard

    from tests.test_hub import FakeApi
    from training import hub

    api = FakeApi()
    monkeypatch.setattr(hub, "HfApi", lambda token=None: api)
    extra = ["--ctr_mode", "id", "--num_train_epochs", "1", "--push_to_hub", "true", "--hub_model_id", "me/flip-id"]
    results = run_finetune(tmp_path, common_args, *extra)
    (create, repo), (upload, pushed) = api.calls
    assert (create, repo["repo_id"], upload, pushed["repo_id"]) == (
        "create_repo",
        "me/flip-id",
        "upload_folder",
        "me/flip-id",
    )
    assert {"README.md", "config.json", "model.safetensors", "results.json", "modeling_flip.py"} <= pushed["files"]
    assert not [name for name in pushed["files"] if name.startswith("checkpoint-")]  # the run folder holds two
    card = ModelCard.load(tmp_path / "README.md")
    auc = next(result for result in card.data.eval_results if result.metric_type == "roc_auc")
    assert auc.metric_value == pytest.approx(round(results["test"]["test_auc"], 4))


def test_tabular_diagnostics_are_each_weighted_loss_gradient_into_the_tower(tiny_text_config):
    """`tabular_grad_norm_<loss>` is |d(weight * loss) / d(tabular tower)| recomputed by a separate backward pass;
    nothing is accumulated into `.grad` and the step's own backward still works; `id_embedding_norm` is the mean
    row norm of the ID-embedding table."""
    from tests.test_modeling_flip import FlipModelTester
    from training.trainer import tabular_diagnostics

    tester = FlipModelTester(tiny_text_config)
    model = FlipForPretraining(tester.get_config(icl_weight=2.0, mtm_weight=0.5, projection_dropout=0.0))
    model.set_feature_frequencies([1] * model.config.num_features)
    model.eval()  # no dropout: the separate passes below see the same graph values
    inputs = tester.pretraining_inputs()
    torch.manual_seed(0)  # the NCE noise ids: the same draws in every pass below
    found = tabular_diagnostics(model, model(**inputs))
    tower = [param for param in model.flip.tabular_model.parameters() if param.requires_grad]
    assert all(param.grad is None for param in model.parameters())
    for name, weight in (("icl", 2.0), ("mlm", 1.0), ("mtm", 0.5)):
        torch.manual_seed(0)
        model.zero_grad()
        (weight * getattr(model(**inputs), f"{name}_loss")).backward()
        expected = torch.stack([param.grad.pow(2).sum() for param in tower if param.grad is not None]).sum().sqrt()
        assert expected > 0 and found[f"tabular_grad_norm_{name}"] == pytest.approx(expected.item(), rel=1e-4)
    rows = model.flip.tabular_model.embeddings.weight.norm(dim=1)
    assert found["id_embedding_norm"] == pytest.approx(rows.mean().item())


def test_stop_after_epochs_then_resume_equals_a_straight_run(common_args, tmp_path):
    """A run cut after epoch 1 of 2 keeps the 2-epoch (linear) schedule, says it did not complete it, and resumed
    from its epoch-1 checkpoint ends with the weights of the uninterrupted run."""
    flags = ["--ctr_mode", "id", "--lr_scheduler_type", "linear", "--num_train_epochs", "2"]
    flags += ["--load_best_model_at_end", "false", "--early_stopping_patience", "0"]
    straight = run_finetune(tmp_path / "straight", common_args, *flags)
    cut = run_finetune(tmp_path / "cut", common_args, *flags, "--stop_after_epochs", "1")
    assert straight["schedule_completed"] and not cut["schedule_completed"]
    assert cut["epoch"] == 1 and cut["train_steps"] * 2 == straight["train_steps"]
    resumed = run_finetune(tmp_path / "cut", common_args, *flags, "--resume_from_checkpoint", "true")
    assert resumed["schedule_completed"] and resumed["train_steps"] == straight["train_steps"]
    a, b = load_file(str(tmp_path / "straight/model.safetensors")), load_file(str(tmp_path / "cut/model.safetensors"))
    assert all(torch.equal(a[name], b[name]) for name in a)


# no checkpoint but the signal's:
SAVE_ONLY_ON_SIGNAL = (
    "--load_best_model_at_end false --early_stopping_patience 0 --save_strategy steps --save_steps 1000"
)


@pytest.mark.parametrize(
    "save_flags", [SAVE_ONLY_ON_SIGNAL.split(), []], ids=["save-steps", "save-epoch-early-stopping"]
)
def test_a_signal_saves_a_checkpoint_and_exits_and_the_run_resumes(common_args, tmp_path, monkeypatch, save_flags):
    """SIGTERM in step 2 of a 2-epoch run: the run saves checkpoint-2 there, without evaluating, and exits with
    128 + SIGTERM without writing results.json (nothing reads it as finished) and with the previous handler back;
    resumed, it evaluates at the same steps as the uninterrupted run and ends with its weights. With per-epoch
    checkpoints and early stopping, an evaluation at the cut would enter the checkpoint (a step towards patience)."""
    from transformers import TrainerCallback

    from training import callbacks

    class SendSigterm(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step == 2:
                os.kill(os.getpid(), signal.SIGTERM)

    flags = ["--ctr_mode", "id", "--lr_scheduler_type", "linear", "--num_train_epochs", "2", *save_flags]
    straight = run_finetune(tmp_path / "straight", common_args, *flags)
    assert straight["train_steps"] > 4  # step 2 is inside the first epoch
    before = signal.getsignal(signal.SIGTERM)
    with monkeypatch.context() as patch:
        patch.setattr(
            finetune, "training_callbacks", lambda args: [SendSigterm(), *callbacks.training_callbacks(args)]
        )
        with pytest.raises(SystemExit) as stopped:
            run_finetune(tmp_path / "cut", common_args, *flags)
    assert stopped.value.code == 128 + signal.SIGTERM and signal.getsignal(signal.SIGTERM) is before
    assert [path.name for path in (tmp_path / "cut").glob("checkpoint-*")] == ["checkpoint-2"]
    assert not (tmp_path / "cut" / "results.json").exists()
    resumed = run_finetune(tmp_path / "cut", common_args, *flags, "--resume_from_checkpoint", "true")
    assert resumed["train_steps"] == straight["train_steps"]
    assert evaluations(tmp_path / "cut") == evaluations(tmp_path / "straight")
    a, b = load_file(str(tmp_path / "straight/model.safetensors")), load_file(str(tmp_path / "cut/model.safetensors"))
    assert all(torch.equal(a[name], b[name]) for name in a)


def evaluations(output_dir) -> list[tuple[int, float]]:
    """(step, validation AUC) of every evaluation in the run's `trainer_state.json`."""
    state = json.loads((output_dir / "trainer_state.json").read_text())
    return [(entry["step"], entry["eval_auc"]) for entry in state["log_history"] if "eval_auc" in entry]


def test_a_run_in_another_thread_trains_without_signal_handlers(common_args, tmp_path):
    """Only the main thread may set signal handlers: a run started in a thread (a notebook's worker, a server) trains
    as usual instead of failing in `signal.signal`."""
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(1) as pool:
        results = pool.submit(
            run_finetune, tmp_path, common_args, "--ctr_mode", "id", "--num_train_epochs", "1"
        ).result()
    assert results["schedule_completed"]


def test_resumed_run_keeps_the_early_stopping_count(common_args, tmp_path):
    """At learning rate 0 the validation AUC never improves, so patience 2 ends a run a fixed number of epochs in. A
    run cut after epoch 2 and resumed restores its patience count from the checkpoint and ends at the same epoch (a
    reset count would train 2 epochs more)."""
    flags = ["--ctr_mode", "id", "--learning_rate", "0", "--num_train_epochs", "8", "--early_stopping_patience", "2"]
    straight = run_finetune(tmp_path / "straight", common_args, *flags)
    assert 2 < straight["epoch"] < 8
    run_finetune(tmp_path / "cut", common_args, *flags, "--stop_after_epochs", "2")
    resumed = run_finetune(tmp_path / "cut", common_args, *flags, "--resume_from_checkpoint", "true")
    assert resumed["epoch"] == straight["epoch"]


def test_train_fraction_subsets():
    from training.arguments import DataArguments
    from training.data import train_subset

    rows = train_subset(1000, DataArguments(train_fraction=0.1, train_subset_seed=3))
    assert len(rows) == 100 and (np.diff(rows) > 0).all() and rows.max() > 500  # sorted, spread over the split
    assert np.array_equal(rows, train_subset(1000, DataArguments(train_fraction=0.1, train_subset_seed=3)))
    assert not np.array_equal(rows, train_subset(1000, DataArguments(train_fraction=0.1, train_subset_seed=4)))
    oldest = train_subset(1000, DataArguments(train_fraction=0.25, train_subset="oldest"))
    assert np.array_equal(oldest, np.arange(250))
    for bad in ({"train_fraction": 0.0}, {"train_fraction": 0.5, "train_subset": "newest"}):
        with pytest.raises(ValueError, match="train_fraction"):
            train_subset(10, DataArguments(**bad))
