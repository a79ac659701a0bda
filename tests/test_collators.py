import pytest
import torch

from processing import FlipProcessor, PromptTemplate
from processing.collators import DataCollatorForCTR, DataCollatorForFlipPretraining, num_masked_fields
from processing.schema import FIELD_MASK_ID
from tests._data_fixtures import ml_rows, ml_schema


def _features(tokenizer, n=32, offset=0, max_length=128):
    proc = FlipProcessor(tokenizer, ml_schema(), PromptTemplate(), max_length=max_length)
    enc = proc(ml_rows(n, offset))
    return [dict(zip(enc, values)) for values in zip(*enc.values())]


def _masked_text_fields(batch, features):
    """Per row: the set of fields whose tokens are masked (checks all-or-nothing per field on the way)."""
    result = []
    for i, feature in enumerate(features):
        index = torch.tensor(feature["token_field_index"])
        masked = batch["mlm_labels"][i, : len(index)] != -100
        fields = set(index[masked].tolist())
        assert -1 not in fields
        for f in fields:
            assert masked[index == f].all()  # every token of a chosen field
        result.append(fields)
    return result


def test_pretraining_batch_shapes_and_padding(tiny_tokenizer):
    features = _features(tiny_tokenizer, n=5)
    batch = DataCollatorForFlipPretraining(tiny_tokenizer, seed=0)(features)
    assert set(batch) == {
        "input_ids",
        "attention_mask",
        "masked_input_ids",
        "mlm_labels",
        "field_ids",
        "masked_field_ids",
        "mtm_labels",
    }
    longest = max(len(f["input_ids"]) for f in features)
    assert batch["input_ids"].shape == (5, -(-longest // 8) * 8)
    assert all(t.dtype == torch.long for t in batch.values())
    assert batch["field_ids"].shape == batch["masked_field_ids"].shape == batch["mtm_labels"].shape == (5, 8)
    for i, f in enumerate(features):
        n = len(f["input_ids"])
        assert batch["input_ids"][i, :n].tolist() == f["input_ids"]
        assert (batch["input_ids"][i, n:] == tiny_tokenizer.pad_token_id).all()
        assert batch["attention_mask"][i].sum() == n


@pytest.mark.parametrize("mask_same_fields", [False, True])
def test_masking_statistics(tiny_tokenizer, mask_same_fields):
    collator = DataCollatorForFlipPretraining(tiny_tokenizer, mask_same_fields=mask_same_fields, seed=0)
    rows = _features(tiny_tokenizer, n=64)
    m = num_masked_fields(8, 0.15)
    assert m == 1
    same, text_counts = 0, torch.zeros(8)
    for epoch in range(30):  # the same rows in a new order every "epoch", as a shuffling sampler gives them
        features = [rows[i] for i in torch.randperm(64, generator=torch.Generator().manual_seed(epoch))]
        batch = collator(features)
        masked = batch["mlm_labels"] != -100
        assert (batch["masked_input_ids"][masked] == tiny_tokenizer.mask_token_id).all()
        assert (batch["mlm_labels"][masked] == batch["input_ids"][masked]).all()
        assert (batch["masked_input_ids"][~masked] == batch["input_ids"][~masked]).all()
        text_fields = _masked_text_fields(batch, features)
        assert all(len(fields) == m for fields in text_fields)
        table = batch["mtm_labels"] != -100
        assert (table.sum(1) == m).all()
        assert (batch["masked_field_ids"][table] == FIELD_MASK_ID).all()
        assert (batch["mtm_labels"][table] == batch["field_ids"][table]).all()
        assert (batch["masked_field_ids"][~table] == batch["field_ids"][~table]).all()
        table_fields = [set(row.nonzero().flatten().tolist()) for row in table]
        same += sum(a == b for a, b in zip(text_fields, table_fields))
        for fields in text_fields:
            text_counts[list(fields)] += 1
    total = 30 * 64
    if mask_same_fields:
        assert same == total
    else:
        assert 0.07 < same / total < 0.19  # independent draws agree ~1/8 of the time
    assert (text_counts / total - 1 / 8).abs().max() < 0.04  # uniform over fields


def test_number_of_masked_fields_is_the_rounded_share_at_least_one():
    """m = max(1, round(F * ratio)) (docs/contracts.md): 8 * 0.2 = 1.6 masks 2 fields, not 1."""
    assert [num_masked_fields(8, ratio) for ratio in (0.01, 0.15, 0.2, 0.5, 1.0)] == [1, 1, 2, 4, 8]


def test_mlm_only_picks_fields_with_tokens_left(tiny_tokenizer):
    features = _features(tiny_tokenizer, n=16, max_length=14)  # only the first field or two survive
    collator = DataCollatorForFlipPretraining(tiny_tokenizer, mlm_field_ratio=0.5, mtm_field_ratio=0.5, seed=3)
    batch = collator(features)
    for fields, feature in zip(_masked_text_fields(batch, features), features):
        present = set(feature["token_field_index"]) - {-1}
        assert fields == present and len(present) < num_masked_fields(8, 0.5)
    assert ((batch["mtm_labels"] != -100).sum(1) == 4).all()


def test_masks_are_a_function_of_seed_and_batch(tiny_tokenizer, monkeypatch):
    """The masks of a batch depend on (seed, its rows in order) only: the same in a resumed run (however many batches
    came before), in any DataLoader worker; another order (the next epoch's shuffle) or seed draws other masks."""
    features = _features(tiny_tokenizer, n=32)
    keys = ("masked_input_ids", "masked_field_ids")

    def masks(seed, batch, collator=None):
        collator = collator or DataCollatorForFlipPretraining(tiny_tokenizer, seed=seed)
        out = collator(batch)
        return torch.cat([out[key].flatten() for key in keys])

    warm = DataCollatorForFlipPretraining(tiny_tokenizer, seed=0)
    for _ in range(3):  # batches drawn before do not change the next batch's masks
        warm(features[::-1])
    assert torch.equal(masks(0, features), masks(0, features, collator=warm))
    reordered = features[1:] + features[:1]
    first = DataCollatorForFlipPretraining(tiny_tokenizer, seed=0)(features)
    second = DataCollatorForFlipPretraining(tiny_tokenizer, seed=0)(reordered)
    assert not torch.equal(first["masked_field_ids"][1:], second["masked_field_ids"][:-1])  # same rows, new epoch
    assert not torch.equal(masks(0, features), masks(1, features))
    assert not torch.equal(masks(None, features), masks(None, features))  # unseeded: fresh masks every call


def test_invalid_settings(tiny_tokenizer):
    with pytest.raises(ValueError, match="mask_same_fields"):
        DataCollatorForFlipPretraining(tiny_tokenizer, mlm_field_ratio=0.2, mtm_field_ratio=0.3, mask_same_fields=True)


def test_ctr_collator(tiny_tokenizer):
    features = _features(tiny_tokenizer, n=3)
    batch = DataCollatorForCTR(tiny_tokenizer)(features)
    assert set(batch) == {"field_ids", "labels", "input_ids", "attention_mask"}
    assert batch["labels"].dtype == torch.float and batch["labels"].tolist() == [0.0, 1.0, 0.0]
    assert batch["field_ids"].dtype == torch.long and batch["field_ids"].shape == (3, 8)
    assert batch["input_ids"].shape[1] % 8 == 0 and batch["attention_mask"].dtype == torch.long
    unlabeled = [{k: v for k, v in f.items() if k != "labels"} for f in features]
    assert set(DataCollatorForCTR(tiny_tokenizer, include_text=False)(unlabeled)) == {"field_ids"}
