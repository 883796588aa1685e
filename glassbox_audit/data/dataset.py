"""The checked, fingerprinted dataset and the ways to feed it to a model.

``load_dataset`` finds the pairs of a layout, hashes every file, reads every pair once to
check it (readable, same size, binary mask) and returns a :class:`Dataset` whose
``fingerprint`` changes when any file, name or partition changes.

Images go to the network resized to the model input; masks stay at their native
resolution for evaluation (``iter_batches``).
"""

from __future__ import annotations

import hashlib
import logging
import queue
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np
from tqdm import tqdm

from ..config import DataConfig
from ..errors import DataError
from .imageio import printable, read_image, read_mask, resize_image, resize_mask, sha256_file
from .layouts import Discovery, Sample, discover, ground_truth_statement

__all__ = ["Batch", "DataFile", "Dataset", "iter_batches", "load_arrays", "load_dataset"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DataFile:
    path: str  # relative to the dataset root when inside it
    role: str  # image | mask
    partition: str
    sample_id: str
    sha256: str
    bytes: int
    height: int
    width: int


@dataclass
class Dataset:
    layout: str
    root: Path
    description: str
    samples: dict[str, list[Sample]]
    files: list[DataFile]
    notes: list[str] = field(default_factory=list)
    test_source: str = "test"
    mask_threshold: int = 128
    max_ambiguous: float = 0.02
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (file, reason) left out
    # Masks without a foreground pixel, per partition: an empty truth scores Dice 1 against an
    # empty prediction, so the data sheet says how many there are.
    empty_masks: dict[str, int] = field(default_factory=dict)
    ground_truth: str = ""  # how the masks were made, as the data sheet prints it

    def fingerprint(self, partitions: tuple[str, ...] = ("train", "val", "test")) -> str:
        """sha256 over (partition, role, path, sha256) of every file in ``partitions``."""
        h = hashlib.sha256()
        for f in sorted(self.files, key=lambda f: (f.partition, f.sample_id, f.role)):
            if f.partition in partitions:
                h.update(f"{f.partition}\t{f.role}\t{f.path}\t{f.sha256}\n".encode())
        return h.hexdigest()

    @property
    def counts(self) -> dict[str, int]:
        return {p: len(s) for p, s in self.samples.items()}


def _relative(path: Path, root: Path) -> str:
    try:
        return printable(path.relative_to(root).as_posix())
    except ValueError:
        return printable(path)


def _check_pair(sample: Sample, root: Path, threshold: int, max_ambiguous: float
                ) -> tuple[DataFile, DataFile, bool]:
    """The pair's two files, checked, and whether its mask is empty."""
    image = read_image(sample.image)
    mask = read_mask(sample.mask, threshold, max_ambiguous)
    if image.shape[:2] != mask.shape:
        raise DataError(
            f"{sample.mask}: mask is {mask.shape[1]}x{mask.shape[0]} but its image "
            f"{sample.image.name} is {image.shape[1]}x{image.shape[0]}"
        )
    h, w = mask.shape
    image_file, mask_file = (
        DataFile(_relative(p, root), role, sample.partition, sample.id, sha256_file(p),
                 p.stat().st_size, h, w)
        for p, role in ((sample.image, "image"), (sample.mask, "mask"))
    )
    return image_file, mask_file, not mask.any()


def load_dataset(cfg: DataConfig, workers: int = 4) -> Dataset:
    """Discover, hash and check every pair; raise :class:`DataError` naming the first bad file."""
    found: Discovery = discover(cfg)
    samples = [s for part in ("train", "val", "test") for s in found.samples.get(part, [])]
    files: list[DataFile] = []
    skipped = list(found.skipped)
    bad: set[str] = set()
    empty: dict[str, int] = {p: 0 for p in found.samples}

    def check(s: Sample):
        try:
            return _check_pair(s, found.root, cfg.mask_threshold, cfg.max_ambiguous_fraction)
        except DataError as exc:
            if cfg.on_bad_input == "fail":
                raise
            return exc

    # OpenCV decoding and hashing release the GIL, so threads overlap the I/O and decoding.
    with ThreadPoolExecutor(max_workers=workers) as pool:
        for s, pair in tqdm(zip(samples, pool.map(check, samples)), total=len(samples), desc="checking data",
                            unit="pair", disable=None, leave=False):
            if isinstance(pair, DataError):
                path, _, reason = str(pair).partition(": ")
                skipped.append((path, reason))
                bad.add(s.id)
                log.warning("data: skipping %s: %s", path, reason)
            else:
                files.extend(pair[:2])
                empty[s.partition] += pair[2]
    parts = {p: [s for s in ss if s.id not in bad] for p, ss in found.samples.items()}
    for p in ("test",) if cfg.test_only else ("train", "test"):
        if not parts.get(p):
            raise DataError(f"{found.root}: no usable {p} images left after skipping bad files")
    if sum(empty.values()) == sum(len(ss) for ss in parts.values()):
        # Every truth empty: each image would score Dice 1 against an empty prediction. The
        # usual cause is a mask encoding the reader does not see (labels in another channel,
        # a threshold above the label value), not a dataset without a single lesion.
        raise DataError(f"{found.root}: every mask is empty (no foreground pixel above data.mask_threshold="
                        f"{cfg.mask_threshold} in any of {sum(empty.values())} masks); check the mask files "
                        "and data.mask_threshold")
    ds = Dataset(found.layout, found.root, found.description, parts, files, found.notes,
                 found.test_source, cfg.mask_threshold, cfg.max_ambiguous_fraction, skipped,
                 empty_masks=empty, ground_truth=ground_truth_statement(found.layout, cfg.ground_truth))
    log.info("data: %s at %s: %s; fingerprint %s", ds.description, ds.root,
             ", ".join(f"{k} {v}" for k, v in ds.counts.items()), ds.fingerprint()[:16])
    if empty.get("test"):
        log.info("data: %d of %d test masks are empty", empty["test"], len(parts.get("test", [])))
    return ds


def load_arrays(ds: Dataset, partition: str, size: int, workers: int = 4
                ) -> tuple[np.ndarray, np.ndarray]:
    """All images of a partition at network size: uint8 ``(N, S, S, 3)`` and float ``(N, S, S, 1)``.

    Used for training, where every epoch revisits the same images; uint8 keeps 2000 ISIC
    images at 128 px under 100 MB.
    """
    samples = ds.samples[partition]

    def one(s: Sample) -> tuple[np.ndarray, np.ndarray]:
        img = resize_image(read_image(s.image), size)
        mask = resize_mask(read_mask(s.mask, ds.mask_threshold, ds.max_ambiguous), size)
        return img, mask

    with ThreadPoolExecutor(max_workers=workers) as pool:
        pairs = list(tqdm(pool.map(one, samples), total=len(samples), desc=f"loading {partition}",
                          unit="img", disable=None, leave=False))
    x = np.stack([p[0] for p in pairs]).astype(np.uint8)
    y = np.stack([p[1] for p in pairs])[..., None].astype(np.float32)
    return x, y


@dataclass
class Batch:
    index: int
    ids: list[str]
    x: np.ndarray  # float32 (B, S, S, 3) in [0, 1], the network input
    masks: list[np.ndarray]  # bool, each at its native resolution
    images: list[np.ndarray] | None = None  # uint8 native images, only when asked for


def iter_batches(ds: Dataset, partition: str, size: int, batch_size: int,
                 keep_images: bool | set[int] = False, prefetch: int = 2,
                 only: set[int] | None = None) -> Iterator[Batch]:
    """Stream a partition in batches, decoding the next batches in a background thread.

    ``keep_images``: True keeps every native image, a set keeps them for those batch
    indices only (the batches the dossier draws), so memory stays bounded by the batch size.
    ``only``: yield just these batch indices (the others are never read); indices keep
    their meaning in the whole partition.
    """
    samples = ds.samples[partition]
    chunks = [(i // batch_size, samples[i:i + batch_size]) for i in range(0, len(samples), batch_size)]
    if only is not None:
        chunks = [(i, c) for i, c in chunks if i in only]
    q: queue.Queue = queue.Queue(maxsize=prefetch)
    stop = threading.Event()

    def load(index: int, chunk: list[Sample]) -> Batch:
        images = [read_image(s.image) for s in chunk]
        masks = [read_mask(s.mask, ds.mask_threshold, ds.max_ambiguous) for s in chunk]
        x = np.stack([resize_image(im, size) for im in images]).astype(np.float32) / 255.0
        keep = keep_images is True or (isinstance(keep_images, set) and index in keep_images)
        return Batch(index, [s.id for s in chunk], x, masks, images if keep else None)

    def producer() -> None:
        try:
            for i, chunk in chunks:
                if stop.is_set():
                    return
                q.put(load(i, chunk))
            q.put(None)
        except BaseException as exc:  # hand the failure to the consumer, which re-raises it
            q.put(exc)

    thread = threading.Thread(target=producer, name="batch-loader", daemon=True)
    thread.start()
    try:
        while True:
            item = q.get()
            if item is None:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        while thread.is_alive():  # unblock a producer waiting on a full queue
            try:
                q.get_nowait()
            except queue.Empty:
                thread.join(timeout=0.05)
