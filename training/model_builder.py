"""Building the model a script trains: from a FLIP checkpoint, around a pretrained PLM, or ID-only; optionally with
the tabular tower of another checkpoint."""

import os

import torch
from huggingface_hub import is_offline_mode, try_to_load_from_cache
from torch import nn
from transformers import AutoConfig

from modeling_flip import FlipConfig, FlipForCTR


def build_model(model_class, model_args, schema, text_model_path: str) -> nn.Module:
    """A `FlipForPretraining` / `FlipForCTR` for `schema`: from `model_args.init_from` (a FLIP checkpoint, with the
    config overrides, e.g. `ctr_mode`), else new around the pretrained PLM, else (`ctr_mode="id"`) without any
    text tower (ID-only baselines: the PLM's config is kept, its weights are never loaded)."""
    for source in (model_args.init_from, model_args.init_tabular_from):
        check_model_source(source)
    overrides = model_args.config_overrides()
    schema_kwargs = {"field_names": schema.field_names, "field_vocab_sizes": schema.field_vocab_sizes}
    if model_args.init_from:
        model = model_class.from_pretrained(model_args.init_from, dtype=torch.float32, **overrides)
        schema.check_compatible(model.config)
    elif overrides.get("ctr_mode") == "id":
        config = FlipConfig(text_config=AutoConfig.from_pretrained(text_model_path), **schema_kwargs, **overrides)
        model = model_class(config)
    else:
        model = model_class.from_text_pretrained(
            text_model_path, text_model_kwargs={"dtype": torch.float32}, **schema_kwargs, **overrides
        )
    if model_args.init_tabular_from:
        load_tabular_tower(model, model_args.init_tabular_from, schema)
    return model


def load_tabular_tower(model: nn.Module, checkpoint: str, schema) -> None:
    """Copy the tabular tower (field embeddings, backbone, ID logit) of the FLIP checkpoint `checkpoint` into `model`
    (e.g. a FLIP_ID finetuning into a joint model whose text tower comes from a FLIP_PLM finetuning). The
    checkpoint must match the data schema and `model`'s tower (backbone and sizes); `ValueError` otherwise."""
    source = FlipForCTR.from_pretrained(checkpoint, ctr_mode="id", dtype=torch.float32)
    schema.check_compatible(source.config)
    try:
        model.flip.tabular_model.load_state_dict(source.flip.tabular_model.state_dict())
    except RuntimeError as error:
        raise ValueError(
            f"The tabular tower of {checkpoint!r} (backbone {source.config.backbone!r}) does not fit the model's "
            f"(backbone {model.config.backbone!r}): {error}"
        ) from error


def check_model_source(path: str | None) -> None:
    """`FileNotFoundError` naming `path` when it is no local folder and cannot be a reachable Hub repository (a path
    that looks local, or in offline mode a repo id absent from the Hub cache): a mistyped folder otherwise fails as a
    Hub download."""
    if path is None or os.path.isdir(path):
        return
    looks_local = path.startswith((".", "/", "~")) or os.path.exists(path) or path.count("/") != 1
    if looks_local or (is_offline_mode() and not isinstance(try_to_load_from_cache(path, "config.json"), str)):
        hub = "" if looks_local else " (nor a Hub repository in the local cache: offline mode is on)"
        raise FileNotFoundError(f"model folder {path!r} does not exist{hub}")
