"""Shared tiny, offline fixtures: a WordPiece tokenizer from an in-memory vocabulary, a tiny BERT
config and a tiny saved encoder. Nothing here touches the network or the real MiniLM."""

import string

import pytest
import torch
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
