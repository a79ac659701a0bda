"""Uniform read access to raw files in a zip archive (including a wheel) or an extracted folder."""

from __future__ import annotations

import io
import os
import zipfile
from pathlib import Path


class RawFiles:
    """Find raw files by base name inside a zip archive or below a folder.

    >>> RawFiles("ml-100k.zip").read("u.data")   # member ml-100k/u.data  # doctest: +SKIP
    """

    def __init__(self, source: str | os.PathLike):
        self.source = Path(source)
        if not self.source.exists():
            raise FileNotFoundError(f"Raw data not found: {self.source}")

    def _member(self, name: str) -> str | Path:
        if self.source.is_dir():
            found = sorted(self.source.rglob(name))
        else:
            with zipfile.ZipFile(self.source) as archive:
                found = [m for m in archive.namelist() if m.rsplit("/", 1)[-1] == name]
        if not found:
            raise FileNotFoundError(f"{name} not found in {self.source}")
        return found[0]

    def has(self, name: str) -> bool:
        try:
            self._member(name)
        except FileNotFoundError:
            return False
        return True

    def read(self, name: str) -> bytes:
        member = self._member(name)
        if isinstance(member, Path):
            return member.read_bytes()
        with zipfile.ZipFile(self.source) as archive:
            return archive.read(member)

    def open(self, name: str) -> io.BytesIO:
        return io.BytesIO(self.read(name))
