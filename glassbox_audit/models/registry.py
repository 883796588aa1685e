"""The model store: trained models on disk, found again by the hash of what made them.

Each model lives in ``<models_dir>/<name>-<key[:12]>/`` as ``model.keras`` plus
``card.json`` (architecture, loss, hyperparameters, data fingerprint, history, training
time, hardware and the sha256 of ``model.keras``). The key hashes the model and training
settings, the loss and the training data fingerprint, so a change to any of them trains a
new model, and an unchanged audit loads the stored one.

Models load with ``safe_mode=True`` (no arbitrary code) and are refused when the file's
hash differs from its card, the weights hold NaN or the input size differs from the config.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..config import config_hash
from ..data.imageio import sha256_file
from ..errors import ModelError

__all__ = ["StoredModel", "find_model", "latest_by_name", "load_model", "model_key", "save_model"]

log = logging.getLogger(__name__)

# Bump when the meaning of a stored model changes (builder, preprocessing), so old
# models are not loaded for new settings.
MODEL_FORMAT = 2


@dataclass
class StoredModel:
    name: str  # variant name, or "base"
    key: str
    path: Path  # the model.keras file
    card: dict[str, Any]
    model: Any = None  # the keras.Model once loaded

    @property
    def sha256(self) -> str:
        return self.card["sha256"]


def model_key(name: str, settings: dict[str, Any], train_fingerprint: str) -> str:
    """Hash of everything that determines a trained model's weights."""
    return config_hash({"format": MODEL_FORMAT, "name": name, "settings": settings,
                        "data": train_fingerprint})


def _folder(models_dir: Path, name: str, key: str) -> Path:
    return models_dir / f"{name}-{key[:12]}"


def find_model(models_dir: Path, name: str, key: str) -> StoredModel | None:
    """The stored model for this key, or None (the card's key must match in full)."""
    folder = _folder(models_dir, name, key)
    card_path = folder / "card.json"
    if not card_path.exists():
        return None
    try:
        card = json.loads(card_path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise ModelError(f"{card_path}: unreadable model card ({exc})") from None
    if card.get("key") != key:
        return None
    return StoredModel(name, key, folder / "model.keras", card)


def latest_by_name(models_dir: Path, name: str) -> StoredModel | None:
    """The most recently created stored model called ``name``, whatever data trained it
    (for evaluating stored models on another dataset)."""
    best = None
    for card_path in Path(models_dir).glob(f"{name}-*/card.json"):
        try:
            card = json.loads(card_path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            raise ModelError(f"{card_path}: unreadable model card ({exc})") from None
        if card.get("name") == name and (best is None or card.get("created", "") > best.card.get("created", "")):
            best = StoredModel(name, card["key"], card_path.parent / "model.keras", card)
    return best


def load_model(stored: StoredModel, input_size: int | None = None) -> StoredModel:
    """Load the Keras model of ``stored`` safely and check it against its card."""
    import keras

    path = stored.path
    if not path.exists():
        raise ModelError(f"{path}: model file missing (its card is in {path.parent})")
    actual = sha256_file(path)
    if actual != stored.card.get("sha256"):
        stored = _replaced_whole(stored, actual)
    if actual != stored.card.get("sha256"):
        raise ModelError(f"{path}: sha256 {actual[:12]} does not match its card ({str(stored.card.get('sha256'))[:12]}); the file was changed or corrupted")
    # Safe mode always, except for an external model its user chose to load unsafely
    # (--unsafe-load, recorded in its card and printed in red in the dossier).
    safe = not stored.card.get("external", {}).get("unsafe_load", False)
    try:
        model = keras.saving.load_model(path, compile=False, safe_mode=safe)
    except Exception as exc:  # keras raises many types for corrupt or unsafe files
        raise ModelError(f"{path}: cannot load model safely ({type(exc).__name__}: {exc})") from None
    if input_size is not None and tuple(model.input_shape[1:3]) != (input_size, input_size):
        raise ModelError(f"{path}: model input is {model.input_shape[1:3]}, config says model.input_size = {input_size}")
    for w in model.weights:
        if not np.all(np.isfinite(np.asarray(w))):
            raise ModelError(f"{path}: weight {w.path} contains NaN or infinite values")
    stored.model = model
    return stored


def _replaced_whole(stored: StoredModel, actual: str) -> StoredModel:
    """The model on disk when another run saved the same key after ``stored`` was read
    (two runs training at once): its own card, on disk beside it, vouches for the file.
    Otherwise ``stored`` unchanged, and the hash check refuses the file."""
    try:
        card = json.loads((stored.path.parent / "card.json").read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return stored
    if card.get("key") == stored.key and card.get("sha256") == actual and card != stored.card:
        log.info("models: %s was stored again by another run; using that copy", stored.path.parent.name)
        return StoredModel(stored.name, stored.key, stored.path, card)
    return stored


def save_model(models_dir: Path, name: str, key: str, model: Any, card: dict[str, Any],
               epoch_log: Path | None = None) -> StoredModel:
    """Write model and card to a temporary folder, then rename it into place.

    ``epoch_log``: the per-epoch CSV written during training, kept as ``training_log.csv``.
    """
    models_dir.mkdir(parents=True, exist_ok=True)
    final = _folder(models_dir, name, key)
    if getattr(model, "optimizer", None) is not None:
        # The stored file is for inference and audits: the optimizer's state (Adam's two
        # moments, twice the size of the weights) would triple it and serve no one.
        import keras

        # From the architecture alone: clone_model would also rebuild the compile config,
        # whose loss is a plain function Keras cannot look up by name.
        bare = keras.Model.from_config(model.get_config())
        bare.set_weights(model.get_weights())
        model = bare
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.tmp-", dir=models_dir))
    try:
        model.save(tmp / "model.keras")
        if epoch_log is not None and epoch_log.exists():
            shutil.copyfile(epoch_log, tmp / "training_log.csv")
        card = dict(card, name=name, key=key, sha256=sha256_file(tmp / "model.keras"))
        (tmp / "card.json").write_text(json.dumps(card, indent=2, sort_keys=True, default=str), encoding="utf-8")
        # An existing folder (a stale card, a retrain, or another run that trained the same
        # key at the same time) is moved aside and replaced in two renames, so a reader never
        # finds a half-deleted folder.
        for _ in range(5):
            old = None
            if final.exists():
                old = Path(tempfile.mkdtemp(prefix=f".{final.name}.old-", dir=models_dir))
                os.rename(final, old / "model")
            try:
                os.rename(tmp, final)
            except OSError as exc:  # another run renamed its copy in between: try again
                if exc.errno not in (errno.EEXIST, errno.ENOTEMPTY):
                    raise
                continue
            finally:
                if old is not None:
                    shutil.rmtree(old, ignore_errors=True)
            break
        else:
            raise ModelError(f"{final}: could not be replaced (other runs keep storing it)")
        if epoch_log is not None:
            epoch_log.unlink(missing_ok=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log.info("models: saved %s to %s", name, final)
    return StoredModel(name, key, final / "model.keras", card, model)
