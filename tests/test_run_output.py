"""The console end of a run (issue 15 item 14): metrics, each loss component by name, and the saved path."""

from types import SimpleNamespace

import pytest

from training.run_output import cpu_bf16_unit, run_summary, saved_model_validation

RUN = {"train_steps": 24, "train_rows_seen": 192, "wall_time_s": 18.0, "output_dir": "out/joint"}


def test_joint_finetuning_summary_names_the_three_bce_terms():
    results = {
        **RUN,
        "stage": "finetuning",
        "ctr_mode": "joint",
        "validation": {"eval_auc": 0.71, "eval_logloss": 0.62, "eval_loss": 2.1, "eval_alpha": 0.3},
        "test": {
            "test_auc": 0.7,
            "test_logloss": 0.6,
            "test_joint_loss": 0.6,
            "test_id_loss": 0.7,
            "test_text_loss": 0.8,
        },
    }
    lines = run_summary(results).splitlines()
    assert lines[0] == "finetuning done (ctr_mode=joint): 24 steps, 192 training rows seen, 18.0 s"
    assert lines[1] == "  validation: AUC 0.7100  LogLoss 0.6200"
    assert lines[2] == "  test:       AUC 0.7000  LogLoss 0.6000  joint BCE 0.6000  ID BCE 0.7000  text BCE 0.8000"
    assert "joint BCE + ID BCE + text BCE" in lines[3] and lines[-1].startswith("saved to out/joint ")


def test_pretraining_summary_names_its_losses():
    validation = {"eval_loss": 3.0, "eval_icl_loss": 1.0, "eval_mlm_loss": 1.5, "eval_mtm_loss": 0.5}
    text = run_summary({**RUN, "stage": "pretraining", "validation": validation})
    assert "  validation: ICL 1.0000  MLM 1.5000  MTM 0.5000" in text and "test" not in text


@pytest.mark.parametrize("reloads_best", [True, False])
def test_saved_model_validation_is_the_saved_models_evaluation(reloads_best):
    """Pretraining keeps its last epoch while the Trainer still tracks a best step by validation loss: the reported
    metrics must be those of the model saved."""
    history = [{"step": 10, "eval_loss": 1.0}, {"step": 15, "loss": 0.9}, {"step": 20, "eval_loss": 1.2}]
    state = SimpleNamespace(log_history=history, best_global_step=10)
    trainer = SimpleNamespace(state=state, args=SimpleNamespace(load_best_model_at_end=reloads_best))
    assert saved_model_validation(trainer) == {"eval_loss": 1.0 if reloads_best else 1.2}


def test_cpu_bf16_unit_is_read_from_the_cpu_flags():
    cpuinfo = "processor\t: 0\nmodel name\t: Xeon\nflags\t\t: fpu avx512f {}\n"
    assert cpu_bf16_unit(cpuinfo.format("avx512_bf16 amx_tile amx_bf16")) == "AMX"
    assert cpu_bf16_unit(cpuinfo.format("avx512_bf16")) == "AVX512-BF16"
    assert cpu_bf16_unit(cpuinfo.format("avx2 amx_tile")) == ""
    assert cpu_bf16_unit("") == ""
