"""Drawn figures reused across runs: a figure is a pure function of what it shows.

Drawing the dossier's pictures (overlays, probability maps, the failure gallery, one grid per
explanation method, the charts) is most of a repeat audit's time, and a nightly run that loads
the same models on the same data draws the same pictures again. Each drawing function marked
:func:`cached_figure` gets a key: the sha256 of the code that draws (the source of
``glassbox_audit.report`` and ``glassbox_audit.xai.figures``, and the matplotlib, NumPy and
Pillow versions), the function's name, and every argument but the output path (arrays by
dtype, shape and bytes; dataclasses field by field). Inside ``figure_cache(folder)`` a stored
PNG with that key is copied to the path instead of drawing; otherwise the figure is drawn and
a copy stored. The PNGs are byte-reproducible (:func:`~glassbox_audit.report.kit.save_png`),
so a copy is the file the drawing would have written. Outside a ``figure_cache`` block, or for
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

__all__ = ["cached_figure", "code_digest", "figure_cache", "figure_key"]

log = logging.getLogger(__name__)

F = TypeVar("F", bound=Callable[..., Path])
_FOLDER: contextvars.ContextVar[Path | None] = contextvars.ContextVar("glassbox_figure_cache", default=None)
_STATS: dict[str, int] = {"hits": 0, "misses": 0}


class _Unkeyable(TypeError):
    """An argument the key cannot be computed from: the figure is drawn, not cached."""


@functools.lru_cache(maxsize=1)
def code_digest() -> str:
    """sha256 of everything that decides how a figure looks, besides its arguments."""
    import matplotlib
    import PIL

    pkg = Path(__file__).resolve().parents[1]
    h = hashlib.sha256()
    for f in sorted([*(pkg / "report").glob("*.py"), pkg / "xai" / "figures.py"]):
        h.update(f.name.encode())
        h.update(f.read_bytes())
    h.update(f"matplotlib {matplotlib.__version__} numpy {np.__version__} pillow {PIL.__version__}".encode())
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
def figure_cache(folder: str | os.PathLike | None) -> Iterator[None]:
    """Reuse and store the figures drawn in this block in ``folder`` (None or "": no cache)."""
    token = _FOLDER.set(Path(folder) if folder else None)
    before = dict(_STATS)
    try:
        yield
    finally:
        _FOLDER.reset(token)
        if folder:
            log.info("figures: %d read from the cache, %d drawn", _STATS["hits"] - before["hits"],
                     _STATS["misses"] - before["misses"])


def _store(src: Path, dst: Path) -> None:
    """Copy ``src`` to ``dst`` atomically: a reader never sees half a PNG."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=dst.parent, prefix=f".{dst.name}.", suffix=".tmp")
    os.close(fd)
    try:
        shutil.copyfile(src, tmp)
        os.replace(tmp, dst)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


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
            _STATS["hits"] += 1
            _store(stored, out)
            return out
        _STATS["misses"] += 1
        written = Path(fn(path, *args, **kwargs))
        try:
            _store(written, stored)
        except OSError as exc:  # a full or read-only cache costs the next run time, not this one
            log.warning("figures: could not store %s in the cache: %s", written.name, exc)
        return written

    return draw  # type: ignore[return-value]
