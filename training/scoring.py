"""The batched scoring loop: click logits of a trained CTR model over encoded rows."""

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader
from tqdm.auto import tqdm


@torch.no_grad()
def predict_logits(
    model: nn.Module,
    dataset,
    collator,
    batch_size: int,
    description: str = "scoring",
    device: str | None = None,
    progress: bool = True,
) -> np.ndarray:
    """Click logits (N,) of `model` over `dataset` (rows of processor output), batched, with a progress bar
    (`progress=False`: none, e.g. inside a caller's own bar)."""
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    model.to(device).eval()
    loader = DataLoader(dataset, batch_size=batch_size, collate_fn=collator, shuffle=False)
    outputs = []
    for batch in tqdm(loader, desc=description, unit="batch", disable=not progress):
        batch = {key: value.to(device) for key, value in batch.items() if key != "labels"}
        outputs.append(model(**batch).logits.float().cpu())
    return torch.cat(outputs).numpy() if outputs else np.zeros(0, dtype=np.float32)
