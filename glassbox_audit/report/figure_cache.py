"""Drawn figures reused across runs: a figure is a pure function of what it shows.

Drawing the dossier's pictures (overlays, probability maps, the failure gallery, one grid per
explanation method, the charts) is most of a repeat audit's time, and a nightly run that loads
the same models on the same data draws the same pictures again. Each drawing function marked
:func:`cached_figure` gets a key: the sha256 of the code that draws (the source of
``glassbox_audit.report`` and ``glassbox_audit.xai.figures``, and the matplotlib, NumPy,
Pillow and OpenCV versions), the function's name, and every argument but the output path (arrays by
dtype, shape and bytes; dataclasses field by field). Inside ``figure_cache(folder)`` a stored
PNG with that key is copied to the path instead of drawing; otherwise the figure is drawn and
a copy stored. The PNGs are byte-reproducible (:func:`~glassbox_audit.report.kit.save_png`),
so a copy is the file the drawing would have written; each is stored with its sha256 and a
copy whose bytes differ is drawn again instead. The folder keeps the most recently used figures
up to a size limit. Outside a ``figure_cache`` block, or for
an argument the key cannot be computed from, the figure is simply drawn.

Example::

    with figure_cache(".cache/glassbox-audit/figures"):
        overlays.save_batch_figure(path, images, masks, preds, ids, scores)
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import functools
import hashlib
import logging
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import TypeVar

import numpy as np

from ..data.imageio import sha256_file

__all__ = ["cached_figure", "code_digest", "figure_cache", "figure_key", "prune"]

log = logging.getLogger(__name__)

F = TypeVar("F", bound=Callable[..., Path])
_FOLDER: contextvars.ContextVar[Path | None] = contextvars.ContextVar("glassbox_figure_cache", default=None)
_STATS: dict[str, int] = {"hits": 0, "misses": 0}


class _Unkeyable(TypeError):
    """An argument the key cannot be computed from: the figure is drawn, not cached."""


@functools.lru_cache(maxsize=1)
def code_digest() -> str:
    """sha256 of everything that decides how a figure looks, besides its arguments."""
    import cv2
    import matplotlib
    import PIL

    pkg = Path(__file__).resolve().parents[1]
    h = hashlib.sha256()
    for f in sorted([*(pkg / "report").glob("*.py"), pkg / "xai" / "figures.py"]):
        h.update(f.name.encode())
        h.update(f.read_bytes())
    # OpenCV resizes maps and draws the overlays' contours, so its version decides pixels too.
    h.update(f"matplotlib {matplotlib.__version__} numpy {np.__version__} pillow {PIL.__version__} "
             f"opencv {cv2.__version__}".encode())
    return h.hexdigest()


def _feed(h, obj: object) -> None:
    if obj is None or isinstance(obj, (bool, int, float, str)):
        h.update(f"{type(obj).__name__}:{obj!r};".encode())
    elif isinstance(obj, np.ndarray):
        h.update(f"array:{obj.dtype.str}:{obj.shape};".encode())
        h.update(np.ascontiguousarray(obj).tobytes())
    elif isinstance(obj, np.generic):
        _feed(h, obj.item())
    elif isinstance(obj, Path):
        h.update(f"path:{obj};".encode())
    elif dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        h.update(f"dataclass:{type(obj).__qualname__}(".encode())
        for f in dataclasses.fields(obj):
            h.update(f"{f.name}=".encode())
            _feed(h, getattr(obj, f.name))
        h.update(b")")
    elif isinstance(obj, Mapping):
        h.update(b"{")  # in order: the order of columns and legends is part of the figure
        for k, v in obj.items():
            _feed(h, k)
            _feed(h, v)
        h.update(b"}")
    elif isinstance(obj, (list, tuple)):
        h.update(b"[")
        for v in obj:
            _feed(h, v)
        h.update(b"]")
    else:
        raise _Unkeyable(type(obj).__qualname__)


def figure_key(fn: Callable, args: tuple, kwargs: dict) -> str:
    """The cache key of ``fn(path, *args, **kwargs)`` (the path is not part of it)."""
    h = hashlib.sha256()
    h.update(f"{code_digest()}:{fn.__module__}.{fn.__qualname__};".encode())
    _feed(h, list(args))
    _feed(h, dict(sorted(kwargs.items())))
    return h.hexdigest()


@contextlib.contextmanager
def figure_cache(folder: str | os.PathLike | None, max_mb: float = 512) -> Iterator[None]:
    """Reuse and store the figures drawn in this block in ``folder`` (None or "": no cache);
    at the end, the least recently used figures beyond ``max_mb`` are deleted."""
    token = _FOLDER.set(Path(folder) if folder else None)
    before = dict(_STATS)
    try:
        yield
    finally:
        _FOLDER.reset(token)
        if folder:
            pruned = prune(Path(folder), int(max_mb * 1024 * 1024))
            log.info("figures: %d read from the cache, %d drawn%s", _STATS["hits"] - before["hits"],
                     _STATS["misses"] - before["misses"],
                     f", {pruned} least recently used deleted (report.figure_cache_max_mb)" if pruned else "")


class _Damaged(Exception):
    """A stored figure whose bytes are not those it was stored with."""


def _digest_of(stored: Path) -> Path:
    return stored.with_suffix(".sha256")


def _store(src: Path, dst: Path, check: Path | None = None) -> None:
    """Copy ``src`` to ``dst`` atomically: a reader never sees half a PNG. ``check``: a file
    holding the sha256 the copy must have (a cached figure truncated or altered on disk is
    refused, not sealed into a version)."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=dst.parent, prefix=f".{dst.name}.", suffix=".tmp")
    os.close(fd)
    try:
        shutil.copyfile(src, tmp)
        if check is not None and sha256_file(Path(tmp)) != check.read_text().strip():
            raise _Damaged("its bytes differ from the sha256 stored with it")
        os.replace(tmp, dst)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def prune(folder: Path, max_bytes: int) -> int:
    """Delete the least recently used figures until ``folder`` holds at most ``max_bytes``;
    the number deleted. A nightly audit of changing data adds its figures every night."""
    entries = []
    for png in folder.glob("*/*.png"):
        try:
            st = png.stat()
        except OSError:
            continue
        entries.append((st.st_mtime, st.st_size, png))
    total = sum(size for _, size, _ in entries)
    deleted = 0
    for _, size, png in sorted(entries, key=lambda e: e[0]):
        if total <= max_bytes:
            break
        png.unlink(missing_ok=True)
        _digest_of(png).unlink(missing_ok=True)
        total -= size
        deleted += 1
    return deleted


def cached_figure(fn: F) -> F:
    """Mark a drawing function ``fn(path, ...) -> Path`` as reusable from the figure cache."""

    @functools.wraps(fn)
    def draw(path, *args, **kwargs):
        folder = _FOLDER.get()
        if folder is None:
            return fn(path, *args, **kwargs)
        try:
            key = figure_key(fn, args, kwargs)
        except _Unkeyable as exc:
            log.debug("figures: %s not cached (argument of type %s)", fn.__qualname__, exc)
            return fn(path, *args, **kwargs)
        stored = folder / key[:2] / f"{key}.png"
        out = Path(path)
        if stored.is_file():
            try:
                _store(stored, out, check=_digest_of(stored))
                os.utime(stored)  # recently used: the last to be pruned
            except (OSError, _Damaged) as exc:  # drawing costs time; a wrong or lost figure, the audit
                log.warning("figures: %s from the cache not used (%s): drawing it", stored.name, exc)
            else:
                _STATS["hits"] += 1
                return out
        _STATS["misses"] += 1
        written = Path(fn(path, *args, **kwargs))
        try:
            _store(written, stored)
            _digest_of(stored).write_text(sha256_file(written))
        except OSError as exc:  # a full or read-only cache costs the next run time, not this one
            log.warning("figures: could not store %s in the cache: %s", written.name, exc)
        return written

    return draw  # type: ignore[return-value]
