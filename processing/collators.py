"""Collators: dynamic padding, field-level MLM/MTM masking for pretraining, and CTR batches.

Masking randomness lives here, never in `Dataset.map` (masks must change every epoch) and never in the model's
`forward`. A batch's masks are drawn from a `torch.Generator` seeded with (collator seed, the batch's rows in
order): a function of the batch, not of how many batches came before. So a run resumed mid-epoch draws the masks of
the uninterrupted run, DataLoader workers and process layouts do not change them, the shuffled order makes them
differ every epoch, and an unshuffled evaluation set gets the same masks at every evaluation (comparable losses).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from itertools import chain
from typing import Any

import torch

from .schema import FIELD_MASK_ID

IGNORE_INDEX = -100


def num_masked_fields(num_fields: int, ratio: float) -> int:
    """m = max(1, round(F * ratio)) (docs/contracts.md)."""
    return max(1, round(num_fields * ratio))


def pad_sequences(
    sequences: Sequence[Sequence[int]], pad_value: int, pad_to_multiple_of: int | None = 8
) -> torch.Tensor:
    """Right-pad variable-length int lists to `(B, L)` long, L = longest rounded up to `pad_to_multiple_of`."""
    lengths = torch.tensor([len(s) for s in sequences], dtype=torch.long)
    width = int(lengths.max()) if len(sequences) else 0
    if pad_to_multiple_of:
        width = -(-width // pad_to_multiple_of) * pad_to_multiple_of
    out = torch.full((len(sequences), width), pad_value, dtype=torch.long)
    out[torch.arange(width) < lengths[:, None]] = torch.tensor(list(chain.from_iterable(sequences)), dtype=torch.long)
    return out


def random_field_choice(eligible: torch.Tensor, m: int, generator: torch.Generator) -> torch.Tensor:
    """Pick m fields per row uniformly among the eligible ones (fewer when fewer are eligible).

    Args:
        eligible: `(B, F)` bool.
    Returns:
        `(B, F)` bool, True at the chosen fields.
    """
    scores = torch.rand(eligible.shape, generator=generator).masked_fill(~eligible, 2.0)
    chosen_idx = scores.topk(min(m, eligible.shape[1]), dim=1, largest=False).indices
    chosen = torch.zeros_like(eligible).scatter_(1, chosen_idx, True)
    return chosen & eligible


def batch_generator(seed: int | None, *tensors: torch.Tensor) -> torch.Generator:
    """A `torch.Generator` seeded from `seed` and the bytes of `tensors` (the batch), or from the OS (`seed=None`)."""
    generator = torch.Generator()
    if seed is None:
        generator.seed()
        return generator
    digest = hashlib.blake2b(seed.to_bytes(8, "little", signed=True), digest_size=8)
    for tensor in tensors:
        digest.update(tensor.numpy().tobytes())
    return generator.manual_seed(int.from_bytes(digest.digest(), "little") >> 1)


class DataCollatorForFlipPretraining:
    """Pad a batch of processor rows and mask whole fields in the text (MLM) and in the table (MTM).

    MLM: m = max(1, round(F * mlm_field_ratio)) fields per row, among fields with at least one token left after
    truncation; every token whose `token_field_index` is a chosen field becomes `tokenizer.mask_token_id`.
    MTM: m fields per row (independent draw, or the MLM fields when `mask_same_fields`) set to `FIELD_MASK_ID`.
    The draws come from `batch_generator(seed, field_ids, input_ids)`: the same rows in the same order always get
    the same masks (exact resume); `seed=None` draws fresh masks every call.

    Example (F = 2, ratios 0.5 -> one field each):
        >>> collator = DataCollatorForFlipPretraining(tokenizer, mlm_field_ratio=0.5, mtm_field_ratio=0.5, seed=0)
        >>> batch = collator([{"input_ids": [101, 7, 8, 9, 102], "attention_mask": [1] * 5,
        ...                    "token_field_index": [-1, 0, -1, 1, -1], "field_ids": [5, 3]}])
        >>> # input_ids (1, 8): [101, 7, 8, 9, 102, 0, 0, 0]      attention_mask (1, 8): [1, 1, 1, 1, 1, 0, 0, 0]
        >>> # masked_input_ids: [101, 7, 8, 103, 102, 0, 0, 0]     mlm_labels: [-100, -100, -100, 9, -100, ...]
        >>> # field_ids (1, 2): [5, 3]   masked_field_ids: [0, 3]   mtm_labels: [5, -100]

    Returns a dict of long tensors: `input_ids`, `attention_mask`, `masked_input_ids`, `mlm_labels` (B, L);
    `field_ids`, `masked_field_ids`, `mtm_labels` (B, F). Other input keys (e.g. `labels`) are dropped.
    """

    def __init__(
        self,
        tokenizer: Any,
        mlm_field_ratio: float = 0.15,
        mtm_field_ratio: float = 0.15,
        mask_same_fields: bool = False,
        seed: int | None = None,
        pad_to_multiple_of: int | None = 8,
    ):
        if tokenizer.mask_token_id is None:
            raise ValueError("DataCollatorForFlipPretraining needs a tokenizer with a mask token")
        if mask_same_fields and mlm_field_ratio != mtm_field_ratio:
            raise ValueError("mask_same_fields=True needs mlm_field_ratio == mtm_field_ratio")
        self.tokenizer = tokenizer
        self.mlm_field_ratio, self.mtm_field_ratio = mlm_field_ratio, mtm_field_ratio
        self.mask_same_fields = mask_same_fields
        self.seed = seed
        self.pad_to_multiple_of = pad_to_multiple_of

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        input_ids = self._pad(features, "input_ids", self.tokenizer.pad_token_id)
        attention_mask = self._pad(features, "attention_mask", 0)
        token_field_index = self._pad(features, "token_field_index", -1)
        field_ids = torch.tensor([f["field_ids"] for f in features], dtype=torch.long)
        num_fields = field_ids.shape[1]
        generator = batch_generator(self.seed, field_ids, input_ids)

        has_tokens = torch.zeros_like(field_ids, dtype=torch.bool)
        rows, cols = (token_field_index >= 0).nonzero(as_tuple=True)
        has_tokens[rows, token_field_index[rows, cols]] = True
        text_fields = random_field_choice(has_tokens, num_masked_fields(num_fields, self.mlm_field_ratio), generator)
        if self.mask_same_fields:
            table_fields = text_fields
        else:
            all_fields = torch.ones_like(has_tokens)
            table_fields = random_field_choice(
                all_fields, num_masked_fields(num_fields, self.mtm_field_ratio), generator
            )

        masked_tokens = text_fields.gather(1, token_field_index.clamp(min=0)) & (token_field_index >= 0)
        return {
            "input_ids": input_ids,
            "attention_mask": attention_mask,
            "masked_input_ids": input_ids.masked_fill(masked_tokens, self.tokenizer.mask_token_id),
            "mlm_labels": input_ids.masked_fill(~masked_tokens, IGNORE_INDEX),
            "field_ids": field_ids,
            "masked_field_ids": field_ids.masked_fill(table_fields, FIELD_MASK_ID),
            "mtm_labels": field_ids.masked_fill(~table_fields, IGNORE_INDEX),
        }

    def _pad(self, features: list[dict[str, Any]], key: str, value: int) -> torch.Tensor:
        return pad_sequences([f[key] for f in features], value, self.pad_to_multiple_of)


class DataCollatorForCTR:
    """Batch processor rows for CTR finetuning / prediction.

    Example:
        >>> batch = DataCollatorForCTR(tokenizer)([{"input_ids": [101, 7, 102], "attention_mask": [1, 1, 1],
        ...                                         "token_field_index": [-1, 0, -1], "field_ids": [5], "labels": 1}])
        >>> # field_ids (1, 1) long [[5]]; labels (1,) float [1.]; input_ids / attention_mask (1, 8) long

    Returns `field_ids` (B, F) long, `labels` (B,) float (when the rows have labels), and with `include_text`
    `input_ids` / `attention_mask` (B, L) padded to the longest row rounded up to `pad_to_multiple_of`.
    """

    def __init__(self, tokenizer: Any, include_text: bool = True, pad_to_multiple_of: int | None = 8):
        self.tokenizer = tokenizer
        self.include_text = include_text
        self.pad_to_multiple_of = pad_to_multiple_of

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        batch = {"field_ids": torch.tensor([f["field_ids"] for f in features], dtype=torch.long)}
        if "labels" in features[0]:
            batch["labels"] = torch.tensor([f["labels"] for f in features], dtype=torch.float)
        if self.include_text:
            for key, value in (("input_ids", self.tokenizer.pad_token_id), ("attention_mask", 0)):
                batch[key] = pad_sequences([f[key] for f in features], value, self.pad_to_multiple_of)
        return batch
