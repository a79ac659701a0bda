"""The `flip` console script: every command answers `--help`; unknown commands fail with the command list."""

import pytest

from training import cli, pretrain
from training.arguments import make_parser, parse_args


@pytest.mark.parametrize("command", sorted(cli.COMMANDS))
def test_every_command_has_help(command, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main([command, "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert f"flip {command}" in out
    assert "--" in out  # options are listed


def test_training_help_lists_dataclass_options(capsys):
    with pytest.raises(SystemExit):
        cli.main(["finetune", "--help"])
    out = capsys.readouterr().out
    for option in ("--init_from", "--ctr_mode", "--max_train_samples", "--use_lora", "--text_learning_rate"):
        assert option in out
    assert "accelerate launch" in out  # launch lines from the module docstring


def test_no_command_prints_usage(capsys):
    assert cli.main([]) == 0
    out = capsys.readouterr().out
    assert all(name in out for name in cli.COMMANDS)


def test_unknown_command_fails(capsys):
    assert cli.main(["train-everything"]) == 2
    assert "unknown command" in capsys.readouterr().err


# ---------------------------------------------------------------- help scoped to the command (issue 15 item 19)


def help_text(capsys, *argv: str) -> str:
    with pytest.raises(SystemExit) as exit_info:
        cli.main(list(argv))
    assert exit_info.value.code == 0
    return capsys.readouterr().out


def test_help_lists_the_commands_own_flags(capsys):
    pretrain_help = help_text(capsys, "pretrain", "--help")
    assert "--mlm_weight" in pretrain_help and "--learning_rate" in pretrain_help
    assert not {"--ctr_mode", "--joint_alpha_init", "--embedding_l2", "--ddp_backend"} & set(pretrain_help.split())
    assert len(pretrain_help.splitlines()) < 300 and "--help_all" in pretrain_help
    assert "--mlm_weight" not in help_text(capsys, "finetune", "--help").split()
    assert "--ddp_backend" in help_text(capsys, "pretrain", "--help_all")


# ---------------------------------------------------------------- configs by name (issue 15 item 7)


@pytest.mark.parametrize("name", ["pretrain_tiny", "pretrain_tiny.yaml", "training/configs/pretrain_tiny.yaml"])
def test_shipped_configs_are_usable_by_name_from_any_folder(name, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    parser = make_parser(pretrain.ARGUMENT_CLASSES, "test", None)
    model_args, _, _, args = parse_args(parser, [name, "--output_dir", str(tmp_path / "out")])
    assert model_args.embedding_dim == 8 and args.per_device_train_batch_size == 8  # pretrain_tiny.yaml's values


def test_an_unknown_config_lists_the_shipped_ones(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(FileNotFoundError, match=r"'pretrain_dmeo\.yaml' does not exist .*pretrain_demo"):
        parse_args(make_parser(pretrain.ARGUMENT_CLASSES, "test", None), ["pretrain_dmeo.yaml"])


# ---------------------------------------------------------------- user errors: one line, exit code 2 (item 8)


@pytest.fixture
def offline_hub(monkeypatch):
    """Offline mode as `HF_HUB_OFFLINE=1` sets it when the process starts."""
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)


def one_line_error(capsys, *argv: str) -> str:
    assert cli.main(list(argv)) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith(f"flip {argv[0]}: error: ") and "Traceback" not in err
    return err


def test_a_mistyped_model_folder_says_so(capsys, tmp_path, offline_hub):
    (tmp_path / "rows.csv").write_text("user_id\n1\n")
    err = one_line_error(capsys, "predict", "outputs/flpi", str(tmp_path / "rows.csv"))
    assert "model folder 'outputs/flpi' does not exist" in err and "huggingface.co" not in err


def test_a_missing_dataset_file_says_no_such_file(capsys, tmp_path):
    err = one_line_error(
        capsys, "finetune", "finetune_tiny", "--dataset", "clicks.yaml", "--output_dir", str(tmp_path)
    )
    assert "dataset file 'clicks.yaml' does not exist" in err


def test_a_config_key_typo_names_the_file_and_the_flag(capsys, tmp_path):
    (tmp_path / "run.yaml").write_text("lerning_rate: 0.1\n")
    err = one_line_error(capsys, "finetune", str(tmp_path / "run.yaml"))
    assert "run.yaml: unknown key 'lerning_rate' (did you mean 'learning_rate'?)" in err


def test_push_offline_is_one_line(capsys, monkeypatch, tmp_path):
    from huggingface_hub.errors import OfflineModeIsEnabled

    from training import hub

    class OfflineApi:
        def create_repo(self, **kwargs):
            raise OfflineModeIsEnabled(
                "Cannot reach https://huggingface.co/api/repos/create: offline mode is enabled."
            )

    (tmp_path / "config.json").write_text("{}")
    monkeypatch.setattr(hub, "HfApi", lambda token=None: OfflineApi())
    assert "offline mode is enabled" in one_line_error(capsys, "push", str(tmp_path), "me/model")


def test_debug_shows_the_traceback(tmp_path):
    (tmp_path / "run.yaml").write_text("lerning_rate: 0.1\n")
    with pytest.raises(ValueError, match="unknown key 'lerning_rate'"):
        cli.main(["finetune", str(tmp_path / "run.yaml"), "--debug"])
