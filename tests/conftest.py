"""Shared tiny, offline fixtures: a WordPiece tokenizer from an in-memory vocabulary, a tiny BERT
config and a tiny saved encoder. Nothing here touches the network or the real MiniLM."""

import string

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from transformers import BertConfig, BertModel, BertTokenizer

SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
TEMPLATE_WORDS = ["is", "user", "id", "gender", "age", "occupation", "zip", "code", "movie", "title", "genre"]


def build_tiny_wordpiece_vocab() -> list[str]:
    """Special tokens, template words, then single characters and their `##` continuations, so any
    ASCII text tokenises without [UNK] (character-level fallback)."""
    chars = list(string.ascii_lowercase + string.digits + string.punctuation)
    continuations = ["##" + c for c in string.ascii_lowercase + string.digits + string.punctuation]
    return list(dict.fromkeys(SPECIAL_TOKENS + TEMPLATE_WORDS + chars + continuations))


@pytest.fixture(scope="session")
def tiny_tokenizer() -> BertTokenizer:
    vocab = build_tiny_wordpiece_vocab()
    return BertTokenizer(vocab={token: i for i, token in enumerate(vocab)})


@pytest.fixture(scope="session")
def tiny_text_config(tiny_tokenizer) -> BertConfig:
    return BertConfig(
        vocab_size=len(tiny_tokenizer),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        max_position_embeddings=128,
        pad_token_id=tiny_tokenizer.pad_token_id,
    )


@pytest.fixture(scope="session")
def tiny_encoder_dir(tmp_path_factory, tiny_text_config, tiny_tokenizer) -> str:
    """A tiny random BERT + its tokenizer saved like a Hub checkpoint (local path)."""
    path = tmp_path_factory.mktemp("tiny-bert")
    torch.manual_seed(0)
    BertModel(tiny_text_config, add_pooling_layer=False).save_pretrained(path)
    tiny_tokenizer.save_pretrained(path)
    return str(path)


@pytest.fixture(autouse=True)
def _offline_hub(monkeypatch, tmp_path_factory):
    """Every test runs offline, with its Hub/modules cache in a temporary folder."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_EVALUATE_OFFLINE", "1")


@pytest.fixture(autouse=True, scope="session")
def _one_torch_thread():
    """One intra-op thread: the tiny test models gain nothing from more, and on a shared 2-core machine two
    spinning threads made a 3-step run 40x slower (9 s instead of 0.2 s). Session-wide, so that module-scoped
    fixtures that train (set up before any function-scoped fixture) use it too: a run compared bit for bit with a
    fixture's run must use the same number of threads."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def table(tmp_path_factory) -> str:
    """240 time-ordered rows, 4 fields; clicks follow the movie parity (15% flipped), so AUC can rise above 0.5."""
    folder = tmp_path_factory.mktemp("table")
    rng = np.random.default_rng(0)
    users, movies = rng.integers(0, 12, 240), rng.integers(0, 15, 240)
    frame = pd.DataFrame(
        {
            "user_id": users,
            "gender": np.where(users % 2, "male", "female"),
            "movie_id": movies,
            "genre": np.array(["comedy", "drama", "action", "war"])[movies % 4],
            "label": ((movies % 2 == 0) ^ (rng.random(240) < 0.15)).astype(int),
            "timestamp": np.arange(240),
        }
    )
    frame.to_csv(folder / "rows.csv", index=False)
    schema = {"data_files": "rows.csv", "fields": ["user_id", "gender", "movie_id", "genre"]}
    schema.update(label_column="label", time_column="timestamp")
    (folder / "table.yaml").write_text(yaml.safe_dump(schema))
    return str(folder / "table.yaml")


@pytest.fixture(scope="module")
def common_args(table, tiny_encoder_dir, tmp_path_factory) -> list[str]:
    """`--dataset TABLE --text_model TINY --data_dir PREPARED` for the training scripts (prepared once per module)."""
    data_dir = str(tmp_path_factory.mktemp("prepared"))
    return ["--dataset", table, "--text_model", tiny_encoder_dir, "--data_dir", data_dir]
