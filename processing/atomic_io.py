"""Atomic writes: a file appears complete under its final name or not at all (temporary file in the same folder,
then `os.replace`)."""

import json
import os
import tempfile
from typing import Any


def write_json(path: str, data: Any) -> None:
    """Write `data` as indented JSON atomically (temporary file in the same folder, then rename)."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", dir=folder, suffix=".tmp", delete=False, encoding="utf-8") as handle:
        json.dump(data, handle, indent=2, sort_keys=False)
        handle.write("\n")
    os.replace(handle.name, path)
