"""The `flip` console script: every command answers `--help`; unknown commands fail with the command list."""

import pytest

from training import cli


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
