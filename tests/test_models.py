"""The Attention U-Net, its losses and the hash-keyed model store."""

import json

import keras
import numpy as np
import pytest
import tensorflow as tf

from glassbox_audit.config import LossConfig
from glassbox_audit.errors import ModelError
from glassbox_audit.models.losses import dice_coefficient, dice_loss, make_loss, tversky_loss
from glassbox_audit.models.registry import find_model, load_model, model_key, save_model
from glassbox_audit.models.unet import build_attention_unet, layer_group


def tiny_unet(size=32, **kw):
    return build_attention_unet(size, depth=2, base_filters=4, **kw)


def test_unet_maps_images_to_logits_of_the_same_size():
    model = tiny_unet()
    out = model(np.random.default_rng(0).random((2, 32, 32, 3), dtype=np.float32))
    assert out.shape == (2, 32, 32, 1)
    assert model.layers[-1].name == "logits"
    assert model.layers[-1].activation.__name__ == "linear"  # logits, not probabilities


def test_layers_are_named_by_group_with_attention_coefficients_exposed():
    model = tiny_unet()
    groups = {layer_group(layer.name) for layer in model.layers} - {None}
    assert groups == {"encoder", "bottleneck", "attention", "decoder", "output"}
    coef = model.get_layer("att1_coef")
    assert coef.output.shape[-1] == 1


def test_attention_and_normalisation_are_switchable():
    plain = tiny_unet(attention_gates=False, bottleneck_attention=False, norm="none", dropout=0.0)
    names = [layer.name for layer in plain.layers]
    assert not any(n.startswith("att") or "norm" in n or "_se_" in n for n in names)
    grouped = tiny_unet(norm="group")
    assert any(isinstance(layer, keras.layers.GroupNormalization) for layer in grouped.layers)


def test_tversky_with_equal_weights_equals_dice():
    rng = np.random.default_rng(1)
    y = (rng.random((2, 8, 8, 1)) > 0.5).astype("float32")
    logits = rng.normal(size=(2, 8, 8, 1)).astype("float32")
    assert float(tversky_loss(y, logits, 0.5, 0.5)) == pytest.approx(float(dice_loss(y, logits)), rel=1e-5)


def test_precision_weighted_loss_punishes_false_positives_more():
    y = np.zeros((1, 8, 8, 1), "float32")
    y[:, :4] = 1
    over = np.where(np.arange(8)[None, :, None, None] < 6, 6.0, -6.0) * np.ones((1, 8, 8, 1), "float32")
    under = np.where(np.arange(8)[None, :, None, None] < 2, 6.0, -6.0) * np.ones((1, 8, 8, 1), "float32")
    precision = make_loss(LossConfig("tversky", alpha=0.7, beta=0.3))
    recall = make_loss(LossConfig("tversky", alpha=0.3, beta=0.7))
    # Over-segmentation (false positives) costs the precision loss more than the recall loss.
    assert float(precision(y, over)) > float(recall(y, over))
    assert float(recall(y, under)) > float(precision(y, under))


def test_hybrid_and_bce_losses_are_finite_and_positive():
    y = np.ones((1, 4, 4, 1), "float32")
    logits = np.zeros((1, 4, 4, 1), "float32")
    for cfg in (LossConfig("hybrid", alpha=0.3, beta=0.7), LossConfig("dice", bce_weight=0.5)):
        value = float(make_loss(cfg)(y, logits))
        assert np.isfinite(value) and value > 0


def test_model_overfits_a_tiny_batch():
    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:32, :32]
    x, y = [], []
    for _ in range(4):
        cy, cx, r = rng.integers(10, 22), rng.integers(10, 22), rng.integers(5, 9)
        m = ((yy - cy) ** 2 + (xx - cx) ** 2 <= r * r).astype("float32")
        img = 0.8 - 0.5 * m[..., None] + rng.normal(0, 0.05, (32, 32, 3))
        x.append(img.astype("float32"))
        y.append(m[..., None])
    x, y = np.stack(x), np.stack(y)
    model = tiny_unet(dropout=0.0)
    model.compile(keras.optimizers.Adam(1e-2), loss=make_loss(LossConfig("dice", bce_weight=0.5)),
                  metrics=[dice_coefficient])
    model.fit(x, y, epochs=60, batch_size=4, verbose=0)
    # Inference mode (batch-norm moving averages), as the audit evaluates.
    assert float(dice_coefficient(y, model.predict(x, verbose=0))) > 0.9


def test_store_round_trip_loads_safely_and_checks_the_hash(tmp_path):
    model = tiny_unet()
    key = model_key("balanced", {"a": 1}, "fp")
    saved = save_model(tmp_path, "balanced", key, model, {"architecture": {"parameters": 1}})
    found = find_model(tmp_path, "balanced", key)
    assert found is not None and found.sha256 == saved.sha256
    loaded = load_model(found, input_size=32)
    x = np.ones((1, 32, 32, 3), "float32")
    np.testing.assert_allclose(loaded.model(x), model(x), atol=1e-6)
    assert find_model(tmp_path, "balanced", model_key("balanced", {"a": 2}, "fp")) is None


def test_store_refuses_changed_files_nan_weights_and_wrong_sizes(tmp_path):
    key = model_key("m", {}, "fp")
    saved = save_model(tmp_path, "m", key, tiny_unet(), {})
    with pytest.raises(ModelError, match="model.input_size = 64"):
        load_model(find_model(tmp_path, "m", key), input_size=64)

    bad = tiny_unet()
    bad.get_layer("logits").kernel.assign(np.full(bad.get_layer("logits").kernel.shape, np.nan, "float32"))
    key2 = model_key("nan", {}, "fp")
    save_model(tmp_path, "nan", key2, bad, {})
    with pytest.raises(ModelError, match="NaN"):
        load_model(find_model(tmp_path, "nan", key2))

    saved.path.chmod(0o644)
    with open(saved.path, "ab") as fh:
        fh.write(b"tampered")
    with pytest.raises(ModelError, match="does not match its card"):
        load_model(find_model(tmp_path, "m", key))


def test_a_lambda_layer_is_refused_by_safe_loading(tmp_path):
    inputs = keras.Input((32, 32, 3))
    model = keras.Model(inputs, keras.layers.Lambda(lambda t: t * 2)(inputs))
    key = model_key("lambda", {}, "fp")
    save_model(tmp_path, "lambda", key, model, {})
    with pytest.raises(ModelError, match="cannot load model safely"):
        load_model(find_model(tmp_path, "lambda", key))
    card = json.loads((tmp_path / f"lambda-{key[:12]}" / "card.json").read_text())
    assert card["key"] == key and len(card["sha256"]) == 64


def test_augmentation_moves_image_and_mask_together():
    from glassbox_audit.config import AugmentConfig
    from glassbox_audit.data.augment import make_augment

    tf.random.set_seed(0)
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:48, :48]
    mask = ((yy - 15) ** 2 + (xx - 30) ** 2 <= 64) | ((yy > 35) & (xx < 12))  # asymmetric shape
    image = np.where(mask[..., None], 0.9, 0.1) + rng.normal(0, 0.01, (48, 48, 3))
    image = image.astype("float32")
    augment = make_augment(AugmentConfig(min_scale=0.6, brightness=0.05, contrast=0.1, hue=0.02), 48)
    changed = 0
    for _ in range(20):
        img, m = augment(tf.constant(image), tf.constant(mask[..., None].astype("float32")))
        from_image = img.numpy().mean(axis=-1) > 0.5
        from_mask = m.numpy()[..., 0] > 0.5
        iou = (from_image & from_mask).sum() / max(1, (from_image | from_mask).sum())
        assert iou > 0.9  # the mask still covers exactly the bright shape of the image
        changed += not np.array_equal(from_mask, mask)
    assert changed >= 10  # and the transforms did move things


def test_batched_augmentation_moves_each_image_and_its_mask_together_and_rotates_freely():
    from glassbox_audit.config import AugmentConfig
    from glassbox_audit.data.augment import make_batch_augment

    tf.random.set_seed(0)
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:48, :48]
    mask = ((yy - 15) ** 2 + (xx - 30) ** 2 <= 64) | ((yy > 35) & (xx < 12))  # asymmetric shape
    image = (np.where(mask[..., None], 0.9, 0.1) + rng.normal(0, 0.01, (48, 48, 3))).astype("float32")
    images = np.repeat(image[None], 16, axis=0)
    masks = np.repeat(mask[None, ..., None].astype("float32"), 16, axis=0)
    cfg = AugmentConfig(batched=True, rotate=180, rot90=False, min_scale=0.7, brightness=0.05, contrast=0.1, hue=0.02)
    img, m = make_batch_augment(cfg, 48)(tf.constant(images), tf.constant(masks))
    assert img.shape == images.shape and m.shape == masks.shape
    from_image = img.numpy().mean(axis=-1) > 0.5
    from_mask = m.numpy()[..., 0] > 0.5
    for a, b in zip(from_image, from_mask):  # every sample: the mask covers the bright shape
        assert (a & b).sum() / max(1, (a | b).sum()) > 0.85
    # Each sample got its own transform, and angles other than right angles occur.
    assert len({mm.tobytes() for mm in from_mask}) == 16
    right_angles = [np.rot90(f, k) for f in (mask, mask[:, ::-1], mask[::-1], mask[::-1, ::-1]) for k in range(4)]
    assert sum(max((x == r).mean() for r in right_angles) < 0.97 for x in from_mask) >= 8


def test_free_rotation_needs_the_batched_augmentation_and_warm_up_a_cosine_schedule():
    from glassbox_audit.config import AugmentConfig, ConfigError, TrainConfig

    with pytest.raises(ConfigError, match="augment.rotate.*batched"):
        AugmentConfig(rotate=30).validate("train.augment")
    with pytest.raises(ConfigError, match="warmup_epochs.*cosine"):
        TrainConfig(warmup_epochs=1).validate("train")
    TrainConfig(lr_schedule="cosine", warmup_epochs=1, optimizer="adamw",
                augment=AugmentConfig(batched=True, rotate=180)).validate("train")


def test_adamw_with_warm_up_follows_the_configured_schedule(tmp_path):
    from glassbox_audit.config import TrainConfig
    from glassbox_audit.models.train import fit, learning_rate_schedule

    model = build_attention_unet(32, 2, 4, True, True, "batch", 0.0)
    cfg = TrainConfig(lr_schedule="cosine", warmup_epochs=1, optimizer="adamw", weight_decay=0.05,
                      final_lr_fraction=0.1)
    history = fit(model, LossConfig("dice", bce_weight=1.0), _tiny_data(16), epochs=3, lr=1e-2, batch_size=8,
                  patience=5, augment=None, seed=0, backup_dir=tmp_path / "b", label="t", schedule="cosine",
                  train_cfg=cfg)
    opt = model.optimizer
    assert type(opt).__name__ == "AdamW" and opt.weight_decay == pytest.approx(0.05)
    assert len(history["loss"]) == 3 and int(opt.iterations) == 6
    # 2 steps an epoch: warm-up from lr/100 to lr over the first epoch, then cosine to lr/10
    # over the remaining 4 steps.
    lr = learning_rate_schedule(cfg, 1e-2, 3, 2, "cosine")
    assert [float(lr(s)) for s in (0, 2, 4, 6)] == pytest.approx([1e-4, 1e-2, 1e-2 * (0.1 + 0.9 * 0.5), 1e-3], rel=1e-3)
    assert float(opt.learning_rate) == pytest.approx(float(lr(6)), rel=1e-3)  # the one fit trained with
    before = learning_rate_schedule(None, 1e-2, 3, 2, "cosine")  # no settings: cosine to 1/20, no warm-up
    assert float(before(0)) == pytest.approx(1e-2) and float(before(6)) == pytest.approx(5e-4, rel=1e-3)


class _Crash(RuntimeError):
    """A power cut, raised by :class:`_CrashAt`."""


class _CrashAt(keras.callbacks.Callback):
    """Ends a fit as a kill would: at the end of ``epoch`` (before it is recorded anywhere:
    fit puts extra callbacks first) or at its beginning (after the previous one was)."""

    def __init__(self, epoch: int, when: str):
        super().__init__()
        self.epoch, self.when = epoch, when

    def on_epoch_begin(self, epoch, logs=None):
        if self.when == "begin" and epoch == self.epoch:
            raise _Crash("power cut")

    def on_epoch_end(self, epoch, logs=None):
        if self.when == "end" and epoch == self.epoch:
            raise _Crash("power cut")


def _tiny_data(n: int = 8, seed: int = 0) -> dict:
    """``n`` random 32 px images and masks to train on; the first 4 also validate."""
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 255, (n, 32, 32, 3), dtype=np.uint8)
    y = (rng.random((n, 32, 32, 1)) > 0.5).astype(np.float32)
    return {"x_train": x, "y_train": y, "x_val": x[:4], "y_val": y[:4]}


def test_interrupted_training_resumes_from_the_last_finished_epoch(tmp_path):
    import csv

    from glassbox_audit.models.train import fit

    data = _tiny_data()
    kw = dict(epochs=4, lr=1e-3, batch_size=4, patience=10, augment=None, seed=0,
              backup_dir=tmp_path / "backup", label="t", schedule="cosine", epoch_log=tmp_path / "epochs.csv")
    with pytest.raises(_Crash):  # at the end of the second epoch
        fit(build_attention_unet(32, 2, 4, True, False, "batch", 0.0), LossConfig(), data,
            extra_callbacks=[_CrashAt(1, "end")], **kw)
    assert (tmp_path / "backup").exists()  # the finished epochs were kept

    history = fit(build_attention_unet(32, 2, 4, True, False, "batch", 0.0), LossConfig(), data, **kw)
    # The history is the whole fit's: the epoch finished before the crash, then the crashed one
    # run again and the rest.
    assert len(history["loss"]) == len(history.epoch_seconds) == 4 and history.interruptions == 1
    assert history.earlier_seconds == pytest.approx(history.epoch_seconds[0])
    with open(tmp_path / "epochs.csv") as f:
        assert [int(r["epoch"]) for r in csv.DictReader(f)] == [0, 1, 2, 3]
    assert not (tmp_path / "backup").exists()  # removed once training completed
    assert not (tmp_path / "backup.best").exists()


def test_a_later_fit_of_a_resumed_model_runs_all_its_own_epochs(tmp_path):
    """The variants are fine-tuned on the base's model object. After the base was resumed from
    an interruption, Keras remembers the resumed epoch on the model; a fine-tune of 2 epochs
    must still run 2 epochs, not start past its end and train nothing."""
    from glassbox_audit.models.train import fit

    data = _tiny_data()
    kw = dict(lr=1e-3, batch_size=4, patience=10, augment=None, seed=0, label="t", schedule="cosine")
    with pytest.raises(_Crash):  # before the fourth epoch
        fit(build_attention_unet(32, 2, 4, True, False, "batch", 0.0), LossConfig(), data, epochs=4,
            backup_dir=tmp_path / "base", extra_callbacks=[_CrashAt(3, "begin")], **kw)
    model = build_attention_unet(32, 2, 4, True, False, "batch", 0.0)
    fit(model, LossConfig(), data, epochs=4, backup_dir=tmp_path / "base", **kw)  # resumed at epoch 4
    before = model.get_weights()
    variant = fit(model, LossConfig("tversky", alpha=0.7, beta=0.3), data, epochs=2,
                  backup_dir=tmp_path / "variant", **kw)
    assert len(variant["loss"]) == 2
    assert any(not np.array_equal(a, b) for a, b in zip(model.get_weights(), before))


def test_the_best_epoch_before_an_interruption_is_still_the_one_kept_after_it(tmp_path):
    """Early stopping keeps the weights of the epoch with the best validation Dice; a fit
    resumed after a crash must still know an epoch before the crash was the best, and end with
    its weights (Keras's EarlyStopping holds them in memory only)."""
    from glassbox_audit.models.train import fit

    scripted = [0.5, 0.9, 0.6, 0.7]  # validation Dice by epoch: the best, epoch 2, is before the crash
    weights_at: dict[int, list] = {}

    class Script(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            logs["val_dice"] = scripted[epoch]
            weights_at[epoch] = self.model.get_weights()

    data = _tiny_data()
    kw = dict(epochs=4, lr=1e-2, batch_size=4, patience=10, augment=None, seed=0,
              backup_dir=tmp_path / "backup", label="t", schedule="cosine")
    with pytest.raises(_Crash):  # before the third epoch
        fit(build_attention_unet(32, 2, 4, True, False, "batch", 0.0), LossConfig(), data,
            extra_callbacks=[Script(), _CrashAt(2, "begin")], **kw)
    resumed = build_attention_unet(32, 2, 4, True, False, "batch", 0.0)
    history = fit(resumed, LossConfig(), data, extra_callbacks=[Script()], **kw)
    assert history["val_dice"] == scripted
    for got, want in zip(resumed.get_weights(), weights_at[1]):
        np.testing.assert_array_equal(got, want)
    assert not any(np.array_equal(a, b) for a, b in zip(resumed.get_weights(), weights_at[3]) if a.ndim == 4)


def _weight_groups(path):
    """Top-level groups of the weights file inside a ``.keras`` archive."""
    import io
    import zipfile

    import h5py

    with zipfile.ZipFile(path) as z, h5py.File(io.BytesIO(z.read("model.weights.h5")), "r") as h5:
        return set(h5.keys())


def test_stored_models_leave_the_optimizer_state_out_and_predict_the_same(tmp_path):
    model = tiny_unet()
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss=make_loss(LossConfig()))
    x = np.random.default_rng(0).random((4, 32, 32, 3)).astype("float32")
    model.fit(x, (x[..., :1] > 0.5).astype("float32"), epochs=1, verbose=0)
    model.save(tmp_path / "with_optimizer.keras")
    saved = save_model(tmp_path / "store", "balanced", "k" * 64, model, {})
    assert "optimizer" in _weight_groups(tmp_path / "with_optimizer.keras")
    assert "optimizer" not in _weight_groups(saved.path)
    assert saved.path.stat().st_size < (tmp_path / "with_optimizer.keras").stat().st_size
    loaded = load_model(find_model(tmp_path / "store", "balanced", "k" * 64), input_size=32)
    np.testing.assert_allclose(loaded.model(x, training=False), model(x, training=False), atol=1e-5)


def test_a_change_of_the_mask_threshold_gives_every_stored_model_a_new_key(tiny_config):
    # The masks a network learns from change with data.mask_threshold while the files (and so
    # the data fingerprint) stay the same: a stored model must not be reused for other targets.
    from glassbox_audit.data import load_dataset
    from glassbox_audit.models.train import model_keys

    cfg = tiny_config()
    ds = load_dataset(cfg.data)
    base, variants = model_keys(cfg, ds)
    other_base, other_variants = model_keys(tiny_config("data.mask_threshold=200"), ds)
    assert other_base != base
    assert all(other_variants[name] != key for name, key in variants.items())
    assert model_keys(tiny_config(), ds) == (base, variants)  # and equal settings find the same models


def test_a_second_fit_of_the_same_model_reuses_its_train_step_and_trains_as_a_fresh_one(tmp_path):
    """The variants are fine-tuned on the base's model object: the traced train step is reused
    (tracing costs more than a short fine-tune's epochs), and the fit is exactly a fresh model's
    from the same weights: loss settings, optimizer moments, step count and rate all reset."""
    from glassbox_audit.models.train import fit

    data = _tiny_data(16, seed=0)
    kw = dict(batch_size=8, patience=5, augment=None, seed=0, label="t")
    keras.utils.set_random_seed(0)
    model = build_attention_unet(32, 2, 4, True, True, "batch", 0.0)
    fit(model, LossConfig("dice", bce_weight=0.5), data, epochs=2, lr=1e-2, backup_dir=tmp_path / "a", **kw)
    step = model.train_function
    start = model.get_weights()
    variant = LossConfig("tversky", alpha=0.7, beta=0.3)
    reused = fit(model, variant, data, epochs=2, lr=3e-3, backup_dir=tmp_path / "b", **kw)
    assert model.train_function is step and int(model.optimizer.iterations) == 4
    assert float(model.optimizer.learning_rate) == pytest.approx(3e-3)

    fresh_model = build_attention_unet(32, 2, 4, True, True, "batch", 0.0)
    fresh_model.set_weights(start)
    fresh = fit(fresh_model, variant, data, epochs=2, lr=3e-3, backup_dir=tmp_path / "c", **kw)
    assert reused["loss"] == pytest.approx(fresh["loss"], rel=1e-5)
    assert reused["val_loss"] == pytest.approx(fresh["val_loss"], rel=1e-5)


def test_a_fit_after_someone_else_compiled_the_model_trains_with_its_own_loss(tmp_path):
    """The reuse of a compiled step holds only while the model keeps what ``fit`` compiled into
    it: after another compile, the next fit must not assign its loss settings to a loss the
    model no longer uses."""
    from glassbox_audit.models.train import fit

    data = _tiny_data(16, seed=1)
    kw = dict(batch_size=8, patience=5, augment=None, seed=0, label="t")
    keras.utils.set_random_seed(0)
    model = build_attention_unet(32, 2, 4, True, True, "batch", 0.0)
    fit(model, LossConfig("dice", bce_weight=0.5), data, epochs=1, lr=1e-2, backup_dir=tmp_path / "a", **kw)
    start = model.get_weights()
    model.compile(optimizer=keras.optimizers.SGD(1e-3), loss=keras.losses.BinaryCrossentropy(from_logits=True))
    variant = LossConfig("tversky", alpha=0.7, beta=0.3)
    after = fit(model, variant, data, epochs=1, lr=3e-3, backup_dir=tmp_path / "b", **kw)

    fresh_model = build_attention_unet(32, 2, 4, True, True, "batch", 0.0)
    fresh_model.set_weights(start)
    fresh = fit(fresh_model, variant, data, epochs=1, lr=3e-3, backup_dir=tmp_path / "c", **kw)
    assert after["loss"] == pytest.approx(fresh["loss"], rel=1e-5)
