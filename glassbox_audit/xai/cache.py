"""A disk cache of explanation results: a second audit of the same models and batches reads them back.

One entry holds everything :func:`~glassbox_audit.xai.batch.explain_batch` computes for
one model on one batch (target region, maps, parameters, completeness, deletion /
insertion curves, randomisation check, timings, notes). Its key is the sha256 of:

* the model: its architecture (``to_json``) and every weight's path, shape, dtype and bytes,
  so a retrained or edited model misses even under the same name;
* the batch: the input array (shape, dtype, bytes) and the ground-truth masks if given;
* the model's variant name (it is written into the curves, checks and notes);
* every :class:`~glassbox_audit.xai.settings.XaiSettings` field except ``enabled`` and
  ``cache_dir`` (``batch_size`` included: chunking changes float rounding, and a cached
  result must be bit-identical to what this run would compute);
* the code: the sources of this package and of ``glassbox_audit.models.unet`` (layer
  groups), and the TensorFlow, Keras, NumPy, SciPy and scikit-image versions.

Entries are ``<key>.npz`` files (NumPy arrays plus one JSON header, read with
``allow_pickle=False``: nothing in the file is executed), written to a temporary file in the
same folder and renamed into place, so a reader sees a whole entry or none. An entry is used
only if its header repeats the full key and a sha256 over its arrays matches; anything else
(truncated, corrupt, another format, a colliding name) is logged, ignored and overwritten by
the recomputed result.

Example::

    cache = XaiCache(".cache/glassbox-audit/xai")
    key = cache.key(model, "balanced", images, masks, settings)
    part = cache.load(key)            # None on a miss or a bad entry
    if part is None:
        part = compute(...)
        cache.save(key, part)
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import importlib.metadata
import io
import json
import logging
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import keras
import numpy as np

from .checks import PerturbationCurves, RandomisationResult
from .gradients import Completeness
from .settings import XaiSettings
from .target import TargetRegion

__all__ = ["CacheKey", "ModelExplanations", "XaiCache", "array_sha256", "code_version", "model_sha256"]

log = logging.getLogger(__name__)

FORMAT = 1
# Settings that decide where or whether results are cached, not what they are.
_NOT_IN_KEY = ("enabled", "cache_dir")
_LIBRARIES = ("tensorflow", "keras", "numpy", "scipy", "scikit-image")


@dataclass
class ModelExplanations:
    """What :func:`~glassbox_audit.xai.batch.explain_batch` computed for one model on one batch.

    Attributes mirror :class:`~glassbox_audit.xai.batch.XaiResult`, restricted to one model:
    ``maps`` and ``params`` by map key (in computation order), ``timings`` by method.
    """

    region: TargetRegion
    maps: dict[str, np.ndarray] = field(default_factory=dict)
    params: dict[str, dict[str, object]] = field(default_factory=dict)
    completeness: Completeness | None = None
    curves: list[PerturbationCurves] = field(default_factory=list)
    randomisation: list[RandomisationResult] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class CacheKey:
    """The fields an entry is keyed by, and their sha256 (the entry's file name)."""

    fields: dict[str, object]

    @property
    def digest(self) -> str:
        return hashlib.sha256(_canonical(self.fields).encode()).hexdigest()


def _canonical(obj: object) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"))


def array_sha256(array: np.ndarray) -> str:
    """sha256 of an array's shape, dtype and C-order bytes."""
    a = np.ascontiguousarray(array)
    h = hashlib.sha256(f"{a.dtype.str}{a.shape}".encode())
    h.update(a.tobytes())
    return h.hexdigest()


def model_sha256(model: keras.Model) -> str:
    """sha256 of a model's architecture and weights, as it is in memory now.

    Hashes what runs rather than a file on disk: a model changed after loading (or never
    saved) gets its own key.
    """
    h = hashlib.sha256()
    try:
        h.update(model.to_json(sort_keys=True).encode())
    except (TypeError, ValueError, NotImplementedError):  # a layer without get_config
        h.update(_canonical([(layer.name, type(layer).__name__) for layer in model.layers]).encode())
    for w in model.weights:
        value = np.asarray(keras.ops.convert_to_numpy(w))
        h.update(f"\n{w.path}:{value.dtype.str}{value.shape}\n".encode())
        h.update(np.ascontiguousarray(value).tobytes())
    return h.hexdigest()


@functools.lru_cache(maxsize=1)
def code_version() -> str:
    """sha256 of the code that computes explanations, and the versions of the numeric libraries."""
    here = Path(__file__).resolve().parent
    sources = sorted(here.glob("*.py")) + [here.parent / "models" / "unet.py"]
    h = hashlib.sha256()
    for p in sources:
        h.update(f"{p.parent.name}/{p.name}\n".encode())
        h.update(p.read_bytes())
    for lib in _LIBRARIES:
        try:
            h.update(f"{lib}=={importlib.metadata.version(lib)}\n".encode())
        except importlib.metadata.PackageNotFoundError:
            h.update(f"{lib} missing\n".encode())
    return h.hexdigest()


def settings_fields(settings: XaiSettings) -> dict[str, object]:
    """The settings that change results, as plain JSON values."""
    return {k: v for k, v in dataclasses.asdict(settings).items() if k not in _NOT_IN_KEY}


# --------------------------------------------------------------------------- encoding


def _encode(part: ModelExplanations) -> tuple[dict, dict[str, np.ndarray]]:
    arrays: dict[str, np.ndarray] = {"region_weights": part.region.weights, "region_fallback": part.region.fallback}
    map_keys = list(part.maps)
    for i, k in enumerate(map_keys):
        arrays[f"map_{i}"] = part.maps[k]
    if part.completeness is not None:
        for f in dataclasses.fields(Completeness):
            arrays[f"completeness_{f.name}"] = getattr(part.completeness, f.name)
    for i, c in enumerate(part.curves):
        arrays.update({f"curve_{i}_fractions": c.fractions, f"curve_{i}_curves": c.curves, f"curve_{i}_auc": c.auc})
    for i, r in enumerate(part.randomisation):
        arrays.update({f"rand_{i}_spearman": r.spearman, f"rand_{i}_ssim": r.ssim})
    header = {
        "region_kind": part.region.kind,
        "maps": map_keys,
        "params": part.params,
        "completeness": part.completeness is not None,
        "curves": [{"check": c.check, "method": c.method, "model": c.model} for c in part.curves],
        "randomisation": [{"method": r.method, "model": r.model, "blocks": list(r.blocks),
                           "depths": [int(d) for d in r.depths]} for r in part.randomisation],
        "timings": part.timings,
        "notes": part.notes,
    }
    return header, {k: np.ascontiguousarray(v) for k, v in arrays.items()}


def _decode(header: dict, arrays: dict[str, np.ndarray]) -> ModelExplanations:
    region = TargetRegion(arrays["region_weights"], arrays["region_fallback"], header["region_kind"])
    completeness = (Completeness(*(arrays[f"completeness_{f.name}"] for f in dataclasses.fields(Completeness)))
                    if header["completeness"] else None)
    curves = [PerturbationCurves(c["check"], c["method"], c["model"], arrays[f"curve_{i}_fractions"],
                                 arrays[f"curve_{i}_curves"], arrays[f"curve_{i}_auc"])
              for i, c in enumerate(header["curves"])]
    rand = [RandomisationResult(r["method"], r["model"], list(r["blocks"]), list(r["depths"]),
                                arrays[f"rand_{i}_spearman"], arrays[f"rand_{i}_ssim"])
            for i, r in enumerate(header["randomisation"])]
    return ModelExplanations(region, {k: arrays[f"map_{i}"] for i, k in enumerate(header["maps"])},
                             header["params"], completeness, curves, rand,
                             {k: float(v) for k, v in header["timings"].items()}, list(header["notes"]))


def _arrays_sha256(arrays: dict[str, np.ndarray]) -> str:
    h = hashlib.sha256()
    for name in sorted(arrays):
        h.update(f"{name}\n{array_sha256(arrays[name])}\n".encode())
    return h.hexdigest()


class _BadEntry(Exception):
    pass


class XaiCache:
    """Explanation results on disk, one ``<key>.npz`` per model and batch.

    Parameters
    ----------
    folder : str or pathlib.Path
        Created on the first write.
    """

    def __init__(self, folder: str | os.PathLike):
        self.folder = Path(folder)
        self.hits = 0
        self.misses = 0

    def key(self, model: keras.Model, name: str, images: np.ndarray, masks: np.ndarray | None,
            settings: XaiSettings) -> CacheKey:
        """The key of one model's explanations of one batch."""
        return CacheKey({
            "format": FORMAT,
            "model_sha256": model_sha256(model),
            "model_name": name,
            "images_sha256": array_sha256(np.asarray(images, np.float32)),
            "masks_sha256": None if masks is None else array_sha256(np.asarray(masks)),
            "settings": settings_fields(settings),
            "code": code_version(),
        })

    def path(self, key: CacheKey) -> Path:
        return self.folder / f"{key.digest}.npz"

    def load(self, key: CacheKey) -> ModelExplanations | None:
        """The entry of ``key``, or None if there is none or it is not exactly what was written."""
        path = self.path(key)
        if not path.is_file():
            self.misses += 1
            return None
        try:
            part = self._read(path, key)
        except Exception as exc:  # noqa: BLE001 - any unreadable entry is a miss, whatever broke
            log.warning("xai cache: ignoring %s (%s: %s); recomputing", path, type(exc).__name__, exc)
            self.misses += 1
            return None
        self.hits += 1
        return part

    def _read(self, path: Path, key: CacheKey) -> ModelExplanations:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}  # reads every member: zip CRCs are checked here
        header = json.loads(str(arrays.pop("__header__")))
        if header.get("format") != FORMAT or _canonical(header.get("key")) != _canonical(key.fields):
            raise _BadEntry("its key differs from the requested one")
        if header.get("arrays_sha256") != _arrays_sha256(arrays):
            raise _BadEntry("its arrays do not match their sha256")
        return _decode(header["content"], arrays)

    def save(self, key: CacheKey, part: ModelExplanations) -> Path:
        """Write the entry of ``key`` atomically (temporary file in the folder, then rename)."""
        content, arrays = _encode(part)
        header = {"format": FORMAT, "key": key.fields, "arrays_sha256": _arrays_sha256(arrays), "content": content}
        buffer = io.BytesIO()
        np.savez(buffer, __header__=np.array(json.dumps(header)), **arrays)
        self.folder.mkdir(parents=True, exist_ok=True)
        final = self.path(key)
        fd, tmp = tempfile.mkstemp(prefix=f".{final.stem[:16]}.", suffix=".tmp", dir=self.folder)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(buffer.getbuffer())
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, final)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return final

