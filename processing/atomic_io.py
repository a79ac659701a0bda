"""Atomic writes with ordinary permissions: a file or folder appears complete under its final name or not at all
(written under a temporary name in the same folder, then `os.replace`d), with the mode a plain `open` / `mkdir`
would give it under the process umask (temporary files and folders are created 0o600 / 0o700, as are the
safetensors files that `save_pretrained` writes)."""

import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


def current_umask() -> int:
    """The process umask (read by setting it and setting it back)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def apply_umask(path: str | os.PathLike) -> None:
    """Give `path` and, for a folder, everything below it mode 0o666 (files) / 0o777 (folders) minus the umask."""
    mask = current_umask()
    os.chmod(path, (0o777 if os.path.isdir(path) else 0o666) & ~mask)
    for root, folders, files in os.walk(path):
        for name in folders:
            os.chmod(os.path.join(root, name), 0o777 & ~mask)
        for name in files:
            os.chmod(os.path.join(root, name), 0o666 & ~mask)


@contextmanager
def atomic_file(path: str | os.PathLike) -> Iterator[str]:
    """A temporary path in `path`'s folder that becomes `path` when the block ends without an error, and is removed
    otherwise: `path` is never half-written, an existing file stays as it was."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    handle, tmp_path = tempfile.mkstemp(dir=folder, prefix=".tmp-", suffix=os.path.splitext(path)[1])
    os.close(handle)
    try:
        yield tmp_path
        apply_umask(tmp_path)
        os.replace(tmp_path, path)
    finally:
        if os.path.exists(tmp_path):
            os.remove(tmp_path)


@contextmanager
def atomic_dir(path: str | os.PathLike) -> Iterator[Path]:
    """A temporary folder next to `path` that replaces `path` (an existing folder is moved aside, then deleted) when
    the block ends without an error, and is removed otherwise."""
    out = Path(path).resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    try:
        yield staging
        apply_umask(staging)
        if out.exists():
            old = out.with_name(f".{out.name}.old-{os.getpid()}")
            os.replace(out, old)
            shutil.rmtree(old)
        os.replace(staging, out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def write_json(path: str | os.PathLike, data: Any) -> None:
    """Write `data` as indented JSON atomically."""
    with atomic_file(path) as tmp_path, open(tmp_path, "w", encoding="utf-8") as handle:
        json.dump(data, handle, indent=2, sort_keys=False)
        handle.write("\n")


def replace_marked_section(path: str | os.PathLike, body: str, name: str, heading: str | None = None) -> None:
    """Replace the text between the `<!-- {name}:start -->` / `<!-- {name}:end -->` markers of the text file `path`
    with `body`, atomically; a missing section is appended (after `heading`, e.g. "## Throughput", when the file
    lacks that line), a missing file created. The generated parts of RESULTS.md and the README are such sections."""
    start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    text = Path(path).read_text(encoding="utf-8") if os.path.isfile(path) else ""
    block = f"{start}\n{body.strip()}\n{end}"
    if start in text and end in text:
        head, rest = text.split(start, 1)
        text = head + block + rest.split(end, 1)[1]
    else:
        if heading and heading not in text.splitlines():
            text = text.rstrip() + f"\n\n{heading}\n"
        text = (text.rstrip() + "\n\n" if text.strip() else "") + block + "\n"
    with atomic_file(path) as tmp_path:
        Path(tmp_path).write_text(text, encoding="utf-8")
