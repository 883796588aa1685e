"""Training: a base model, then a short fine-tune per variant, each stored by hash.

``obtain_models`` is what the pipeline calls: for each variant it loads the stored model
whose key matches the settings and training data, or trains it (``mode`` ``auto``), always
trains (``always``), or refuses (``never``). Training resumes from per-epoch backups after
an interruption, with the epoch history, the best epoch so far and its weights, so a resumed
fit keeps the same model and the card the whole history a fit without the interruption would.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import platform
import shutil
import time
import warnings
import weakref
from pathlib import Path
from typing import Any

import numpy as np

from ..config import AuditConfig, LossConfig, TrainConfig
from ..data import Dataset, load_arrays
from ..errors import ModelError
from .registry import StoredModel, find_model, latest_by_name, load_model, model_key, save_model

__all__ = ["fit", "learning_rate_schedule", "model_keys", "obtain_models"]

log = logging.getLogger(__name__)


def _hardware() -> dict[str, Any]:
    return {"machine": platform.machine(), "processor": platform.processor() or platform.machine(),
            "cpus": os.cpu_count(), "system": platform.system(), "python": platform.python_version()}


def _datasets(x: np.ndarray, y: np.ndarray, batch: int, augment, seed: int, training: bool,
              batched: bool = False):
    """``augment`` maps one sample, or (``batched``) one whole batch."""
    import tensorflow as tf

    ds = tf.data.Dataset.from_tensor_slices((x, y))
    if training:
        ds = ds.shuffle(len(x), seed=seed, reshuffle_each_iteration=True)
    ds = ds.map(lambda a, b: (tf.cast(a, tf.float32) / 255.0, b), num_parallel_calls=tf.data.AUTOTUNE)
    if training and augment is not None and not batched:
        ds = ds.map(augment, num_parallel_calls=tf.data.AUTOTUNE)
    ds = ds.batch(batch)
    if training and augment is not None and batched:
        ds = ds.map(augment, num_parallel_calls=tf.data.AUTOTUNE)
    return ds.prefetch(tf.data.AUTOTUNE)


def learning_rate_schedule(train_cfg: TrainConfig | None, lr: float, epochs: int, steps: int, schedule: str):
    """The learning rate per step: ``lr`` (plateau: halved by a callback), or cosine decay to
    ``final_lr_fraction`` of it after ``warmup_epochs`` of linear warm-up from ``lr / 100``.
    ``train_cfg`` None: the defaults (cosine to 1/20, no warm-up: the schedule before these settings)."""
    import keras

    if schedule != "cosine":
        return lr
    t = train_cfg or TrainConfig()
    warm = int(round(t.warmup_epochs * steps))
    return keras.optimizers.schedules.CosineDecay(
        lr / 100 if warm else lr, decay_steps=max(1, epochs * steps - warm),
        alpha=t.final_lr_fraction, warmup_target=lr if warm else None, warmup_steps=warm)


def _optimizer(train_cfg: TrainConfig | None, rate: Any):
    import keras

    t = train_cfg or TrainConfig()
    if t.optimizer == "adamw":
        return keras.optimizers.AdamW(rate, weight_decay=t.weight_decay)
    return keras.optimizers.Adam(rate)


class _LogEpochs:
    """Keras callback: one log line per epoch and a progress bar over epochs."""

    def __new__(cls, label: str, epochs: int):
        import keras
        from tqdm import tqdm

        class Cb(keras.callbacks.Callback):
            def on_train_begin(self, logs=None):
                self.bar = tqdm(total=epochs, desc=f"training {label}", unit="epoch", disable=None, leave=False)

            def on_epoch_end(self, epoch, logs=None):
                logs = logs or {}
                log.info("train %s epoch %d/%d: %s", label, epoch + 1, epochs,
                         " ".join(f"{k}={float(v):.4f}" for k, v in sorted(logs.items())))
                self.bar.update(1)

            def on_train_end(self, logs=None):
                self.bar.close()

        return Cb()


class History(dict):
    """A fit's history (metric name to one value per epoch, every epoch of the fit, resumed
    ones included) with each epoch's wall seconds and the number of interruptions resumed."""

    def __init__(self, rows: list[dict[str, float]], calls: int):
        keys = [k for row in rows for k in row if k not in ("epoch", "seconds", "call")]
        super().__init__({k: [float(r[k]) for r in rows if k in r] for k in dict.fromkeys(keys)})
        self.epoch_seconds = [float(r["seconds"]) for r in rows]
        self.interruptions = calls - 1
        # Wall seconds of the epochs run by the calls before the last (the last call's are in
        # its own wall time, with its set-up).
        self.earlier_seconds = float(sum(r["seconds"] for r in rows if r.get("call", calls) < calls))


class _BestEpoch:
    """Keras callback: keep the weights of the epoch with the best validation Dice, stop after
    ``patience`` epochs without a better one, and record every epoch; all of it is written to
    ``folder`` after each epoch. Keras's EarlyStopping keeps its best weights in memory only: a
    fit resumed after an interruption would forget the best epoch before it, and its history
    would start at the resumed epoch."""

    def __new__(cls, folder: Path, patience: int):
        import keras

        # The model's weights alone, as EarlyStopping restores them: a .weights.h5 file would
        # carry the optimizer's state (its step count) back to the best epoch too.
        state_file, best_file = folder / "state.json", folder / "best_weights.npz"

        class Cb(keras.callbacks.Callback):
            def on_train_begin(self, logs=None):
                folder.mkdir(parents=True, exist_ok=True)
                if state_file.exists():
                    self.state = json.loads(state_file.read_text())
                    self.state["calls"] += 1
                else:
                    self.state = {"rows": [], "best": None, "wait": 0, "calls": 1}

            def on_epoch_begin(self, epoch, logs=None):
                # Rows of this epoch or later were written by a fit killed before the backup of
                # that epoch was: it is run again, and its new row replaces the old one.
                self.state["rows"] = [r for r in self.state["rows"] if r["epoch"] < epoch]
                self.started = time.perf_counter()

            def on_epoch_end(self, epoch, logs=None):
                logs = logs or {}
                self.state["rows"].append({"epoch": epoch, "seconds": time.perf_counter() - self.started,
                                           "call": self.state["calls"], **{k: float(v) for k, v in logs.items()}})
                value = logs.get("val_dice")
                if value is not None and (self.state["best"] is None or float(value) > self.state["best"]):
                    tmp = folder / ".best.tmp.npz"
                    with open(tmp, "wb") as fh:
                        np.savez(fh, *self.model.get_weights())
                    os.replace(tmp, best_file)
                    self.state.update(best=float(value), wait=0)
                else:
                    self.state["wait"] += 1
                    if self.state["wait"] >= patience:
                        self.model.stop_training = True
                tmp = folder / ".state.tmp.json"
                tmp.write_text(json.dumps(self.state))
                os.replace(tmp, state_file)

            def on_train_end(self, logs=None):
                if best_file.exists():
                    with np.load(best_file) as saved:
                        self.model.set_weights([saved[f"arr_{i}"] for i in range(len(saved.files))])

            def history(self) -> History:
                return History(self.state["rows"], self.state["calls"])

        return Cb()


# A model's compiled training state: the loss whose settings are variables, and what the
# optimizer was built with. Fits of one model object with the same optimizer settings (the base
# and each variant fine-tuned from it, with the plateau schedule; the variants alone with the
# cosine one) reuse its traced train step.
_COMPILED: "weakref.WeakKeyDictionary[Any, tuple[tuple, Any, Any]]" = weakref.WeakKeyDictionary()


def _optimizer_settings(train_cfg: TrainConfig | None, lr: float, epochs: int, steps: int, schedule: str) -> tuple:
    t = train_cfg or TrainConfig()
    if schedule != "cosine":  # a constant rate (halved on plateaus): assigned per fit
        return ("plateau", t.optimizer, t.weight_decay)
    return ("cosine", t.optimizer, t.weight_decay, lr, epochs, steps, t.warmup_epochs, t.final_lr_fraction)


def _prepare(model, loss_cfg: LossConfig, train_cfg: TrainConfig | None, lr: float, epochs: int, steps: int,
             schedule: str) -> None:
    """Compile ``model`` for this fit, or reuse its compiled step: the loss settings assigned, the
    optimizer's state set back to a fresh one's (zero moments, step 0, the rate ``lr``)."""
    import keras

    from .losses import LossWeights, dice_coefficient

    settings = _optimizer_settings(train_cfg, lr, epochs, steps, schedule)
    known = _COMPILED.get(model)
    # Reused only while the model still holds what this function compiled into it: a caller
    # that compiled it again in between would otherwise train with its loss, not loss_cfg.
    if (known is not None and known[0] == settings and model.loss is known[1]
            and model.optimizer is not None and model.optimizer is known[2]):
        known[1].assign(loss_cfg)
        for v in model.optimizer.variables:
            v.assign(np.zeros(tuple(v.shape), dtype=v.dtype))
        if schedule != "cosine":
            model.optimizer.learning_rate = lr
        return
    loss = LossWeights(loss_cfg)
    rate = learning_rate_schedule(train_cfg, lr, epochs, steps, schedule)
    model.compile(optimizer=_optimizer(train_cfg, rate), loss=loss, metrics=[dice_coefficient], jit_compile=False)
    _COMPILED[model] = (settings, loss, model.optimizer)


def fit(model, loss_cfg: LossConfig, data: dict[str, np.ndarray], *, epochs: int, lr: float,
        batch_size: int, patience: int, augment, seed: int, backup_dir: Path, label: str,
        schedule: str = "plateau", epoch_log: Path | None = None,
        extra_callbacks: list | None = None, train_cfg: TrainConfig | None = None,
        batched_augment: bool = False) -> History:
    """Train ``model`` in place with early stopping on validation Dice, ending with the weights
    of the best epoch; return the history of every epoch of the fit (after a resume, the
    epochs before the interruption too).

    ``epoch_log``: a CSV file that gets one row per finished epoch (appended on resume).
    ``train_cfg``: a :class:`~glassbox_audit.config.TrainConfig` for the optimizer (Adam or
    AdamW), the warm-up and the end of the cosine decay; None: Adam, cosine to 1/20.
    Fitting the same model object again (a variant from the base weights) reuses its compiled
    train step when the optimizer settings match, with a fresh optimizer state.
    """
    import keras

    steps = -(-len(data["x_train"]) // batch_size)
    _prepare(model, loss_cfg, train_cfg, lr, epochs, steps, schedule)
    train = _datasets(data["x_train"], data["y_train"], batch_size, augment, seed, True, batched_augment)
    val = _datasets(data["x_val"], data["y_val"], batch_size, None, seed, False)
    best_dir = backup_dir.with_name(backup_dir.name + ".best")
    if not backup_dir.exists():  # nothing to resume: a best epoch left by another fit is not this one's
        shutil.rmtree(best_dir, ignore_errors=True)
    best = _BestEpoch(best_dir, patience)
    callbacks = [
        # Extra callbacks first: one that ends the fit at an epoch's end (a test's power cut)
        # acts before this epoch is recorded anywhere, as a kill would.
        *(extra_callbacks or []),
        # Recorded before the backup below: a kill between the two leaves a row of an epoch
        # that is then run again, which replaces it; the other order would lose the row.
        best,
        # Resume from the last finished epoch if a previous run was interrupted (the
        # optimizer's step count is restored too, so a cosine schedule carries on).
        keras.callbacks.BackupAndRestore(str(backup_dir), delete_checkpoint=True),
        _LogEpochs(label, epochs),
    ]
    if schedule == "plateau":
        callbacks.append(keras.callbacks.ReduceLROnPlateau(monitor="val_loss", factor=0.5,
                                                           patience=max(2, patience // 2), min_lr=lr / 32))
    if epoch_log is not None:
        epoch_log.parent.mkdir(parents=True, exist_ok=True)
        callbacks.append(keras.callbacks.CSVLogger(str(epoch_log), append=True))
    # BackupAndRestore tells a resumed fit where to start through the model's _initial_epoch, and
    # Keras's fit prefers it to its own argument, for every later fit of the model too: a variant
    # fine-tuned on the object of a resumed base would start at the base's resumed epoch, past
    # its own last, and train nothing. Each fit starts at 0 unless its own backup says otherwise.
    model._initial_epoch = None
    with warnings.catch_warnings():
        # Keras warns that shuffle is ignored for a tf.data input; the dataset shuffles itself.
        warnings.filterwarnings("ignore", message=".*shuffle.*")
        model.fit(train, validation_data=val, epochs=epochs, callbacks=callbacks, verbose=0)
    history = best.history()
    shutil.rmtree(best_dir, ignore_errors=True)
    return history


def _card(cfg: AuditConfig, name: str, description: str, loss: LossConfig, model, ds: Dataset,
          history: History | dict, seconds: float, epochs: int, lr: float, base_key: str | None) -> dict[str, Any]:
    import keras
    import tensorflow as tf

    val_dice = history.get("val_dice", [])
    return {
        "schema_version": 1,
        "description": description,
        "architecture": {"type": "Attention U-Net", **dataclasses.asdict(cfg.model),
                         "parameters": int(model.count_params()), "layers": len(model.layers),
                         "output": "logits (apply a sigmoid for probabilities)"},
        "loss": dataclasses.asdict(loss),
        "hyperparameters": {"max_epochs": epochs, "learning_rate": lr, "batch_size": cfg.train.batch_size,
                            "patience": cfg.train.patience, "seed": cfg.train.seed,
                            "optimizer": ("AdamW" if cfg.train.optimizer == "adamw" else "Adam"),
                            "weight_decay": cfg.train.weight_decay if cfg.train.optimizer == "adamw" else 0.0,
                            "lr_schedule": (f"{cfg.train.warmup_epochs:g} warm-up epochs, then " if
                                            cfg.train.lr_schedule == "cosine" and cfg.train.warmup_epochs else "")
                            + (f"cosine decay to {cfg.train.final_lr_fraction:g} of the rate over the planned epochs"
                               if cfg.train.lr_schedule == "cosine" else "halve on validation-loss plateau"),
                            "augmentation": dataclasses.asdict(cfg.train.augment)},
        "data": {"layout": ds.layout, "description": ds.description,
                 "train_fingerprint": ds.fingerprint(("train", "val")),
                 "counts": {p: n for p, n in ds.counts.items() if p != "test"}},
        "history": history,
        "epochs_run": len(history.get("loss", [])),
        "best_epoch": int(np.argmax(val_dice)) + 1 if val_dice else None,
        "best_val_dice": float(max(val_dice)) if val_dice else None,
        # Wall seconds of this call, plus those of the epochs run before an interruption.
        "training_seconds": round(seconds + getattr(history, "earlier_seconds", 0.0), 1),
        # The median epoch: the first epoch of a fit also traces the train step.
        "seconds_per_epoch": (round(float(np.median(history.epoch_seconds)), 1)
                              if getattr(history, "epoch_seconds", None) else None),
        "epoch_seconds": [round(t, 2) for t in getattr(history, "epoch_seconds", [])],
        "interruptions_resumed": getattr(history, "interruptions", 0),
        "hardware": _hardware(),
        "base_model": base_key,
        "keras_version": keras.__version__,
        "tensorflow_version": tf.__version__,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def _finetune_settings(train_cfg: TrainConfig) -> TrainConfig:
    """A fine-tune starts from trained weights: the same optimizer, no warm-up."""
    return dataclasses.replace(train_cfg, warmup_epochs=0.0)


def model_keys(cfg: AuditConfig, ds: Dataset) -> tuple[str, dict[str, str]]:
    """The store keys of the base model and of each variant: hashes of every setting that
    changes what training produces (model, training, the data settings that change what the
    network sees) and of the training data itself."""
    train_fp = ds.fingerprint(("train", "val"))
    shared = {"model": dataclasses.asdict(cfg.model),
              "train": {k: v for k, v in dataclasses.asdict(cfg.train).items() if k != "mode"},
              "data": cfg.data.network_view()}
    base_key = model_key("base", shared, train_fp)
    return base_key, {v.name: model_key(v.name, {**shared, "loss": dataclasses.asdict(v.loss), "base": base_key},
                                        train_fp) for v in cfg.variants}


def obtain_models(cfg: AuditConfig, ds: Dataset, models_dir: Path | None = None) -> list[StoredModel]:
    """Load or train one model per variant (in config order), per ``cfg.train.mode``."""
    models_dir = Path(models_dir or cfg.models_dir)
    mode = cfg.train.mode
    base_key, keys = model_keys(cfg, ds)

    found = {name: (find_model(models_dir, name, key) if mode != "always" else None)
             for name, key in keys.items()}
    missing = [name for name, m in found.items() if m is None]
    if missing and mode == "never":
        # Never training means "use what is stored": models trained on other data (another
        # copy or resolution of the same collection, a shipped model) are used by name, said
        # loudly, and their cards, with the data fingerprint that trained them, go into the
        # dossier like any other.
        for name in missing:
            other = latest_by_name(models_dir, name)
            if other is not None and other.card.get("architecture", {}).get("input_size") == cfg.model.input_size:
                log.warning("models: no stored %s matches this configuration and training data (key %s); "
                            "using the stored %s trained on data %s (--train never)", name, keys[name][:12],
                            other.path.parent.name, str(other.card.get("data", {}).get("train_fingerprint"))[:16])
                found[name] = other
        missing = [name for name, m in found.items() if m is None]
    if missing and mode == "never":
        raise ModelError(
            f"{models_dir}: no stored model for variant(s) {', '.join(missing)} matching this "
            "configuration and training data; run with --train auto to train them"
        )
    result: list[StoredModel] = []
    if not missing:
        for v in cfg.variants:
            stored = load_model(found[v.name], cfg.model.input_size)
            log.info("models: loaded stored model %s (%s, sha256 %s) instead of training",
                     v.name, stored.path.parent.name, stored.sha256[:12])
            result.append(stored)
        return result

    import keras

    from ..data.augment import make_augment, make_batch_augment
    from .unet import build_attention_unet

    keras.utils.set_random_seed(cfg.train.seed)
    size = cfg.model.input_size
    x_train, y_train = load_arrays(ds, "train", size)
    x_val, y_val = load_arrays(ds, "val", size)
    data = {"x_train": x_train, "y_train": y_train, "x_val": x_val, "y_val": y_val}
    batched = cfg.train.augment.batched
    augment = (make_batch_augment if batched else make_augment)(cfg.train.augment, size)
    backups = models_dir / ".backup"

    trainer: list = []

    def build():
        """The one model object every fit of this run trains: the base, then each variant from
        the base weights, so the compiled train step is traced once (``fit``)."""
        if not trainer:
            m = cfg.model
            trainer.append(build_attention_unet(size, m.depth, m.base_filters, m.attention_gates,
                                                m.bottleneck_attention, m.norm, m.dropout))
        return trainer[0]

    base = find_model(models_dir, "base", base_key) if mode != "always" else None
    if base is not None:
        base = load_model(base, size)
        log.info("models: loaded stored base model %s", base.path.parent.name)
    else:
        log.info("models: training base model (%d train / %d validation images, %d px)",
                 len(x_train), len(x_val), size)
        model = build()
        start = time.perf_counter()
        history = fit(model, cfg.train.base_loss, data, epochs=cfg.train.epochs, lr=cfg.train.learning_rate,
                      batch_size=cfg.train.batch_size, patience=cfg.train.patience, augment=augment,
                      seed=cfg.train.seed, backup_dir=backups / f"base-{base_key[:12]}", label="base",
                      schedule=cfg.train.lr_schedule, epoch_log=backups / f"base-{base_key[:12]}.csv",
                      train_cfg=cfg.train, batched_augment=batched)
        card = _card(cfg, "base", "shared base model, fine-tuned into each variant", cfg.train.base_loss,
                     model, ds, history, time.perf_counter() - start, cfg.train.epochs,
                     cfg.train.learning_rate, None)
        base = load_model(save_model(models_dir, "base", base_key, model, card,
                                     epoch_log=backups / f"base-{base_key[:12]}.csv"), size)

    for v in cfg.variants:
        if found[v.name] is not None:
            result.append(load_model(found[v.name], size))
            log.info("models: loaded stored model %s instead of training", v.name)
            continue
        model = build()  # the architecture, starting from the base weights
        model.set_weights(base.model.get_weights())
        start = time.perf_counter()
        history: dict[str, list[float]] = {}
        if cfg.train.finetune_epochs:
            log.info("models: fine-tuning %s (%s)", v.name, v.description or v.loss.kind)
            history = fit(model, v.loss, data, epochs=cfg.train.finetune_epochs,
                          lr=cfg.train.finetune_learning_rate, batch_size=cfg.train.batch_size,
                          patience=cfg.train.patience, augment=augment, seed=cfg.train.seed,
                          backup_dir=backups / f"{v.name}-{keys[v.name][:12]}", label=v.name,
                          schedule=cfg.train.lr_schedule,
                          epoch_log=backups / f"{v.name}-{keys[v.name][:12]}.csv",
                          train_cfg=_finetune_settings(cfg.train), batched_augment=batched)
        card = _card(cfg, v.name, v.description, v.loss, model, ds, history,
                     time.perf_counter() - start, cfg.train.finetune_epochs,
                     cfg.train.finetune_learning_rate, base_key)
        card["base_history"] = base.card.get("history", {})
        card["base_training_seconds"] = base.card.get("training_seconds")
        card["base_seconds_per_epoch"] = base.card.get("seconds_per_epoch")
        # Use the stored file, not the in-memory model: the first run then evaluates exactly
        # what later runs load (uncompiled, safe-mode loaded, hash-checked).
        result.append(load_model(save_model(models_dir, v.name, keys[v.name], model, card,
                                            epoch_log=backups / f"{v.name}-{keys[v.name][:12]}.csv"), size))
    if backups.exists() and not any(backups.iterdir()):
        shutil.rmtree(backups, ignore_errors=True)
    return result
