"""Export FLIP_ID (the tabular tower and its logit; no text tower) as an ONNX Runtime serving folder.

    flip export-onnx outputs/demo/flip_id exported/flip-id-onnx
    flip export-onnx outputs/demo/flip exported/flip-id-onnx      # a joint FLIP model: its ID tower (`id_logits`)
    flip predict exported/flip-id-onnx rows.csv --runtime onnx     # score with ONNX Runtime

A command of its own, like `optimum-cli export onnx --model MODEL OUTPUT_DIR`: it writes a folder that serves
without torch or transformers, which `flip export-id` (safetensors + remote code) does not. The folder holds
`model.onnx` (`field_ids` (B, F) int64 -> `logits` (B,) float32, dynamic batch axis; `torch.onnx.export(...,
dynamo=True)` with onnxscript), `config.json` (the FLIP_ID config: fields, vocabulary sizes, backbone),
`flip_schema.json`, `tabular_schema.py` and `onnx_serving.py` (numpy + onnxruntime: raw rows -> probabilities,
`ORTFlipForCTR`), `export_info.json` (sizes, opset, the parity check) and a README. Before the folder appears, ONNX
Runtime's logits on a seeded batch of random valid ids are compared with PyTorch's: a difference above `--atol`
aborts the export. Needs the `onnx` extra: `pip install 'flip-ctr[onnx]'`.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
from pathlib import Path

import numpy as np
import torch
from torch import nn

from modeling_flip import FlipForCTR
from processing import onnx_serving
from processing import schema as schema_module
from processing.atomic_io import atomic_dir, write_json
from processing.onnx_serving import CONFIG_NAME, INPUT_NAME, ONNX_NAME, OUTPUT_NAME, SCHEMA_NAME, ORTFlipForCTR
from processing.processing_flip import load_schema
from processing.schema import FIELD_OOV_ID, TabularSchema

from .arguments import command_parser
from .export import ENCODER_NAME, INFO_NAME, export_info, human_size, load_id_tower

SERVING_MODULE = "onnx_serving.py"  # a copy of processing/onnx_serving.py
PARITY_ROWS = 512
EXPORT_INSTALL_HINT = "pip install 'flip-ctr[onnx]' (or: pip install onnx onnxscript onnxruntime)"
README = """# {name} (FLIP_ID, ONNX Runtime)

The ID tower of the FLIP CTR model `{source}` (`ctr_mode={mode}`, backbone `{backbone}`) as an ONNX graph:
`field_ids` (batch, {num_fields}) int64 local ids -> `logits` (batch,) float32. No language model, tokenizer or torch:

```python
import sys; sys.path.insert(0, "{name}")  # this folder: onnx_serving.py + tabular_schema.py (numpy + onnxruntime)
from onnx_serving import ORTFlipForCTR

model = ORTFlipForCTR.from_pretrained("{name}")  # a folder or a Hub repo id
probabilities = model.predict({{"{first_field}": ["..."], ...}})  # every field of flip_schema.json, (N,)
```

or `flip predict {name} rows.csv --runtime onnx`. Fields: {fields}. Export check: max |ORT - PyTorch| logit
difference {parity:.2e} on {rows} random rows.
"""


class IdLogits(nn.Module):
    """The exported graph: `field_ids (B, F) local ids -> logits (B,)` of a FLIP_ID model's tabular tower."""

    def __init__(self, model: FlipForCTR):
        super().__init__()
        self.tabular_model = model.flip.tabular_model

    def forward(self, field_ids: torch.Tensor) -> torch.Tensor:
        return self.tabular_model(field_ids)[1]  # (B,)


def require_exporter() -> None:
    """An `ImportError` with the install line when the ONNX exporter's packages are missing."""
    missing = [name for name in ("onnx", "onnxscript", "onnxruntime") if importlib.util.find_spec(name) is None]
    if missing:
        raise ImportError(f"flip export-onnx needs {missing}: {EXPORT_INSTALL_HINT}")


def export_graph(model: FlipForCTR, path: Path, opset: int | None = None) -> int:
    """Write the ONNX graph of `model`'s ID logit to `path` (dynamic batch axis); return its opset."""
    graph = IdLogits(model).eval()
    example = torch.full((2, model.config.num_fields), FIELD_OOV_ID, dtype=torch.long)  # (2, F)
    program = torch.onnx.export(
        graph,
        (example,),
        dynamo=True,
        input_names=[INPUT_NAME],
        output_names=[OUTPUT_NAME],
        dynamic_shapes={"field_ids": {0: torch.export.Dim("batch", min=1)}},
        opset_version=opset,
        verbose=False,
    )
    program.save(str(path))
    return int(program.model.opset_imports[""])


def random_field_ids(schema: TabularSchema, rows: int, seed: int = 0) -> np.ndarray:
    """`(rows, F)` int64 ids drawn uniformly from each field's whole range (reserved ids included)."""
    generator = np.random.default_rng(seed)
    return np.stack([generator.integers(0, size, rows) for size in schema.field_vocab_sizes], axis=1)


@torch.no_grad()
def check_parity(model: FlipForCTR, folder: Path, atol: float) -> float:
    """max |ORT logit - PyTorch logit| of the exported `folder` over `PARITY_ROWS` random valid rows; a
    `RuntimeError` when it exceeds `atol`."""
    ort_model = ORTFlipForCTR.from_pretrained(str(folder), threads=1)
    field_ids = random_field_ids(ort_model.schema, PARITY_ROWS)
    expected = IdLogits(model).eval()(torch.from_numpy(field_ids)).numpy()
    gap = float(np.abs(ort_model(field_ids) - expected).max())
    if not gap <= atol:
        raise RuntimeError(f"ONNX Runtime logits differ from PyTorch's by {gap:.3g} > atol {atol}: export aborted")
    return gap


def export_onnx(model_dir: str, out_dir: str, opset: int | None = None, atol: float = 1e-5) -> dict:
    """Write the ONNX serving folder of the FLIP_ID / FLIP model `model_dir` into `out_dir` (replaced atomically,
    only when ORT matches PyTorch within `atol`); return its info (see `training.export.export_info`)."""
    require_exporter()
    source_mode = FlipForCTR.config_class.from_pretrained(model_dir).ctr_mode
    model, schema = load_id_tower(model_dir).eval(), load_schema(model_dir)
    schema.check_compatible(model.config)
    with atomic_dir(out_dir) as staging:
        opset = export_graph(model, staging / ONNX_NAME, opset)
        model.config.to_json_file(str(staging / CONFIG_NAME), use_diff=False)
        schema.save(str(staging / SCHEMA_NAME))
        shutil.copyfile(schema_module.__file__, staging / ENCODER_NAME)
        shutil.copyfile(onnx_serving.__file__, staging / SERVING_MODULE)
        gap = check_parity(model, staging, atol)
        name = Path(out_dir).resolve().name
        (staging / "README.md").write_text(readme(model, schema, model_dir, source_mode, name, gap), encoding="utf-8")
        info = export_info(model, model_dir, source_mode, staging)
        info.update(format="onnx", opset=opset, parity_max_abs_diff=gap, parity_rows=PARITY_ROWS)
        write_json(str(staging / INFO_NAME), info)
    return info


def readme(model: FlipForCTR, schema: TabularSchema, model_dir: str, source_mode: str, name: str, gap: float) -> str:
    return README.format(
        name=name,
        source=model_dir,
        mode=source_mode,
        backbone=model.config.backbone,
        num_fields=schema.num_fields,
        first_field=schema.field_names[0],
        fields=", ".join(schema.field_names),
        parity=gap,
        rows=PARITY_ROWS,
    )


def main(argv: list[str] | None = None, prog: str = "python -m training.onnx_export") -> dict:
    parser = command_parser(prog, __doc__)
    parser.add_argument("model_dir", help="finetuned FLIP_ID (ctr_mode=id) or FLIP (joint) folder or Hub repo id")
    parser.add_argument("out_dir", help="folder to write (replaced if it exists)")
    parser.add_argument("--opset", type=int, default=None, help="ONNX opset (default: the exporter's)")
    parser.add_argument("--atol", type=float, default=1e-5, help="largest ORT vs PyTorch logit difference accepted")
    args = parser.parse_args(argv)
    info = export_onnx(args.model_dir, args.out_dir, args.opset, args.atol)
    print(
        f"exported the ID tower of {args.model_dir} to {os.path.join(args.out_dir, ONNX_NAME)} "
        f"(opset {info['opset']}): {human_size(info['exported_bytes'])}, {info['parameters']:,} parameters; "
        f"ORT vs PyTorch max logit difference {info['parity_max_abs_diff']:.2e} on {PARITY_ROWS} rows"
    )
    return info


if __name__ == "__main__":
    main()
