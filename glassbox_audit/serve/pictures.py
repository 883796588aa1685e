"""Any test image of a sealed version, drawn on request: the image, its ground truth, each
variant's prediction, error overlay and probability map, and explanations on demand.

Nothing is precomputed for the workstation and nothing is written into the version. The
version's own record says how to get the pictures back: its config names the data (checked
against the stored dataset fingerprint) and its models table names each model file and its
sha256 (checked on load, safe mode). The image's batch is predicted again with the
evaluation's own code (``evaluate.iter_views``: same batching, test-time augmentation,
threshold and clean-up), and its confusion counts are compared with the stored ones, so the
page says whether what it shows is what was scored.

Explanations use :func:`glassbox_audit.xai.explain_batch` with the version's XAI settings,
restricted to the method asked for, and its result cache (keyed by the sha256 of the
weights, images, masks, settings and code).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from ..config import AuditConfig, config_to_dict, from_dict
from ..errors import GlassBoxError
from ..store import DATABASE, AuditStore

__all__ = ["Explanation", "ImageView", "Unavailable", "VersionPictures", "png_bytes"]

log = logging.getLogger(__name__)

BATCHES_KEPT = 8  # predicted batches kept in memory per version (stepping through a batch is instant)


class Unavailable(GlassBoxError):
    """The pictures cannot be drawn (data moved or changed, a model file missing or changed)."""


def png_bytes(rgb: np.ndarray) -> bytes:
    ok, buf = cv2.imencode(".png", cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2BGR))
    if not ok:
        raise ValueError("could not encode PNG")
    return buf.tobytes()


@dataclass
class ImageView:
    image_id: str
    image: np.ndarray  # native uint8 RGB
    mask: np.ndarray  # native bool
    x: np.ndarray  # (1, S, S, 3) network input
    probs: dict[str, np.ndarray]  # variant -> native probability map
    preds: dict[str, np.ndarray]  # variant -> native mask as scored
    counts_match: dict[str, bool]  # variant -> recomputed counts equal the stored ones


@dataclass
class Explanation:
    method: str
    variant: str
    maps: dict[str, np.ndarray]  # map key -> (S, S) map at network input size
    params: dict[str, dict]
    kinds: dict[str, str]  # map key -> colour scale
    checks: list[dict]  # deletion/insertion AUC on this image, per map key (and the random reference)
    notes: list[str]
    cached: bool
    seconds: float


def _stored_config(tree: dict) -> AuditConfig:
    """The version's config, over today's defaults (a key added since keeps its default)."""
    base = config_to_dict(AuditConfig())

    def merge(into: dict, new: dict) -> None:
        for k, v in new.items():
            if k in into and isinstance(into[k], dict) and isinstance(v, dict):
                merge(into[k], v)
            elif k in into:
                into[k] = v

    merge(base, tree)
    return from_dict(AuditConfig, base)


class VersionPictures:
    """The models and data of one sealed version, loaded on first use."""

    def __init__(self, folder: Path, cache_dir: str | Path | None = None):
        self.folder = Path(folder)
        with AuditStore(self.folder / DATABASE, readonly=True) as store:
            run = store.run()
            self.cfg = _stored_config(run["config"])
            self.evals = store.rows("select id, model_name, model_sha256, dataset_fingerprint from evaluations "
                                    "where run_id = ? order by id", [run["id"]])
            self.model_rows = {r["sha256"]: r for r in store.rows("select * from models")}
        self.variants = [e["model_name"] for e in self.evals]
        self.cache_dir = str(cache_dir) if cache_dir is not None else self.cfg.xai.cache_dir
        self._lock = threading.RLock()  # one TensorFlow job at a time per version
        self._ds = None
        self._models = None
        self._batches: OrderedDict[int, object] = OrderedDict()

    # --- loading -------------------------------------------------------------------------------

    def _dataset(self):
        from ..data import load_dataset

        if self._ds is None:
            try:
                ds = load_dataset(self.cfg.data)
            except GlassBoxError as exc:
                raise Unavailable(f"the audit's data cannot be read now: {exc}") from None
            stored = self.evals[0]["dataset_fingerprint"]
            if ds.fingerprint() != stored:
                raise Unavailable(f"the data at {ds.root} changed since this version was audited (dataset "
                                  f"fingerprint {ds.fingerprint()[:12]}, recorded {stored[:12]}); pictures of "
                                  "other data would not be the images that were scored")
            self._ds = ds
        return self._ds

    def _loaded_models(self) -> list:
        from ..models.registry import StoredModel, load_model

        if self._models is None:
            out = []
            for e in self.evals:
                row = self.model_rows[e["model_sha256"]]
                card = json.loads(row["card_json"]) if isinstance(row["card_json"], str) else row["card_json"]
                path = Path(row["path"])
                # A relative path is the run's working directory's; the server may run elsewhere,
                # so also look beside the audits folder (the project that ran it).
                if not path.is_absolute() and not path.exists() and (self.folder.parents[2] / path).exists():
                    path = self.folder.parents[2] / path
                try:
                    stored = load_model(StoredModel(e["model_name"], card.get("key", ""), path, card),
                                        self.cfg.model.input_size)
                except GlassBoxError as exc:
                    raise Unavailable(f"model {e['model_name']}: {exc}") from None
                stored.name = e["model_name"]
                out.append(stored)
            self._models = out
        return self._models

    def _batch(self, index: int):
        from ..evaluate import iter_views

        if index in self._batches:
            self._batches.move_to_end(index)
            return self._batches[index]
        views = list(iter_views(self._loaded_models(), self._dataset(), self.cfg.model.input_size,
                                self.cfg.evaluate, [index]))
        if not views:
            raise Unavailable(f"batch {index} is not in the test set the data folder gives now")
        self._batches[index] = views[0]
        while len(self._batches) > BATCHES_KEPT:
            self._batches.popitem(last=False)
        return views[0]

    # --- what the pages ask for ----------------------------------------------------------------

    def image(self, image_id: str, batch_index: int, stored_counts: dict[str, tuple[int, int, int, int]]) -> ImageView:
        from ..metrics import confusion_counts

        with self._lock:
            view = self._batch(batch_index)
        if image_id not in view.ids:
            raise Unavailable(f"image {image_id} is not in batch {batch_index} of the test set the data gives now")
        j = view.ids.index(image_id)
        preds = {n: view.preds[n][j] for n in self.variants}
        match = {n: tuple(int(c) for c in confusion_counts(view.masks[j], preds[n])) == tuple(stored_counts.get(n, ()))
                 for n in self.variants}
        return ImageView(image_id, view.images[j], view.masks[j], view.x[j:j + 1],
                         {n: view.probs[n][j] for n in self.variants}, preds, match)

    def explain(self, image: ImageView, method: str, variant: str) -> Explanation:
        """One method for one variant on one image, with its deletion/insertion check."""
        import time

        from ..executor import xai_masks
        from ..xai import explain_batch
        from ..xai.figures import scale_kind
        from ..xai.settings import METHODS

        if method not in METHODS:
            raise ValueError(f"unknown method {method!r}")
        if variant not in self.variants:
            raise ValueError(f"unknown variant {variant!r}")
        settings = dataclasses.replace(self.cfg.xai, methods=[method], randomisation=False)
        size = self.cfg.model.input_size
        masks = xai_masks(_OneImage(image.mask), size)
        t0 = time.perf_counter()
        with self._lock:
            model = next(m for m in self._loaded_models() if m.name == variant).model
            result = explain_batch({variant: model}, image.x, masks, settings, image_ids=[image.image_id],
                                   cache_dir=self.cache_dir or None)
        maps = {k: v[variant][0] for k, v in result.maps.items() if variant in v}
        checks = [{"check": c.check, "method": c.method, "auc": float(c.auc[0])} for c in result.curves if len(c.auc)]
        return Explanation(method, variant, maps, {k: result.params.get(k, {}) for k in maps},
                           {k: scale_kind(k, [m]) for k, m in maps.items()}, checks, result.notes,
                           variant in result.cached, time.perf_counter() - t0)


@dataclass
class _OneImage:
    """The part of a BatchView ``xai_masks`` reads, for one image."""

    mask: np.ndarray

    @property
    def masks(self) -> list[np.ndarray]:
        return [self.mask]
