"""The model card of a trained folder (issue 15 items 3 and 5): its "How to use" example scores a real row of the
training data (no OOV value), and a pretraining checkpoint gets a pretraining card with its validation losses."""

import re
from pathlib import Path

import pytest
import torch
from huggingface_hub import ModelCard

from tests.test_training import CONFIGS, run_finetune
from training import pretrain


def how_to_use(folder) -> str:
    """The first Python block of the card's "How to use" section, reading `folder` instead of the Hub repo."""
    text = Path(folder, "README.md").read_text()
    section = text[text.index("## How to use") :]
    code = re.search(r"```python\n(.*?)```", section, re.DOTALL).group(1)
    return code.replace('repo = "<user>/<repo>"', f"repo = {str(folder)!r}")


def test_ctr_card_example_scores_a_real_training_row(common_args, tmp_path, capsys):
    run_finetune(tmp_path, common_args, "--ctr_mode", "joint", "--num_train_epochs", "1")
    assert f"saved to {tmp_path} " in capsys.readouterr().out  # the console summary (tests/test_run_output.py)
    namespace: dict = {}
    exec(how_to_use(tmp_path), namespace)  # noqa: S102 (the card's own example)
    assert set(namespace["rows"]) == {"user_id", "gender", "movie_id", "genre"}  # this model's fields, not MovieLens'
    assert namespace["processor"].schema.oov_counts == {}  # every value is in the vocabulary
    assert namespace["ctr"].shape == (1,) and 0 < float(namespace["ctr"]) < 1


@pytest.fixture(scope="module")
def pretrained_card(common_args, tmp_path_factory) -> tuple[Path, dict]:
    folder = tmp_path_factory.mktemp("pretrain")
    argv = [str(CONFIGS / "pretrain_tiny.yaml"), *common_args, "--output_dir", str(folder), "--max_steps", "4"]
    return folder, pretrain.main(argv)


def test_pretraining_card_describes_a_pretraining_checkpoint(pretrained_card):
    folder, results = pretrained_card
    card = ModelCard.load(folder / "README.md")
    assert "pretraining checkpoint" in card.text and "ctr_mode=pretraining" not in card.text
    assert "finetuned for CTR" not in card.text and "| test |" not in card.text
    for name in ("icl", "mlm", "mtm"):
        value = results["validation"][f"eval_{name}_loss"]
        assert f"| {name} loss | {value:.4f} |" in card.text
    assert card.data.eval_results is None and "pretraining" in card.data.tags


def test_pretraining_card_example_gives_embeddings(pretrained_card):
    namespace: dict = {}
    exec(how_to_use(pretrained_card[0]), namespace)  # noqa: S102 (the card's own example)
    assert namespace["processor"].schema.oov_counts == {}
    assert namespace["row_embedding"].shape == namespace["prompt_embedding"].shape
    assert torch.isfinite(namespace["row_embedding"]).all()
