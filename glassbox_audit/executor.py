"""Where the heavy, pure stages of an audit run: in this process, or sharded over Dask workers.

Two executors with the same two calls, so ``run_audit`` does not care which it has::

    with make_executor(cfg.executor) as ex:               # LocalExecutor or DaskExecutor
        evals = ex.evaluate(models, ds, cfg.model.input_size, cfg.evaluate)
        explanations = ex.explain(models, views, cfg)      # {batch index: XaiResult}

``LocalExecutor`` runs :func:`~glassbox_audit.evaluate.evaluate_models` and
:func:`~glassbox_audit.xai.explain_batch` here, as a run always has. ``DaskExecutor``
(``executor.kind = "dask"``, the ``distributed`` package) splits the test partition into
contiguous shards of batches, which workers evaluate with the same
:func:`~glassbox_audit.evaluate.evaluate_shard` (so the arrays are the same), and explains
each selected batch with each variant as its own task. Workers load each model once, from
the model store on disk, by path, checked against the sha256 of its card, and keep it in a
per-process cache keyed by that hash. Results come back as plain arrays and dataclasses; the
main process is the only writer of the run's database, and writes only after every shard
has returned, so a failed run leaves no version, never a half-filled one.

A worker that dies while it runs a shard: the scheduler gives the shard to another worker
(a LocalCluster's nanny also restarts the dead one); after ``executor.allowed_failures``
deaths the run stops with one error line. A shard that raises is retried ``executor.retries``
times, then its error is the run's.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
import uuid
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np

from .config import AuditConfig, EvalConfig, ExecutorConfig
from .data import Dataset
from .errors import GlassBoxError
from .evaluate import (BatchView, ModelEvaluation, ShardResult, evaluate_models, evaluate_shard, merge_shards,
                       n_batches, shard_batches)

__all__ = ["DaskExecutor", "ExecutorError", "LocalExecutor", "ModelRef", "evaluate_shard_task", "explain_task",
           "make_executor", "merge_xai", "portable_dataset", "worker_model", "worker_state", "xai_masks"]

log = logging.getLogger(__name__)


class ExecutorError(GlassBoxError):
    """The Dask scheduler cannot be reached, or a task was lost with the workers that ran it."""


def make_executor(cfg: ExecutorConfig) -> "LocalExecutor | DaskExecutor":
    """The executor ``cfg.kind`` names (not started: use it as a context manager)."""
    return DaskExecutor(cfg) if cfg.kind == "dask" else LocalExecutor(cfg)


def xai_masks(view: BatchView, size: int) -> np.ndarray:
    """The ground-truth masks of a batch at network input size (nearest neighbour), for the XAI targets."""
    import cv2

    return np.stack([cv2.resize(m.astype(np.uint8), (size, size), interpolation=cv2.INTER_NEAREST)
                     for m in view.masks]).astype(bool)


class LocalExecutor:
    """Everything in this process, one batch after another."""

    kind = "local"

    def __init__(self, cfg: ExecutorConfig | None = None):
        self.cfg = cfg or ExecutorConfig()

    def __enter__(self) -> "LocalExecutor":
        return self

    def __exit__(self, *exc) -> None:
        return None

    def close(self) -> None:
        return None

    def evaluate(self, models: list, ds: Dataset, input_size: int, cfg: EvalConfig,
                 partition: str = "test") -> list[ModelEvaluation]:
        return evaluate_models(models, ds, input_size, cfg, partition)

    def explain(self, models: list, views: list[BatchView], cfg: AuditConfig) -> dict[int, Any]:
        """Every configured explanation for every variant on each selected batch."""
        from .xai import explain_batch

        out = {}
        for view in views:
            t0 = time.perf_counter()
            out[view.index] = explain_batch(
                {m.name: m.model for m in models}, view.x, xai_masks(view, cfg.model.input_size), cfg.xai,
                image_ids=view.ids, cache_dir=cfg.xai.cache_dir or None,
                progress=lambda msg, b=view.index: log.info("xai batch %d: %s", b, msg))
            log.info("xai: batch %d explained in %.1f s", view.index, time.perf_counter() - t0)
        return out


# --- the worker side: what a Dask task runs --------------------------------------------------


@dataclasses.dataclass(frozen=True)
class ModelRef:
    """A stored model as a worker finds it: absolute path and the card that vouches for the file."""

    name: str
    key: str
    path: str
    card: dict
    input_size: int

    @property
    def sha256(self) -> str:
        return self.card["sha256"]

    @classmethod
    def of(cls, stored: Any, input_size: int) -> "ModelRef":
        path = getattr(stored, "path", None)
        if path is None or not getattr(stored, "card", None):
            raise ExecutorError(f"model {stored.name!r} is not in the model store: Dask workers load models "
                                "from the store by path and hash")
        return cls(stored.name, stored.key, str(Path(path).resolve()), dict(stored.card), input_size)


_MODELS: "OrderedDict[str, Any]" = OrderedDict()  # weights sha256 -> keras model, per worker process
_MAX_MODELS = 16  # a fleet of many audits would otherwise keep every model it ever met
_STATE = {"loads": 0, "setup": False}


def _setup_worker(tf_threads: int) -> None:
    """Once per process, before TensorFlow starts: quiet logs, small thread pools."""
    if _STATE["setup"]:
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf

    if tf_threads:
        try:
            tf.config.threading.set_intra_op_parallelism_threads(tf_threads)
            tf.config.threading.set_inter_op_parallelism_threads(tf_threads)
        except RuntimeError:  # TensorFlow already ran in this process: keep its pools
            pass
    logging.getLogger("tensorflow").setLevel(logging.ERROR)
    logging.getLogger("absl").setLevel(logging.ERROR)
    _STATE["setup"] = True


def worker_model(ref: ModelRef) -> Any:
    """The stored model ``ref`` names, loaded once per process (safe mode, hash checked) and cached by hash."""
    from .models import StoredModel, load_model

    model = _MODELS.get(ref.sha256)
    if model is None:
        stored = load_model(StoredModel(ref.name, ref.key, Path(ref.path), dict(ref.card)), ref.input_size)
        if stored.sha256 != ref.sha256:  # replaced on disk since the main process read it: not the same model
            from .errors import ModelError

            raise ModelError(f"{ref.path}: sha256 {stored.sha256[:12]} is not the {ref.sha256[:12]} this run evaluates")
        model = stored.model
        _MODELS[ref.sha256] = model
        _STATE["loads"] += 1
        while len(_MODELS) > _MAX_MODELS:
            _MODELS.popitem(last=False)
    _MODELS.move_to_end(ref.sha256)
    return StoredModel(ref.name, ref.key, Path(ref.path), dict(ref.card), model)


def worker_state() -> dict[str, Any]:
    """This process's id, the hashes of the models it holds and how many loads it made (for tests)."""
    return {"pid": os.getpid(), "models": list(_MODELS), "loads": _STATE["loads"]}


def evaluate_shard_task(refs: list[ModelRef], ds: Dataset, input_size: int, cfg: EvalConfig,
                        batches: list[int], partition: str, tf_threads: int) -> ShardResult:
    """One Dask task: evaluate every model on some batches of the partition."""
    _setup_worker(tf_threads)
    models = [worker_model(r) for r in refs]
    return evaluate_shard(models, ds, input_size, cfg, batches, partition, progress=False)


def explain_task(ref: ModelRef, x: np.ndarray, masks: np.ndarray, ids: list[str], settings: Any,
                 cache_dir: str, tf_threads: int) -> Any:
    """One Dask task: every configured explanation of one variant on one batch (an XaiResult of one model)."""
    _setup_worker(tf_threads)
    from .xai import explain_batch

    stored = worker_model(ref)
    return explain_batch({ref.name: stored.model}, x, masks, settings, image_ids=ids, cache_dir=cache_dir or None)


def merge_xai(parts: list[Any]) -> Any:
    """One batch's results of single-variant tasks, in variant order, as the XaiResult
    :func:`~glassbox_audit.xai.explain_batch` gives for all variants at once."""
    from .xai import XaiResult

    first = parts[0]
    out = XaiResult([], list(first.image_ids), first.settings)
    for p in parts:
        out.models += p.models
        for k, per in p.maps.items():
            out.maps.setdefault(k, {}).update(per)
        for k, v in p.params.items():
            out.params.setdefault(k, v)
        out.targets.update(p.targets)
        out.completeness.update(p.completeness)
        out.curves += p.curves
        out.randomisation += p.randomisation
        for k, per in p.timings.items():
            out.timings.setdefault(k, {}).update(per)
        out.notes += p.notes
        out.cached += p.cached
    return out


def portable_dataset(ds: Dataset, partition: str) -> Dataset:
    """The dataset as a worker needs it: one partition's pairs with absolute paths, no file list."""
    samples = [dataclasses.replace(s, image=Path(s.image).resolve(), mask=Path(s.mask).resolve())
               for s in ds.samples[partition]]
    return dataclasses.replace(ds, samples={partition: samples}, files=[], skipped=[], notes=[])


# --- the main side ------------------------------------------------------------------------------


class DaskExecutor:
    """Shards of the test set and XAI tasks on a Dask cluster: a running scheduler at
    ``cfg.scheduler``, or a LocalCluster of ``cfg.n_workers`` processes, one thread each.

    ``shard_task`` is the function each shard runs (:func:`evaluate_shard_task`); tests
    replace it to make a worker die mid-shard.
    """

    kind = "dask"
    shard_task = staticmethod(evaluate_shard_task)

    def __init__(self, cfg: ExecutorConfig | None = None):
        self.cfg = cfg or ExecutorConfig(kind="dask")
        self.client = None
        self.cluster = None
        self._warming: list = []

    # lifecycle
    def __enter__(self) -> "DaskExecutor":
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def start(self) -> None:
        try:
            from distributed import Client, LocalCluster
        except ImportError:
            raise ExecutorError("executor.kind = 'dask' needs the distributed package "
                                "(pip install 'distributed==2026.8.0')") from None
        if not log.isEnabledFor(logging.DEBUG):  # the scheduler's and nannies' chatter; warnings stay
            logging.getLogger("distributed").setLevel(logging.WARNING)
        c = self.cfg
        if c.scheduler:
            try:
                self.client = Client(c.scheduler, timeout=c.connect_timeout, set_as_default=False)
            except (OSError, TimeoutError) as exc:
                raise ExecutorError(f"dask scheduler {c.scheduler}: cannot connect within "
                                    f"{c.connect_timeout:g} s ({type(exc).__name__}: {exc})") from None
            log.info("executor: dask scheduler %s, %d worker thread(s)", c.scheduler, self.nthreads())
        else:
            t0 = time.perf_counter()
            env = {"TF_CPP_MIN_LOG_LEVEL": "2"}
            if c.tf_threads:
                env["OMP_NUM_THREADS"] = str(c.tf_threads)
            self.cluster = LocalCluster(n_workers=c.n_workers, threads_per_worker=1, processes=True,
                                        dashboard_address=None, env=env,
                                        scheduler_kwargs={"allowed_failures": c.allowed_failures})
            self.client = Client(self.cluster, set_as_default=False)
            log.info("executor: dask LocalCluster %s, %d worker process(es) started in %.1f s",
                     self.cluster.scheduler_address, c.n_workers, time.perf_counter() - t0)
        # TensorFlow starts in every worker now, while this process reads the data and loads
        # or trains the models. Kept until close: a dropped future would cancel its task.
        self._warming = [self.client.submit(_setup_worker, c.tf_threads, workers=[w], allow_other_workers=True,
                                            pure=False, key=f"warm-up-{uuid.uuid4().hex[:8]}-{k}")
                         for k, w in enumerate(self.client.scheduler_info()["workers"])]

    def close(self) -> None:
        self._warming = []
        if self.client is not None:
            self.client.close()
            self.client = None
        if self.cluster is not None:
            try:
                self.cluster.close()
            except KeyError as exc:
                # distributed's SpecCluster forgets a worker that was killed mid-task and then
                # fails to close it by name; the local processes are gone either way.
                log.warning("dask: local cluster closed with an error (%s: %s)", type(exc).__name__, exc)
            self.cluster = None

    @property
    def address(self) -> str:
        return self.client.scheduler.address if self.client is not None else ""

    def nthreads(self) -> int:
        return sum(self.client.nthreads().values()) if self.client is not None else 0

    # work
    def _gather(self, futures: list, what: str) -> list:
        from distributed import KilledWorker

        try:
            return self.client.gather(futures)
        except KilledWorker as exc:
            raise ExecutorError(f"dask: {what}: a task was lost with {exc.allowed_failures + 1} workers that died "
                                f"running it (last {exc.last_worker.address}); nothing was written") from None
        finally:
            pending = [f for f in futures if not f.done()]
            if pending:  # the run stops: leave no work behind on a shared cluster
                self.client.cancel(pending)

    def evaluate(self, models: list, ds: Dataset, input_size: int, cfg: EvalConfig,
                 partition: str = "test") -> list[ModelEvaluation]:
        """The partition in contiguous shards of batches over the workers, merged in batch order."""
        if self.client is None:
            raise ExecutorError("dask executor used before start()")
        refs = [ModelRef.of(m, input_size) for m in models]
        total = n_batches(ds, cfg, partition)
        shards = shard_batches(total, self.cfg.shards or 2 * max(1, self.nthreads()))
        portable = portable_dataset(ds, partition)
        token = uuid.uuid4().hex[:8]
        t0 = time.perf_counter()
        futures = [self.client.submit(self.shard_task, refs, portable, input_size, cfg, batches, partition,
                                      self.cfg.tf_threads, key=f"evaluate-shard-{token}-{i}", pure=False,
                                      retries=self.cfg.retries)
                   for i, batches in enumerate(shards)]
        results = self._gather(futures, f"evaluating {len(shards)} shard(s) of {total} batch(es)")
        log.info("executor: %d batch(es) evaluated in %d shard(s) on %d worker thread(s) in %.1f s",
                 total, len(shards), self.nthreads(), time.perf_counter() - t0)
        got = sorted(b for r in results for b in r.batches)
        if got != list(range(total)):  # a lost or doubled batch must never reach the database
            raise ExecutorError(f"dask: the shards returned batches {got[:10]}..., expected 0..{total - 1}")
        return merge_shards(models, results, cfg)

    def explain(self, models: list, views: list[BatchView], cfg: AuditConfig) -> dict[int, Any]:
        """One task per (selected batch, variant); each batch's results merged in variant order."""
        if not views:
            return {}
        refs = [ModelRef.of(m, cfg.model.input_size) for m in models]
        # The same cache folder as a local run (on a cluster: where the workers see that path)
        cache_dir = str(Path(cfg.xai.cache_dir).resolve()) if cfg.xai.cache_dir else ""
        token = uuid.uuid4().hex[:8]
        t0 = time.perf_counter()
        futures: dict[int, list] = {}
        for view in views:
            masks = xai_masks(view, cfg.model.input_size)
            futures[view.index] = [
                self.client.submit(explain_task, ref, view.x, masks, list(view.ids), cfg.xai, cache_dir,
                                   self.cfg.tf_threads, key=f"explain-{token}-b{view.index}-m{k}", pure=False,
                                   retries=self.cfg.retries)
                for k, ref in enumerate(refs)]
        flat = [f for fs in futures.values() for f in fs]
        results = iter(self._gather(flat, f"explaining {len(views)} batch(es) x {len(refs)} variant(s)"))
        out = {index: merge_xai([next(results) for _ in fs]) for index, fs in futures.items()}
        log.info("executor: %d xai task(s) done in %.1f s", len(flat), time.perf_counter() - t0)
        return out

