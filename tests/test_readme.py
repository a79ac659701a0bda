"""The README's code runs (issue 15 item 2): its Python blocks, in order, in a fresh interpreter against a tiny
trained folder; every `flip` command line names a command, flags that command accepts and configs that exist; the
`make` targets exist; the schema-file example reads the shipped example table."""

import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from modeling_flip import FlipForCTR
from processing import FlipProcessor
from processing.datasets import EXAMPLES, load_ctr_dataset
from tests import test_pipeline
from training import cli
from training.arguments import resolve_config_file
from training.card import CardInfo
from training.hub import save_for_hub

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")
tiny_ctr_dirs = test_pipeline.tiny_ctr_dirs  # the shared fixture


def code_blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", README, re.DOTALL)


def command_lines() -> list[list[str]]:
    """The bash blocks' commands (continuation lines joined, comments dropped), split into words."""
    text = "\n".join(code_blocks("bash")).replace("\\\n", " ")
    return [shlex.split(line, comments=True) for line in text.splitlines() if line.strip()]


@pytest.fixture(scope="module")
def readme_folders(tiny_ctr_dirs, tmp_path_factory) -> dict[str, str]:
    """README paths -> tiny folders: a CTR model saved as the training scripts save it, and its ONNX export."""
    root = tmp_path_factory.mktemp("readme")
    source = tiny_ctr_dirs["joint"]
    flip = save_for_hub(
        FlipForCTR.from_pretrained(source), FlipProcessor.from_pretrained(source), str(root / "flip"), CardInfo()
    )
    folders = {"outputs/demo/flip": flip}
    if "exported/flip-id-onnx" in README:
        from training.onnx_export import export_onnx

        export_onnx(tiny_ctr_dirs["id"], str(root / "onnx"))
        folders["exported/flip-id-onnx"] = str(root / "onnx")
    return folders


def test_python_blocks_run_in_order_in_a_fresh_interpreter(readme_folders, tmp_path):
    script = "\n".join(code_blocks("python"))
    for readme_path, folder in readme_folders.items():
        script = script.replace(f'"{readme_path}"', repr(folder))
    script += "\nprint('probability', float(probability), 'pipeline', probabilities)\n"
    env = {"PATH": "", "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf"), "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-c", script]
    result = subprocess.run(command, check=False, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "probability " in result.stdout and "Do you wish to run the custom code" not in result.stderr


@pytest.mark.parametrize(
    "words", [w for w in command_lines() if w[0] == "flip"], ids=lambda words: " ".join(words[:2])
)
def test_flip_command_lines_use_real_commands_flags_and_configs(words, capsys):
    command, args = words[1], words[2:]
    assert command in cli.COMMANDS
    flag = "--help_all" if command in ("pretrain", "finetune") else "--help"
    with pytest.raises(SystemExit):
        cli.run_command(command, [flag])
    help_text = capsys.readouterr().out
    for option in (arg for arg in args if arg.startswith("--")):
        assert re.search(rf"{re.escape(option)}\b", help_text), f"{option} is no flag of flip {command}"
    if command in ("pretrain", "finetune"):
        assert Path(resolve_config_file(args[0])).is_file()


def test_make_targets_exist():
    targets = set(re.findall(r"^([\w-]+):", (ROOT / "Makefile").read_text(), re.MULTILINE))
    used = {words[1] for words in command_lines() if words[0] == "make"}
    assert used and used <= targets


def test_schema_file_example_reads_the_example_table(tmp_path):
    (example,) = code_blocks("yaml")
    (tmp_path / "clicks.csv").write_bytes(EXAMPLES["clicks-example"].with_suffix(".csv").read_bytes())
    (tmp_path / "clicks.yaml").write_text(example)
    assert yaml.safe_load(example)["positive_labels"] == ["yes"]
    ours, shipped = load_ctr_dataset(tmp_path / "clicks.yaml"), load_ctr_dataset("clicks-example")
    assert ours["train"].to_pandas().equals(shipped["train"].to_pandas())
