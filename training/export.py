"""Export the ID tower of a finetuned FLIP model (FLIP_ID) as a small serving folder: tabular tower + schema only.

    flip export-id outputs/demo/flip_id exported/flip-id
    flip export-id outputs/demo/flip exported/flip-id      # a joint FLIP model: its ID tower (its `id_logits`)

The folder holds `config.json` (`ctr_mode="id"`), `model.safetensors` (tabular tower only: no text weights), the
code files for `trust_remote_code`, `flip_schema.json` (field vocabularies), `tabular_schema.py` (a copy of
`processing/schema.py`: stdlib + numpy), `export_info.json` (sizes) and a README. No tokenizer: rows are encoded
by the schema alone,

    from training.export import load_exported_id

    model, schema = load_exported_id("exported/flip-id")  # FlipForCTR (ctr_mode="id") + TabularSchema
    field_ids = torch.tensor(schema.encode({"user_id": ["196"], "movie_id": ["242"], ...}))  # (B, F) local ids
    ctr = torch.sigmoid(model(field_ids=field_ids).logits)

without this package: `AutoModelForSequenceClassification.from_pretrained(dir, trust_remote_code=True)` and
`TabularSchema.load(dir + "/flip_schema.json")` from the folder's `tabular_schema.py` (see its README); or by the
pipeline:
`load_ctr_pipeline("exported/flip-id")(rows)`. `flip predict exported/flip-id rows.csv` works too.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import torch
from transformers.utils import cached_file

import modeling_flip  # noqa: F401  (registers the FLIP Auto classes)
from modeling_flip import FlipForCTR
from processing import schema as schema_module
from processing.atomic_io import atomic_dir, write_json
from processing.processing_flip import SCHEMA_NAME, load_schema
from processing.schema import TabularSchema

from .arguments import command_parser
from .model_builder import check_model_source
from .pipeline import ship_pipeline

INFO_NAME = "export_info.json"
ENCODER_NAME = "tabular_schema.py"  # a copy of processing/schema.py (stdlib + numpy): encodes rows without the package
EXPORTABLE_MODES = ("id", "joint")
README = """# {name} (FLIP_ID export)

The ID tower of the FLIP CTR model `{source}` (`ctr_mode={mode}`): tabular embeddings + `{backbone}` only, no
language model and no tokenizer. Rows become field ids through `flip_schema.json`:

```python
import torch
from transformers import AutoModelForSequenceClassification
from tabular_schema import TabularSchema  # shipped in this folder (stdlib + numpy); with the package installed:
                                          # from processing.schema import TabularSchema

model = AutoModelForSequenceClassification.from_pretrained("{name}", trust_remote_code=True).eval()
schema = TabularSchema.load("{name}/flip_schema.json")
field_ids = torch.tensor(schema.encode({{"{first_field}": ["..."], ...}}))  # every field of the schema, (B, F)
ctr = torch.sigmoid(model(field_ids=field_ids).logits)
```

Fields: {fields}.
"""


def folder_size(path: str | os.PathLike) -> int:
    """Bytes of the files directly in `path` (the final model folder; checkpoint-* subfolders are not counted)."""
    return sum(entry.stat().st_size for entry in os.scandir(path) if entry.is_file())


def source_folder(model_dir: str) -> str:
    """Local folder of a model: `model_dir` itself or the Hub cache snapshot holding its config."""
    return model_dir if os.path.isdir(model_dir) else os.path.dirname(cached_file(model_dir, "config.json"))


def load_id_tower(model_dir: str) -> FlipForCTR:
    """`FlipForCTR` in `ctr_mode="id"` with the tabular tower of `model_dir` (an `id` or `joint` CTR model)."""
    model = FlipForCTR.from_pretrained(model_dir)
    mode = model.config.ctr_mode
    if "FlipForCTR" not in (model.config.architectures or []) or mode not in EXPORTABLE_MODES:
        raise ValueError(
            f"{model_dir!r} is not a finetuned FLIP_ID / FLIP model (architectures={model.config.architectures}, "
            f"ctr_mode={mode!r}): finetune one first, e.g. `flip finetune CONFIG --init_from PRETRAIN --ctr_mode id`"
        )
    return model if mode == "id" else FlipForCTR.from_pretrained(model_dir, ctr_mode="id")


def export_flip_id(model_dir: str, out_dir: str) -> dict:
    """Write the ID-only serving folder of `model_dir` into `out_dir` (replaced atomically); return its info:
    source and exported sizes in bytes, their ratio, parameter count, files."""
    check_model_source(model_dir)
    source_mode = FlipForCTR.config_class.from_pretrained(model_dir).ctr_mode
    model, schema = load_id_tower(model_dir).eval(), load_schema(model_dir)
    schema.check_compatible(model.config)
    with atomic_dir(out_dir) as staging:
        model.save_pretrained(staging)
        ship_pipeline(staging)
        schema.save(str(staging / SCHEMA_NAME))
        shutil.copyfile(schema_module.__file__, staging / ENCODER_NAME)
        name = Path(out_dir).resolve().name
        (staging / "README.md").write_text(readme(model, schema, model_dir, source_mode, name), encoding="utf-8")
        info = export_info(model, model_dir, source_mode, staging)
        write_json(str(staging / INFO_NAME), info)
    return info


def export_info(model: FlipForCTR, model_dir: str, source_mode: str, staging: Path) -> dict:
    """Sizes (bytes, before `export_info.json` itself is written) and provenance of an export."""
    source_bytes, exported_bytes = folder_size(source_folder(model_dir)), folder_size(staging)
    return {
        "source": model_dir,
        "source_ctr_mode": source_mode,
        "source_bytes": source_bytes,
        "exported_bytes": exported_bytes,
        "size_ratio": round(exported_bytes / source_bytes, 4) if source_bytes else None,
        "parameters": sum(param.numel() for param in model.parameters()),
        "files": sorted(path.name for path in staging.iterdir()),
    }


def readme(model: FlipForCTR, schema: TabularSchema, model_dir: str, source_mode: str, name: str) -> str:
    return README.format(
        name=name,
        source=model_dir,
        mode=source_mode,
        backbone=model.config.backbone,
        first_field=schema.field_names[0] if schema.field_names else "field",
        fields=", ".join(schema.field_names),
    )


def load_exported_id(folder: str) -> tuple[FlipForCTR, TabularSchema]:
    """(model in eval mode, schema) of an exported folder: encode rows with `schema.encode(columns)`."""
    return FlipForCTR.from_pretrained(folder).eval(), load_schema(folder)


@torch.no_grad()
def score_exported(model: FlipForCTR, schema: TabularSchema, columns) -> torch.Tensor:
    """Click probabilities (N,) of a dict of columns / DataFrame with an exported model, no tokenizer."""
    return torch.sigmoid(model(field_ids=torch.as_tensor(schema.encode(columns))).logits)


def human_size(num_bytes: float) -> str:
    """`1536` -> `"1.5 KiB"`."""
    for unit in ("B", "KiB", "MiB"):
        if num_bytes < 1024:
            return f"{num_bytes:.1f} {unit}"
        num_bytes /= 1024
    return f"{num_bytes:.2f} GiB"


def main(argv: list[str] | None = None, prog: str = "python -m training.export") -> dict:
    parser = command_parser(prog, __doc__)
    parser.add_argument("model_dir", help="finetuned FLIP_ID (ctr_mode=id) or FLIP (joint) folder or Hub repo id")
    parser.add_argument("out_dir", help="folder to write (replaced if it exists)")
    args = parser.parse_args(argv)
    info = export_flip_id(args.model_dir, args.out_dir)
    print(
        f"exported the ID tower of {args.model_dir} to {args.out_dir}: {human_size(info['exported_bytes'])} vs "
        f"{human_size(info['source_bytes'])} for the source folder ({100 * (info['size_ratio'] or 0):.1f}%), "
        f"{info['parameters']:,} parameters; details in {os.path.join(args.out_dir, INFO_NAME)}"
    )
    return info


if __name__ == "__main__":
    main()
