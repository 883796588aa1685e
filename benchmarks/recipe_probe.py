"""Recipe probe for issue 14: train an Attention U-Net one way, evaluate it the official way.

Research script, not product code: it uses the project's builder (``build_attention_unet``),
data loader (``load_dataset`` / ``load_arrays``, the same seeded 10% hold-out of the 2000
training images as ``configs/isic2017.toml``) and metrics (``confusion_counts``,
``aggregate`` -> ``metrics_from_counts``, ``thresholded_jaccard``), and adds what the issue
asks to measure: input size, width, deep supervision (1x1-conv heads on the decoder levels,
upsampled, weighted), BCE + per-image soft Dice, AdamW with linear warm-up and cosine decay,
batched in-graph augmentation (flips, rot90, free rotation, scale/crop, colour jitter),
Shades of Gray colour constancy (applied identically at train and evaluation), flip TTA.

Model selection uses ONLY the 200-image hold-out carved from the training images; the 150
official validation images are scored once, at native 256 px (probabilities upsampled
bilinearly, threshold 0.5, like ``evaluate.to_native``), with and without flip TTA.

Every epoch is checkpointed (``keras.callbacks.BackupAndRestore`` plus our own state file),
so ``--resume`` continues an interrupted run, e.g. in a later session.

    # base model, new recipe
    python benchmarks/recipe_probe.py --name r128 --size 128 --epochs 30 --deep-supervision
    # the project's recipe for comparison
    python benchmarks/recipe_probe.py --name cur128 --recipe current --epochs 30
    # resume after an interruption (same command plus --resume)
    python benchmarks/recipe_probe.py --name r128 ... --resume
    # cheap variant fine-tunes of a finished base
    python benchmarks/recipe_probe.py --name r128-prec --finetune-from r128 --loss tversky --alpha 0.7 --beta 0.3 --epochs 3
    python benchmarks/recipe_probe.py --name r128-rec --finetune-from r128 --loss tversky --alpha 0.3 --beta 0.7 --epochs 3

Results: one JSON line per evaluated run in ``benchmarks/results/recipe_probe.jsonl``;
per-epoch log and checkpoints under ``--runs`` (default ``/work/recipe-probe-runs/<name>``,
outside the repository).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results" / "recipe_probe.jsonl"
DEFAULT_RUNS = Path("/work/recipe-probe-runs")
DEFAULT_DATA = REPO.parent / "shared" / "data" / "isic2017-256"

log = logging.getLogger("recipe_probe")


# --- preprocessing -----------------------------------------------------------------------

def shades_of_gray(images: np.ndarray, p: float = 6.0) -> np.ndarray:
    """Shades of Gray colour constancy (Finlayson & Trezzi 2004) on uint8 ``(N, H, W, 3)``.

    The illuminant is the Minkowski p-norm mean of each channel; each channel is scaled so
    the illuminant becomes neutral grey (the ISIC-winning preprocessing of Barata et al.).
    Returns uint8, so training arrays and evaluation inputs go through the same rounding.
    """
    x = images.astype(np.float32)
    illum = np.power(np.mean(np.power(x, p), axis=(1, 2), keepdims=True), 1.0 / p)  # (N,1,1,3)
    illum = illum / np.maximum(np.linalg.norm(illum, axis=-1, keepdims=True), 1e-6)
    x = x / np.maximum(illum * np.sqrt(3.0), 1e-6)
    return np.clip(np.round(x), 0, 255).astype(np.uint8)


def prepare(images_uint8: np.ndarray, sog: bool) -> np.ndarray:
    """Network-size uint8 images -> what the model sees (before augmentation / scaling)."""
    return shades_of_gray(images_uint8) if sog else images_uint8


# --- batched augmentation ------------------------------------------------------------------

def augment_config(rotate: float = 180.0, min_scale: float = 0.75, colour: bool = True):
    """The probes' augmentation as the product's settings (``[train.augment]`` with ``batched``)."""
    from glassbox_audit.config import AugmentConfig

    jitter = {} if colour else {"brightness": 0.0, "contrast": 0.0, "saturation": 0.0, "hue": 0.0}
    return AugmentConfig(batched=True, rotate=rotate, min_scale=min_scale, **jitter)


def make_batch_augment(cfg, size: int):
    """``aug(x_uint8 (B,S,S,3), y (B,S,S,1)) -> (image float [0,1], mask)``: the product's
    ``data.augment.make_batch_augment`` on uint8 batches."""
    import tensorflow as tf

    from glassbox_audit.data.augment import make_batch_augment as product_augment

    aug = product_augment(cfg, size)
    return lambda x, y: aug(tf.cast(x, tf.float32) / 255.0, tf.cast(y, tf.float32))


# --- model -----------------------------------------------------------------------------------

DS_WEIGHTS = {2: 0.5, 3: 0.3, 4: 0.2}  # decoder level -> loss weight (main output: 1)


def build_model(size: int, filters: int, *, stem: bool = False, deep_supervision: bool = False,
                depth: int = 4, stem_channels: int = 16):
    """``(train_model, export_model)``: the export model maps images to full-size logits.

    ``deep_supervision``: the train model also outputs 1x1-conv logits taken from the decoder
    levels 2..depth (``dec{level}_relu2``), bilinearly upsampled to full size; the export
    model shares every weight but those heads.
    ``stem``: a stride-2 3x3 conv at full resolution feeding a U-Net at half resolution whose
    logits are upsampled back: the full-resolution layers are where the CPU time goes.
    """
    import keras
    from keras import layers

    from glassbox_audit.models.unet import build_attention_unet

    levels = [lv for lv in sorted(DS_WEIGHTS) if lv <= depth]
    if not stem:
        unet = build_attention_unet(size, depth, filters, True, True, "batch", 0.1)
        inputs, main = unet.input, unet.output
        taps = [unet.get_layer(f"dec{lv}_relu2").output for lv in levels]
        factors = [2 ** (lv - 1) for lv in levels]
    else:
        inner = build_attention_unet(size // 2, depth, filters, True, True, "batch", 0.1, channels=stem_channels)
        inner = keras.Model(inner.input, [inner.output] + [inner.get_layer(f"dec{lv}_relu2").output for lv in levels],
                            name="half_res_unet")
        inputs = keras.Input((size, size, 3), name="image")
        x = layers.Conv2D(stem_channels, 3, strides=2, padding="same", use_bias=False,
                          kernel_initializer="he_normal", name="stem_conv")(inputs)
        x = layers.BatchNormalization(momentum=0.9, name="stem_norm")(x)
        x = layers.Activation("relu", name="stem_relu")(x)
        outs = inner(x)
        main = layers.UpSampling2D(2, interpolation="bilinear", name="logits_up")(outs[0])
        taps, factors = outs[1:], [2 ** lv for lv in levels]
    export = keras.Model(inputs, main, name="attention_unet")
    if not deep_supervision:
        return export, export
    heads = []
    for lv, tap, f in zip(levels, taps, factors):
        h = layers.Conv2D(1, 1, name=f"ds{lv}_logits")(tap)
        heads.append(layers.UpSampling2D(f, interpolation="bilinear", name=f"ds{lv}_up")(h))
    return keras.Model(inputs, [main] + heads, name="attention_unet_ds"), export


def make_loss_fn(kind: str, alpha: float = 0.5, beta: float = 0.5, bce: float = 1.0):
    """``bce_dice``: BCE + per-image soft Dice (EGE-UNet); ``project``: the project's base loss
    (Dice + 0.5 BCE); ``tversky``: the project's Tversky (alpha FP, beta FN) + ``bce`` x BCE."""
    import keras
    from keras import ops

    from glassbox_audit.config import LossConfig
    from glassbox_audit.models.losses import dice_loss, make_loss

    if kind == "project":
        return make_loss(LossConfig("dice", bce_weight=0.5))
    if kind == "tversky":
        return make_loss(LossConfig("tversky", alpha=alpha, beta=beta, bce_weight=bce))

    def bce_dice(y_true, logits):
        return ops.mean(keras.losses.binary_crossentropy(y_true, logits, from_logits=True)) + \
            dice_loss(y_true, logits)

    return bce_dice


# --- data --------------------------------------------------------------------------------------

def load_data(root: Path, size: int, sog: bool, subset: int, seed: int):
    """Training arrays, hold-out and official validation (uint8 inputs, native bool masks).

    The split is the project's: ``configs/isic2017.toml`` with ``data.root`` overridden, so
    ``val`` is the same seeded 10% of the training images the shipped models held out and
    ``test`` is the 150 official validation images.
    """
    from glassbox_audit.config import load_config
    from glassbox_audit.data import load_arrays, load_dataset
    from glassbox_audit.data.imageio import read_image, read_mask, resize_image

    cfg = load_config(REPO / "configs" / "isic2017.toml", data__root=str(root))
    ds = load_dataset(cfg.data)
    x, y = load_arrays(ds, "train", size)
    if subset and subset < len(x):
        keep = np.sort(np.random.default_rng(seed).permutation(len(x))[:subset])
        x, y = x[keep], y[keep]

    def native(partition):
        samples = ds.samples[partition]
        imgs = np.stack([resize_image(read_image(s.image), size) for s in samples]).astype(np.uint8)
        masks = [read_mask(s.mask, ds.mask_threshold, ds.max_ambiguous) for s in samples]
        return prepare(imgs, sog), masks

    return {"x": prepare(x, sog), "y": y, "holdout": native("val"), "official": native("test"),
            "counts": {"train": int(len(x)), "holdout": len(ds.samples["val"]), "official": len(ds.samples["test"])}}


def train_stream(x, y, batch: int, aug: str, spec, size: int, seed: int):
    import tensorflow as tf

    from glassbox_audit.config import AugmentConfig
    from glassbox_audit.data.augment import make_augment

    ds = tf.data.Dataset.from_tensor_slices((x, y)).shuffle(len(x), seed=seed, reshuffle_each_iteration=True)
    if aug == "project":  # the shipped per-sample augmentation (train._datasets)
        ds = ds.map(lambda a, b: (tf.cast(a, tf.float32) / 255.0, b), num_parallel_calls=tf.data.AUTOTUNE)
        ds = ds.map(make_augment(AugmentConfig(), size), num_parallel_calls=tf.data.AUTOTUNE).batch(batch)
    elif aug == "batched":
        ds = ds.batch(batch).map(make_batch_augment(spec, size), num_parallel_calls=tf.data.AUTOTUNE)
    else:
        ds = ds.batch(batch).map(lambda a, b: (tf.cast(a, tf.float32) / 255.0, b))
    return ds.prefetch(tf.data.AUTOTUNE)


# --- evaluation --------------------------------------------------------------------------------

def evaluate(model, images: np.ndarray, masks: list, tta: bool, batch: int = 16) -> dict:
    """Score at native resolution with the project's metrics (threshold 0.5 after upsampling)."""
    from glassbox_audit.evaluate import predictor, to_native
    from glassbox_audit.metrics import aggregate, bootstrap_intervals, confusion_counts

    fn = predictor(model, tta)
    counts = []
    for i in range(0, len(images), batch):
        probs = fn(images[i:i + batch].astype(np.float32) / 255.0).numpy()[..., 0]
        for prob, mask in zip(probs, masks[i:i + batch]):
            counts.append(confusion_counts(mask, to_native(prob, *mask.shape) > 0.5))
    counts = np.array(counts)
    agg = aggregate(counts)
    low, high = bootstrap_intervals(counts)["dice"]
    return {"counts": counts, "dice_macro_ci95": [low, high],"dice_macro": agg["macro"]["dice"], "dice_micro": agg["micro"]["dice"],
            "iou_macro": agg["macro"]["iou"], "thresholded_jaccard": agg["dataset"]["thresholded_jaccard"],
            "failures": int(agg["dataset"]["jaccard_failures"]),
            "precision_macro": agg["macro"]["precision"], "recall_macro": agg["macro"]["recall"],
            "precision_micro": agg["micro"]["precision"], "recall_micro": agg["micro"]["recall"]}


# --- training -----------------------------------------------------------------------------------

def schedule(lr: float, steps: int, warmup: int, final_frac: float):
    """Linear warm-up from lr/100 to ``lr`` over ``warmup`` steps, then cosine to lr*final_frac."""
    import keras

    return keras.optimizers.schedules.CosineDecay(
        lr / 100 if warmup else lr, decay_steps=max(1, steps - warmup), alpha=final_frac,
        warmup_target=lr if warmup else None, warmup_steps=warmup)


class EpochState:
    """Per-epoch hold-out scoring, best-checkpoint keeping and a resumable state file."""

    def __new__(cls, run: Path, export, holdout, epochs: int, select: bool):
        import keras
        from tqdm import tqdm

        state_path = run / "state.json"

        class Cb(keras.callbacks.Callback):
            def on_train_begin(self, logs=None):
                self.state = json.loads(state_path.read_text()) if state_path.exists() else \
                    {"history": [], "train_seconds": 0.0, "best": None}
                done = len(self.state["history"])
                self.bar = tqdm(total=epochs, initial=done, desc=run.name, unit="epoch", disable=None)

            def on_epoch_begin(self, epoch, logs=None):
                self.t0 = time.perf_counter()

            def on_epoch_end(self, epoch, logs=None):
                scores = evaluate(export, *holdout, tta=False)
                seconds = time.perf_counter() - self.t0
                row = {"epoch": epoch + 1, "seconds": round(seconds, 1),
                       "lr": float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate)),
                       **{k: round(float(v), 5) for k, v in (logs or {}).items()},
                       **{f"holdout_{k}": round(float(v), 4) for k, v in scores.items() if np.isscalar(v)}}
                st = self.state
                # A kill between this state file and the Keras backup repeats an epoch: keep one row.
                st["history"] = [h for h in st["history"] if h["epoch"] <= epoch] + [row]
                st["train_seconds"] += seconds
                better = st["best"] is None or scores["dice_macro"] > st["best"]["holdout_dice_macro"]
                if not select or better:  # without selection the last epoch is the result
                    export.save_weights(str(run / "best.weights.h5"))
                    st["best"] = {"epoch": epoch + 1, "holdout_dice_macro": scores["dice_macro"],
                                  "holdout_thresholded_jaccard": scores["thresholded_jaccard"]}
                tmp = state_path.with_suffix(".tmp")
                tmp.write_text(json.dumps(st, indent=1))
                tmp.replace(state_path)  # atomic: a kill never leaves half a state file
                log.info("epoch %d/%d %.0fs loss %.4f lr %.2e | hold-out Dice %.4f tJ %.4f fail %d%s",
                         epoch + 1, epochs, seconds, row.get("loss", float("nan")), row["lr"],
                         scores["dice_macro"], scores["thresholded_jaccard"], scores["failures"],
                         " *" if better else "")
                self.bar.update(1)

            def on_train_end(self, logs=None):
                self.bar.close()

        return Cb()


def run(args) -> dict:
    import keras
    import tensorflow as tf

    run_dir = args.runs / args.name
    if run_dir.exists() and not args.resume and (run_dir / "state.json").exists():
        raise SystemExit(f"{run_dir} exists: pass --resume to continue it or pick another --name")
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "args.json").write_text(json.dumps({k: str(v) for k, v in vars(args).items()}, indent=1))
    keras.utils.set_random_seed(args.seed)
    t_load = time.perf_counter()
    data = load_data(args.data, args.size, args.sog, args.subset, args.seed)
    log.info("data: %s, loaded in %.0fs", data["counts"], time.perf_counter() - t_load)

    spec = augment_config(args.rotate, args.min_scale, colour=not args.no_colour)
    if args.finetune_from:
        base_dir = args.runs / args.finetune_from
        export = keras.saving.load_model(str(base_dir / "model.keras"), compile=False)
        if export.input_shape[1] != args.size:
            raise SystemExit(f"{base_dir}: trained at {export.input_shape[1]} px, not --size {args.size}")
        train_model = export
    else:
        train_model, export = build_model(args.size, args.filters, stem=args.stem,
                                          deep_supervision=args.deep_supervision)
    loss = make_loss_fn(args.loss, args.alpha, args.beta, args.bce)
    n_out = len(train_model.outputs)
    losses = [loss] * n_out
    weights = [1.0] + [DS_WEIGHTS[lv] for lv in sorted(DS_WEIGHTS)][: n_out - 1]
    steps = -(-len(data["x"]) // args.batch) * args.epochs
    warmup = int(args.warmup_epochs * -(-len(data["x"]) // args.batch))
    rate = schedule(args.lr, steps, warmup, args.final_lr_frac)
    opt = (keras.optimizers.AdamW(rate, weight_decay=args.wd) if args.optimizer == "adamw"
           else keras.optimizers.Adam(rate))
    train_model.compile(optimizer=opt, loss=losses if n_out > 1 else loss,
                        loss_weights=weights if n_out > 1 else None, jit_compile=False)

    y_targets = data["y"]
    stream = train_stream(data["x"], y_targets, args.batch, args.aug, spec, args.size, args.seed)
    if n_out > 1:  # every head learns the same full-size mask
        stream = stream.map(lambda a, b: (a, tuple([b] * n_out)))
    callbacks = [
        EpochState(run_dir, export, data["holdout"], args.epochs, select=not args.finetune_from),
        # Weights, optimizer state and epoch count, so a resumed cosine schedule carries on.
        keras.callbacks.BackupAndRestore(str(run_dir / "backup"), delete_checkpoint=False),
    ]
    log.info("training %s: %d params, %d epochs of %d images, batch %d", args.name, export.count_params(),
             args.epochs, len(data["x"]), args.batch)
    train_model.fit(stream, epochs=args.epochs, callbacks=callbacks, verbose=0)

    state = json.loads((run_dir / "state.json").read_text())
    export.load_weights(str(run_dir / "best.weights.h5"))
    export.save(str(run_dir / "model.keras"))
    official = {f"tta_{t}": evaluate(export, *data["official"], tta=t) for t in (False, True)}
    # Per-image counts (tp, fp, fn, tn at 256 px), for intervals and failure lists later.
    np.savez(run_dir / "official_counts.npz", **{k: d.pop("counts") for k, d in official.items()})
    result = {
        "name": args.name, "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()
                     if k not in ("runs", "data", "resume")},
        "params": int(export.count_params()), "counts": data["counts"],
        "epochs_run": len(state["history"]), "best": state["best"],
        "train_minutes": round(state["train_seconds"] / 60, 1),
        "sec_per_epoch": round(state["train_seconds"] / max(1, len(state["history"])), 1),
        "official_val": {k: {m: (round(float(v), 4) if np.isscalar(v) else [round(float(u), 4) for u in v])
                             for m, v in d.items()} for k, d in official.items()},
        "tf": tf.__version__, "keras": keras.__version__,
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    with RESULTS.open("a") as fh:
        fh.write(json.dumps(result) + "\n")
    for k, d in official.items():
        log.info("official val (%s): Dice macro %.4f micro %.4f IoU %.4f tJ %.4f failures %d P %.4f R %.4f",
                 k, d["dice_macro"], d["dice_micro"], d["iou_macro"], d["thresholded_jaccard"], d["failures"],
                 d["precision_macro"], d["recall_macro"])
    log.info("training minutes %.1f (%.0f s/epoch), best hold-out epoch %s", result["train_minutes"],
             result["sec_per_epoch"], state["best"])
    return result


def parse(argv):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--name", help="run name (folder under --runs, key in the results)")
    ap.add_argument("--table", action="store_true", help="print the results file as a Markdown table and exit")
    ap.add_argument("--recipe", choices=["new", "current"], default="new",
                    help="defaults to start from: 'current' = the shipped recipe (Adam 2e-3 cosine, "
                         "Dice+0.5 BCE, per-sample augmentation, no deep supervision)")
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--filters", type=int, default=12)
    ap.add_argument("--stem", action="store_true", help="stride-2 stem + U-Net at half resolution")
    ap.add_argument("--deep-supervision", action="store_true")
    ap.add_argument("--loss", choices=["bce_dice", "project", "tversky"])
    ap.add_argument("--alpha", type=float, default=0.5, help="Tversky weight of false positives")
    ap.add_argument("--beta", type=float, default=0.5, help="Tversky weight of false negatives")
    ap.add_argument("--bce", type=float, default=0.0, help="BCE weight added to the Tversky loss")
    ap.add_argument("--optimizer", choices=["adamw", "adam"])
    ap.add_argument("--lr", type=float)
    ap.add_argument("--wd", type=float, default=1e-2)
    ap.add_argument("--warmup-epochs", type=float)
    ap.add_argument("--final-lr-frac", type=float, default=0.01)
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--aug", choices=["batched", "project", "none"])
    ap.add_argument("--rotate", type=float, default=180.0, help="free rotation, max |degrees|")
    ap.add_argument("--min-scale", type=float, default=0.75)
    ap.add_argument("--no-colour", action="store_true", help="no colour jitter")
    ap.add_argument("--sog", action="store_true", help="Shades of Gray (p=6) at train and evaluation")
    ap.add_argument("--subset", type=int, default=0, help="train on this many of the 1800 images (0: all)")
    ap.add_argument("--finetune-from", help="run name of a finished base (its model.keras)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--resume", action="store_true")
    ap.add_argument("--runs", type=Path, default=DEFAULT_RUNS)
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    args = ap.parse_args(argv)
    current = args.recipe == "current"
    ft = bool(args.finetune_from)
    defaults = {"loss": "project" if current else "bce_dice", "optimizer": "adam" if current else "adamw",
                "lr": 3e-4 if ft else (2e-3 if current else 2e-3), "warmup_epochs": 0 if (current or ft) else 1,
                "aug": "project" if current else "batched"}
    for k, v in defaults.items():
        if getattr(args, k) is None:
            setattr(args, k, v)
    if current:
        args.final_lr_frac = 0.05  # train.fit's CosineDecay(alpha=0.05)
    return args


def table(path: Path = RESULTS) -> str:
    """The results file as a Markdown table (official validation, flip TTA on and off)."""
    head = ("| run | px | f | DS | loss | opt | aug | SoG | epochs | best ep | train min | s/epoch | TTA "
            "| Dice macro | Dice micro | IoU macro | thr. Jaccard | failures | precision | recall |")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for line in path.read_text().splitlines():
        r = json.loads(line)
        st = r["settings"]
        loss = st["loss"] if st["loss"] != "tversky" else f"tversky {st['alpha']}/{st['beta']}"
        for tta in (False, True):
            m = r["official_val"][f"tta_{tta}"]
            lines.append(
                f"| {r['name']} | {st['size']} | {st['filters']} | {'y' if st['deep_supervision'] else '-'} "
                f"| {loss} | {st['optimizer']} {st['lr']:g} | {st['aug']} | {'y' if st['sog'] else '-'} "
                f"| {r['epochs_run']} | {r['best']['epoch']} | {r['train_minutes']} | {r['sec_per_epoch']:.0f} "
                f"| {'flip' if tta else '-'} | {m['dice_macro']:.4f} | {m['dice_micro']:.4f} | {m['iou_macro']:.4f} "
                f"| {m['thresholded_jaccard']:.4f} | {int(m['failures'])} | {m['precision_macro']:.4f} "
                f"| {m['recall_macro']:.4f} |")
    return "\n".join(lines)


def main(argv=None) -> None:
    args = parse(sys.argv[1:] if argv is None else argv)
    if args.table:
        print(table())
        return
    if not args.name:
        raise SystemExit("--name is required")
    args.runs.mkdir(parents=True, exist_ok=True)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s",
                        handlers=[logging.StreamHandler(),
                                  logging.FileHandler(args.runs / f"{args.name}.log")])
    run(args)


if __name__ == "__main__":
    main()
