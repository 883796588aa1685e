"""The audit configuration: one tree of dataclasses, loaded from TOML and overridden by flags.

Every value is checked once, when the tree is built, so later stages can trust it: each section
checks its own fields (``TrainConfig.validate("train")``, as ``XaiSettings`` does) and
``AuditConfig`` adds only what spans sections. Errors name the dotted key (``train.epochs``) or
the path at fault, never a Python type. Whether ``llm.model`` names a model the runtime knows is
checked by ``glassbox_audit.llm.runtime.check_settings``: the table lives with the LLM code, which
loading a config does not import.

Example::

    cfg = load_config("audit.toml", overrides=["train.epochs=3", "data.layout=isic"])
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
import tomllib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from .errors import ConfigError
from .metrics import ACCEPTANCE_METRICS, COMPARED_METRICS, DEFAULT_ACCEPTANCE, WATCHED_METRICS
from .xai.settings import XaiSettings

__all__ = [
    "AugmentConfig",
    "AuditConfig",
    "DataConfig",
    "EvalConfig",
    "ExecutorConfig",
    "ExternalModelConfig",
    "FolderConfig",
    "LlmConfig",
    "LossConfig",
    "ModelConfig",
    "ReportConfig",
    "SyntheticConfig",
    "TrainConfig",
    "VariantConfig",
    "XaiSettings",
    "config_hash",
    "config_to_dict",
    "default_variants",
    "from_dict",
    "load_config",
]

SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
ACCEPTANCE = re.compile(r"^\s*([a-z_]+)\s*(>=|<=|>|<)\s*([0-9]*\.?[0-9]+)\s*$")


def _check(cond: bool, key: str, message: str) -> None:
    if not cond:
        raise ConfigError(f"config key '{key}' {message}")


@dataclass
class SyntheticConfig:
    """The embedded default dataset: dermoscopy-like images generated from a seed."""

    n_train: int = 320
    n_val: int = 64
    n_test: int = 96
    height: int = 168
    width: int = 224
    seed: int = 2018

    def validate(self, key: str) -> None:
        for name in ("n_train", "n_val", "n_test"):
            _check(getattr(self, name) > 0, f"{key}.{name}", f"must be positive, got {getattr(self, name)}")
        for name in ("height", "width"):
            _check(16 <= getattr(self, name) <= 4096, f"{key}.{name}",
                   f"must be in 16..4096, got {getattr(self, name)}")


@dataclass
class FolderConfig:
    """Any folder of images and a folder of masks paired by file stem."""

    images: str = "images"  # relative to data.root, or absolute
    masks: str = "masks"
    mask_suffix: str = ""  # e.g. "_lesion" pairs IMD002.bmp with IMD002_lesion.bmp
    mask_ext: str = ""  # e.g. ".bmp"; empty: any of image_exts
    image_exts: list[str] = field(
        default_factory=lambda: [".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff"]
    )
    splits: str = ""  # folder with train.txt / val.txt / test.txt (one stem per line); empty: random
    val_fraction: float = 0.15
    test_fraction: float = 0.2

    def validate(self, key: str) -> None:
        _check(0 <= self.val_fraction < 1, f"{key}.val_fraction", "must be in [0, 1)")
        _check(0 < self.test_fraction < 1, f"{key}.test_fraction", "must be in (0, 1)")
        _check(self.val_fraction + self.test_fraction < 1, f"{key}.test_fraction",
               "plus val_fraction must be below 1")
        _check(all(e.startswith(".") for e in self.image_exts), f"{key}.image_exts", "entries must start with '.'")
        _check(not self.mask_ext or self.mask_ext.startswith("."), f"{key}.mask_ext", "must start with '.'")


@dataclass
class DataConfig:
    layout: Literal["synthetic", "isic", "folder"] = "synthetic"
    root: str = ""  # required for the isic and folder layouts
    cache_dir: str = ".cache/glassbox-audit"  # where the synthetic layout writes its files
    mask_threshold: int = 128  # mask pixel > threshold is foreground (ISIC scoring uses > 128)
    # A mask is "binary after thresholding" only if few pixels sit far from 0 and 255.
    max_ambiguous_fraction: float = 0.02
    # When a layout has no test masks, validation becomes the test partition and this share
    # of training (seeded) becomes validation for early stopping.
    val_from_train_fraction: float = 0.1
    # Every image/mask pair is a test pair (a folder without split lists), or only the test
    # list counts (with split lists): for audits that train nothing (external models,
    # `glassbox-audit evaluate`), which set it themselves.
    test_only: bool = False
    split_seed: int = 0
    limit: int = 0  # at most this many images per partition (0: all); for quick looks
    # A bad file (unreadable, unpaired, sizes differ, mask not binary): stop (fail) or leave the
    # pair out and list it in the dossier and the database (skip).
    on_bad_input: Literal["fail", "skip"] = "fail"
    # How the masks were made (who annotated, tool, protocol, review), for the data sheet;
    # empty: the layout's own statement (synthetic, isic) or "not stated" (folder).
    ground_truth: str = ""
    synthetic: SyntheticConfig = field(default_factory=SyntheticConfig)
    folder: FolderConfig = field(default_factory=FolderConfig)

    def network_view(self) -> dict[str, Any]:
        """The data settings that change what a network trained on this data sees (its
        inputs or its targets) beyond the files themselves, which the data fingerprint
        covers: every stored model's key includes them."""
        return {"mask_threshold": self.mask_threshold}

    def validate(self, key: str) -> None:
        if self.layout in ("isic", "folder"):
            _check(bool(self.root), f"{key}.root", f"is required for the {self.layout!r} layout")
            if not Path(self.root).is_dir():
                raise ConfigError(f"config key '{key}.root': folder {self.root} does not exist")
        _check(0 <= self.mask_threshold < 255, f"{key}.mask_threshold",
               f"must be in 0..254, got {self.mask_threshold}")
        _check(0 <= self.max_ambiguous_fraction <= 1, f"{key}.max_ambiguous_fraction", "must be in [0, 1]")
        _check(0 < self.val_from_train_fraction < 1, f"{key}.val_from_train_fraction", "must be in (0, 1)")
        _check(self.limit >= 0, f"{key}.limit", f"must be 0 (all) or positive, got {self.limit}")
        # Both sub-tables are checked whatever the layout, so a mistake in the one not in use
        # is still refused.
        self.synthetic.validate(f"{key}.synthetic")
        self.folder.validate(f"{key}.folder")


@dataclass
class AugmentConfig:
    """Training transforms, each toggled; geometric ones move image and mask together."""

    enabled: bool = True
    hflip: bool = True
    vflip: bool = True
    rot90: bool = True
    scale_crop: bool = True
    min_scale: float = 0.75  # crop side as a share of the image side
    brightness: float = 0.1  # max additive change, images in [0, 1]
    contrast: float = 0.15  # max relative change
    saturation: float = 0.15
    hue: float = 0.03  # max hue shift, in turns
    # Per batch in the graph instead of per sample: each sample's flips, rotation and scale/crop
    # compose into one affine map applied to image and mask together (one op per batch), which
    # also allows free rotations (reflected border).
    batched: bool = False
    rotate: float = 0.0  # max free rotation in degrees (batched only)

    def validate(self, key: str) -> None:
        _check(0 < self.min_scale <= 1, f"{key}.min_scale", "must be in (0, 1]")
        _check(0 <= self.rotate <= 180, f"{key}.rotate", f"must be in [0, 180] degrees, got {self.rotate}")
        _check(self.batched or not self.rotate, f"{key}.rotate", "needs batched = true (free rotation is batched only)")
        for name in ("brightness", "contrast", "saturation"):
            _check(0 <= getattr(self, name) < 1, f"{key}.{name}", "must be in [0, 1)")
        _check(0 <= self.hue <= 0.5, f"{key}.hue", "must be in [0, 0.5]")


@dataclass
class ModelConfig:
    """Attention U-Net shape; see ``glassbox_audit.models.unet.build_attention_unet``."""

    input_size: int = 96
    depth: int = 4  # number of down-sampling steps
    base_filters: int = 8
    attention_gates: bool = True
    bottleneck_attention: bool = True
    norm: Literal["batch", "group", "none"] = "batch"
    dropout: float = 0.1

    def validate(self, key: str) -> None:
        _check(1 <= self.depth <= 6, f"{key}.depth", f"must be in 1..6, got {self.depth}")
        _check(self.input_size > 0, f"{key}.input_size", f"must be positive, got {self.input_size}")
        _check(self.input_size % (2 ** self.depth) == 0, f"{key}.input_size",
               f"must be a multiple of 2**{key}.depth = {2 ** self.depth}, got {self.input_size}")
        _check(self.base_filters > 0, f"{key}.base_filters", f"must be positive, got {self.base_filters}")
        _check(self.norm != "group" or self.base_filters % 4 == 0, f"{key}.base_filters",
               "must be a multiple of 4 with group normalisation")
        _check(0 <= self.dropout < 1, f"{key}.dropout", f"must be in [0, 1), got {self.dropout}")


@dataclass
class LossConfig:
    """Segmentation loss on logits.

    ``tversky``: 1 - TP / (TP + alpha FP + beta FN); alpha > beta penalises false positives.
    ``hybrid``: dice_weight * Dice + (1 - dice_weight) * Tversky.
    ``bce_weight`` adds binary cross-entropy for stable early training.
    """

    kind: Literal["dice", "tversky", "hybrid"] = "dice"
    alpha: float = 0.5
    beta: float = 0.5
    dice_weight: float = 0.5
    bce_weight: float = 0.0

    def validate(self, key: str) -> None:
        # alpha and beta are judged together, so the message names the loss table itself.
        _check(self.alpha >= 0 and self.beta >= 0, key, "alpha and beta must be >= 0")
        _check(self.alpha + self.beta > 0, key, "alpha + beta must be positive")
        _check(0 <= self.dice_weight <= 1, f"{key}.dice_weight", "must be in [0, 1]")
        _check(self.bce_weight >= 0, f"{key}.bce_weight", "must be >= 0")


@dataclass
class VariantConfig:
    name: str = "balanced"
    description: str = ""
    loss: LossConfig = field(default_factory=LossConfig)

    def validate(self, key: str) -> None:
        # The name becomes part of file names and database keys; uniqueness across the list
        # is AuditConfig's to check.
        _check(bool(SAFE_NAME.match(self.name)), f"{key}.name", f"must be a simple name, got {self.name!r}")
        self.loss.validate(f"{key}.loss")


@dataclass
class ExternalModelConfig:
    """A Keras segmentation model trained elsewhere, audited as it is (``[[models]]`` in the
    TOML, ``run --model NAME=PATH``); see :mod:`glassbox_audit.models.external`."""

    name: str = ""
    path: str = ""  # a .keras file (Keras 3) or a legacy .h5
    description: str = ""  # what the team says about it; printed on its card
    # What the model expects, from an RGB image scaled to [0, 1]: "unit" as is, "symmetric"
    # 2x - 1 (to [-1, 1]), "standardize" (x - mean) / std per channel, mean and std on the [0, 1]
    # scale (ImageNet: mean [0.485, 0.456, 0.406], std [0.229, 0.224, 0.225]).
    preprocess: Literal["unit", "symmetric", "standardize"] = "unit"
    mean: list[float] = field(default_factory=list)
    std: list[float] = field(default_factory=list)

    def validate(self, key: str) -> None:
        _check(bool(SAFE_NAME.match(self.name)), f"{key}.name", f"must be a simple name, got {self.name!r}")
        _check(bool(self.path), f"{key}.path", "is required (the model file)")
        if self.preprocess == "standardize":
            _check(len(self.mean) in (1, 3) and len(self.std) == len(self.mean), f"{key}.mean",
                   "and std must both hold 1 or 3 values with preprocess = 'standardize'")
            _check(all(v > 0 for v in self.std), f"{key}.std", "values must be positive")
        else:
            _check(not self.mean and not self.std, f"{key}.mean",
                   f"and std apply only with preprocess = 'standardize', not {self.preprocess!r}")


def default_variants() -> list[VariantConfig]:
    """The three designed error profiles: fewer false positives, balanced, fewer misses."""
    return [
        VariantConfig(
            "precision-optimized",
            "Tversky loss weighting false positives (alpha 0.7, beta 0.3)",
            LossConfig("tversky", alpha=0.7, beta=0.3),
        ),
        VariantConfig("balanced", "Dice loss", LossConfig("dice")),
        VariantConfig(
            "recall-optimized",
            "Hybrid loss: 0.3 Dice + 0.7 Tversky weighting false negatives (alpha 0.2, beta 0.8)",
            LossConfig("hybrid", alpha=0.2, beta=0.8, dice_weight=0.3),
        ),
    ]


@dataclass
class TrainConfig:
    """A base model trained once, then a short fine-tune per variant."""

    mode: Literal["auto", "always", "never"] = "auto"
    epochs: int = 16
    finetune_epochs: int = 4
    batch_size: int = 8
    learning_rate: float = 2e-3
    finetune_learning_rate: float = 5e-4
    patience: int = 5
    # "plateau": halve the learning rate when validation loss stalls; "cosine": decay it
    # to 1/20 over the planned epochs (better final weights when the epoch budget is fixed).
    lr_schedule: Literal["plateau", "cosine"] = "plateau"
    # Cosine only: linear warm-up from 1/100 of the learning rate over this many epochs, and the
    # share of the learning rate the decay ends at.
    warmup_epochs: float = 0.0
    final_lr_fraction: float = 0.05
    optimizer: Literal["adam", "adamw"] = "adam"
    weight_decay: float = 0.01  # AdamW's decoupled weight decay
    seed: int = 0
    base_loss: LossConfig = field(
        default_factory=lambda: LossConfig("dice", bce_weight=0.5)
    )
    augment: AugmentConfig = field(default_factory=AugmentConfig)

    def validate(self, key: str) -> None:
        for name in ("epochs", "batch_size"):
            _check(getattr(self, name) > 0, f"{key}.{name}", f"must be positive, got {getattr(self, name)}")
        _check(self.finetune_epochs >= 0, f"{key}.finetune_epochs", "must be 0 or positive")
        _check(self.patience > 0, f"{key}.patience", "must be positive")
        _check(self.learning_rate > 0, f"{key}.learning_rate", "must be positive")
        _check(self.finetune_learning_rate > 0, f"{key}.finetune_learning_rate", "must be positive")
        _check(self.warmup_epochs >= 0, f"{key}.warmup_epochs", "must be 0 or positive")
        _check(self.lr_schedule == "cosine" or not self.warmup_epochs, f"{key}.warmup_epochs",
               "needs lr_schedule = \"cosine\"")
        _check(0 <= self.final_lr_fraction <= 1, f"{key}.final_lr_fraction", "must be in [0, 1]")
        _check(self.weight_decay >= 0, f"{key}.weight_decay", "must be 0 or positive")
        self.base_loss.validate(f"{key}.base_loss")
        self.augment.validate(f"{key}.augment")


@dataclass
class EvalConfig:
    batch_size: int = 8
    threshold: float = 0.5  # on the sigmoid probability, after resizing to native resolution
    jaccard_threshold: float = 0.65  # ISIC: per-image Jaccard below this counts as 0
    # Test-time augmentation: average the probabilities over the four flips (4x the compute).
    tta: bool = False
    # Operating-point curves: metrics at this many thresholds evenly spaced in [0.05, 0.95]
    # (raw thresholding, before any clean-up).
    curve_points: int = 19
    # Clean-up of each predicted mask at native resolution, in order: "largest_component",
    # "fill_holes". For one-object tasks (skin lesions); leave empty for vessels or defects.
    postprocess: list[str] = field(default_factory=list)
    # Batches drawn (overlays, XAI) in the dossier; empty: chosen by auto_select.
    selected_batches: list[int] = field(default_factory=list)
    # "mean": the batch whose mean Dice is closest to the test-set mean (as the seed's batch 78);
    # "worst" / "best": the lowest / highest mean Dice. Of the reference variant.
    auto_select: list[str] = field(default_factory=lambda: ["mean", "worst", "best"])
    # The variant whose batch Dice picks the default batch; empty: "balanced" if present, else the first.
    reference_variant: str = ""
    # Against the previous version: a fall of a macro metric by more than this is a regression
    # (reported in the dossier; `run --fail-on-regression` then exits 1).
    regression_tolerance: float = 0.01
    regression_metrics: list[str] = field(default_factory=lambda: list(WATCHED_METRICS))

    def validate(self, key: str) -> None:
        """Own fields only: whether ``reference_variant`` names a variant is AuditConfig's check."""
        _check(self.batch_size > 0, f"{key}.batch_size", f"must be positive, got {self.batch_size}")
        _check(0 < self.threshold < 1, f"{key}.threshold", f"must be in (0, 1), got {self.threshold}")
        _check(0 <= self.jaccard_threshold <= 1, f"{key}.jaccard_threshold", "must be in [0, 1]")
        _check(self.regression_tolerance >= 0, f"{key}.regression_tolerance", "must be >= 0")
        bad = [m for m in self.regression_metrics if m not in COMPARED_METRICS]
        _check(not bad, f"{key}.regression_metrics", f"must be among {', '.join(COMPARED_METRICS)}, got {bad}")
        _check(bool(self.auto_select) and all(a in ("mean", "worst", "best") for a in self.auto_select),
               f"{key}.auto_select", f"must list some of 'mean', 'worst', 'best', got {self.auto_select}")
        _check(all(b >= 0 for b in self.selected_batches), f"{key}.selected_batches",
               "must be batch indices >= 0")
        _check(2 <= self.curve_points <= 99, f"{key}.curve_points", f"must be in 2..99, got {self.curve_points}")
        _check(all(p in ("largest_component", "fill_holes") for p in self.postprocess), f"{key}.postprocess",
               f"must list some of 'largest_component', 'fill_holes', got {self.postprocess}")


@dataclass
class ReportConfig:
    pdf: bool = True
    templates: str = ""  # empty: the templates/ folder shipped beside the package
    figure_dpi: int = 110
    figure_scale: float = 1.0
    max_listed_files: int = 200  # data files listed by name in the dossier (all are in the database)
    # Failure gallery: every test image with Jaccard below evaluate.jaccard_threshold for any
    # variant, as thumbnails with each variant's errors, worst first, up to this many images
    # (the rest are listed by name; all are in the database).
    max_gallery: int = 64
    # Where drawn figures are kept for reuse: a repeat run that shows the same pictures (same
    # models, data and settings) copies them instead of drawing them (report.figure_cache);
    # relative to the working directory; empty: every figure is drawn.
    figure_cache: str = ".cache/glassbox-audit/figures"
    figure_cache_max_mb: float = 512  # the least recently used figures beyond it are deleted after a run
    # Acceptance criteria shown as pass/fail in the summary: "<metric> <op> <value>", where the
    # metric is a macro (image-mean) metric or thresholded_jaccard / lesion_detection_rate.
    acceptance: list[str] = field(default_factory=lambda: list(DEFAULT_ACCEPTANCE))

    def validate(self, key: str) -> None:
        _check(self.max_gallery >= 0, f"{key}.max_gallery", "must be 0 (no gallery) or positive")
        _check(30 <= self.figure_dpi <= 600, f"{key}.figure_dpi", "must be in 30..600")
        _check(self.figure_cache_max_mb > 0, f"{key}.figure_cache_max_mb", "must be positive")
        _check(0.2 <= self.figure_scale <= 5, f"{key}.figure_scale", "must be in 0.2..5")
        _check(self.max_listed_files >= 0, f"{key}.max_listed_files", "must be 0 or positive")
        for i, text in enumerate(self.acceptance):
            m = ACCEPTANCE.match(text)
            _check(bool(m) and m.group(1) in ACCEPTANCE_METRICS, f"{key}.acceptance.{i}",
                   f"must look like 'dice >= 0.85' with a metric among {', '.join(ACCEPTANCE_METRICS)}, "
                   f"got {text!r}")
        if self.templates and not Path(self.templates).is_dir():
            raise ConfigError(f"config key '{key}.templates': folder {self.templates} does not exist")


def default_questions() -> list[str]:
    """Questions every audit answers in its LLM appendix; phrased to fit any set of variants."""
    return [
        "What is the Dice of each model?",
        "Which model has the highest Dice?",
        "What are the precision and recall of each model?",
        "Which model has the highest recall?",
        "Which batch has the lowest Dice for model 1?",
        "What is the ISIC thresholded Jaccard of each model?",
    ]


def default_change_questions() -> list[str]:
    """Questions a version with a stored comparison (a nightly run, any second version) also answers."""
    return [
        "How did the Dice of each model change since the previous version?",
        "Which model's Dice dropped the most since the previous version?",
    ]


@dataclass
class LlmConfig:
    """Questions about a run answered by a local GGUF model, each checked against SQL
    (``glassbox_audit.llm``; ``glassbox-audit ask``)."""

    enabled: bool = True  # answer standard_questions into every new version's appendix
    # "auto": the packaged default with its reader adapter (the reading benchmarks/llm_bench.py measures);
    # or a key of glassbox_audit.llm.KNOWN_MODELS (checked by glassbox_audit.llm.runtime.check_settings).
    model: str = "auto"
    gguf: str = ""  # any GGUF file instead; then sha256 is required
    sha256: str = ""  # pinned hash of the GGUF (a file that differs is refused)
    # Apply the known model's task-tuned LoRA adapter when it ships one (SmolLM2: the question
    # reader of tools/reader_adapter); false reads with the base model and worked examples.
    adapter: bool = True
    n_ctx: int = 4096
    threads: int = 2  # 0: all cores
    # An LLM reading counts towards "verified" only when every choice it made beat the runner-up
    # by this many nats (calibrated mean log-probability per token). The smallest value with no
    # answer verified but wrong on the development split of benchmarks/llm_bench.py: 0.0 for
    # SmolLM2-135M (2026-12-02; agreement with the rule parser already caught every misreading).
    min_margin: float = 0.0
    standard_questions: list[str] = field(default_factory=default_questions)
    # Asked besides standard_questions when the version stores a comparison with an earlier one.
    change_questions: list[str] = field(default_factory=default_change_questions)

    @property
    def asks_questions(self) -> bool:
        return bool(self.standard_questions or self.change_questions)

    def validate(self, key: str) -> None:
        """What needs no LLM code; ``llm.runtime.check_settings`` checks the model name is known."""
        _check(self.model == "auto" or bool(SAFE_NAME.match(self.model)), f"{key}.model",
               f"must be 'auto' or a simple name, got {self.model!r}")
        _check(not self.sha256 or bool(re.fullmatch(r"[0-9a-fA-F]{64}", self.sha256)), f"{key}.sha256",
               f"must be 64 hex digits, got {self.sha256!r}")
        _check(not self.gguf or bool(self.sha256), f"{key}.sha256",
               f"is required when {key}.gguf is set (pin the file's hash)")
        _check(256 <= self.n_ctx <= 32768, f"{key}.n_ctx", f"must be in 256..32768, got {self.n_ctx}")
        _check(self.threads >= 0, f"{key}.threads", f"must be 0 (all cores) or positive, got {self.threads}")
        _check(0 <= self.min_margin <= 50, f"{key}.min_margin", f"must be in 0..50, got {self.min_margin}")
        for name in ("standard_questions", "change_questions"):
            _check(all(t.strip() for t in getattr(self, name)), f"{key}.{name}", "must not hold empty questions")


@dataclass
class ExecutorConfig:
    """Where evaluation shards and explanations run (``glassbox_audit.executor``).

    Not part of any model key or result: a run gives the same figures with either executor.
    """

    # "local": in this process; "dask": the test set in shards over Dask workers, the
    # explanations per batch and variant.
    kind: Literal["local", "dask"] = "local"
    # Address of a running Dask scheduler ("tcp://host:8786"); empty: a LocalCluster on this machine.
    scheduler: str = ""
    n_workers: int = 2  # LocalCluster worker processes (one thread each)
    shards: int = 0  # shards of the test set; 0: two per worker thread (at most one per batch)
    retries: int = 2  # a shard task that raises is run again this many times
    # A task whose worker died this many times is given up (LocalCluster; a running
    # scheduler keeps its own distributed.scheduler.allowed-failures).
    allowed_failures: int = 3
    tf_threads: int = 1  # TensorFlow intra- and inter-op threads in each worker; 0: TensorFlow's default
    connect_timeout: float = 30.0  # seconds to reach the scheduler

    def validate(self, key: str) -> None:
        _check(self.n_workers > 0, f"{key}.n_workers", f"must be positive, got {self.n_workers}")
        _check(self.shards >= 0, f"{key}.shards", f"must be 0 (automatic) or positive, got {self.shards}")
        _check(self.retries >= 0, f"{key}.retries", f"must be 0 or positive, got {self.retries}")
        _check(self.allowed_failures >= 0, f"{key}.allowed_failures",
               f"must be 0 or positive, got {self.allowed_failures}")
        _check(self.tf_threads >= 0, f"{key}.tf_threads",
               f"must be 0 (TensorFlow's default) or positive, got {self.tf_threads}")
        _check(self.connect_timeout > 0, f"{key}.connect_timeout", "must be positive")
        _check(not self.scheduler or "://" in self.scheduler or ":" in self.scheduler, f"{key}.scheduler",
               f"must be a scheduler address like 'tcp://host:8786', got {self.scheduler!r}")


@dataclass
class AuditConfig:
    name: str = "default"
    audits_dir: str = "audits"
    models_dir: str = "models"
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    variants: list[VariantConfig] = field(default_factory=default_variants)
    evaluate: EvalConfig = field(default_factory=EvalConfig)
    xai: XaiSettings = field(default_factory=XaiSettings)
    report: ReportConfig = field(default_factory=ReportConfig)
    llm: LlmConfig = field(default_factory=LlmConfig)
    executor: ExecutorConfig = field(default_factory=ExecutorConfig)
    # External models to audit instead of training the variants (nothing is trained then).
    models: list[ExternalModelConfig] = field(default_factory=list)
    # Load external models that need custom code or Lambda layers (safe mode off); the
    # dossier's provenance says so in red.
    unsafe_load: bool = False

    def __post_init__(self) -> None:
        if self.models:
            self.data.test_only = True  # nothing is trained: every pair the layout offers is measured
        self.validate()

    @property
    def model_names(self) -> list[str]:
        """The names of the models an audit evaluates, in order: the external ones, else the variants."""
        return [m.name for m in self.models] if self.models else [v.name for v in self.variants]

    def validate(self) -> None:
        """Refuse impossible values with a message naming the key: each section checks itself
        under its key, in the order of the tree; this adds the checks that span sections."""
        _check(bool(SAFE_NAME.match(self.name)), "name",
               f"must be 1-64 letters, digits, '.', '_' or '-' starting with a letter or digit, got {self.name!r}")
        self.data.validate("data")
        self.model.validate("model")
        self.train.validate("train")
        names = self._validate_variants("variants")
        if self.models:
            names = self._validate_models("models")
        self.evaluate.validate("evaluate")
        _check(not self.evaluate.reference_variant or self.evaluate.reference_variant in names,
               "evaluate.reference_variant",
               f"must name a variant ({', '.join(names)}), got {self.evaluate.reference_variant!r}")
        _validate_xai(self.xai, "xai")
        self.report.validate("report")
        self.executor.validate("executor")
        self.llm.validate("llm")

    def _validate_models(self, key: str) -> list[str]:
        _check(len(self.models) <= 8, key, f"must list at most 8 models, got {len(self.models)}")
        names = [m.name for m in self.models]
        _check(len(set(names)) == len(names), key, f"names must be unique, got {names}")
        for i, m in enumerate(self.models):
            m.validate(f"{key}.{i}")
        return names

    def _validate_variants(self, key: str) -> list[str]:
        """Check the list as a whole, then each variant; the names, for the checks that refer to them."""
        _check(len(self.variants) > 0, key, "must list at least one variant")
        names = [v.name for v in self.variants]
        _check(len(set(names)) == len(names), key, f"names must be unique, got {names}")
        for i, v in enumerate(self.variants):
            v.validate(f"{key}.{i}")
        return names


def _validate_xai(settings: XaiSettings, key: str) -> None:
    # XaiSettings stays free of this module (it raises ValueError "<key> <message>"); turn its
    # message into the config's own form.
    try:
        settings.validate(key)
    except ValueError as exc:
        dotted, _, message = str(exc).partition(" ")
        raise ConfigError(f"config key '{dotted}' {message}") from None


# --- loading ---------------------------------------------------------------------------


def _type_name(tp: Any) -> str:
    if typing.get_origin(tp) is Literal:
        return " | ".join(repr(a) for a in typing.get_args(tp))
    if typing.get_origin(tp) is list:
        return f"list of {_type_name(typing.get_args(tp)[0])}"
    return getattr(tp, "__name__", str(tp))


def _coerce(value: Any, tp: Any, key: str) -> Any:
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"config key '{key}' must be a table, got {value!r}")
        return from_dict(tp, value, key)
    if origin is Literal:
        if value not in typing.get_args(tp):
            raise ConfigError(f"config key '{key}' must be one of {_type_name(tp)}, got {value!r}")
        return value
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(f"config key '{key}' must be a list, got {value!r}")
        (item,) = typing.get_args(tp)
        return [_coerce(v, item, f"{key}.{i}") for i, v in enumerate(value)]
    if origin in (typing.Union, types.UnionType):
        raise TypeError(f"unsupported config type at {key}")  # keep the schema simple
    # bool is an int subclass: refuse it where a number is meant, and numbers where a flag is.
    if tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif tp is str:
        if isinstance(value, str):
            return value
    raise ConfigError(f"config key '{key}' must be {_type_name(tp)}, got {value!r}")


def from_dict(cls: type, data: dict[str, Any], prefix: str = "") -> Any:
    """Build dataclass ``cls`` from a plain dict, refusing unknown keys and wrong types."""
    hints = typing.get_type_hints(cls)
    fields = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - fields)
    if unknown:
        key = f"{prefix}.{unknown[0]}" if prefix else unknown[0]
        raise ConfigError(f"config key '{key}' is unknown (known here: {', '.join(sorted(fields))})")
    kwargs = {
        name: _coerce(value, hints[name], f"{prefix}.{name}" if prefix else name)
        for name, value in data.items()
    }
    return cls(**kwargs)


def config_to_dict(cfg: Any) -> dict[str, Any]:
    return dataclasses.asdict(cfg)


def config_hash(obj: Any) -> str:
    """sha256 of a config (sub)tree in canonical JSON: equal settings give equal hashes."""
    if dataclasses.is_dataclass(obj):
        obj = dataclasses.asdict(obj)
    text = json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def _parse_override(text: str) -> tuple[list[str], Any]:
    if "=" not in text:
        raise ConfigError(f"override '{text}' must look like key.path=value")
    key, raw = text.split("=", 1)
    key = key.strip()
    try:
        value = tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw  # a bare word is a string: data.layout=isic
    return key.split("."), value


def _set_path(tree: dict[str, Any], parts: list[str], value: Any, key: str) -> None:
    node: Any = tree
    for i, part in enumerate(parts[:-1]):
        if isinstance(node, list):
            if not part.isdigit() or int(part) >= len(node):
                raise ConfigError(f"config key '{key}': no item {part} in '{'.'.join(parts[:i])}'")
            node = node[int(part)]
        else:
            if part not in node or not isinstance(node[part], (dict, list)):
                raise ConfigError(f"config key '{key}' is unknown")
            node = node[part]
    last = parts[-1]
    if isinstance(node, list):
        if not last.isdigit() or int(last) >= len(node):
            raise ConfigError(f"config key '{key}' is unknown")
        node[int(last)] = value
    else:
        if last not in node:
            raise ConfigError(f"config key '{key}' is unknown")
        node[last] = value


def load_config(path: str | Path | None = None, overrides: list[str] | None = None,
                **flags: Any) -> AuditConfig:
    """Load a config: defaults, then the TOML file, then ``key=value`` overrides, then flags.

    ``flags`` are dotted keys with ``__`` for dots (``data__root="..."``); ``None`` is ignored,
    so CLI options left unset keep the file's value.
    """
    tree = config_to_dict(AuditConfig())
    if path is not None:
        p = Path(path)
        try:
            loaded = tomllib.loads(p.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError(f"{p}: config file not found") from None
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise ConfigError(f"{p}: not valid TOML: {exc}") from None
        _merge(tree, loaded, "")
    for text in overrides or []:
        parts, value = _parse_override(text)
        _set_path(tree, parts, value, ".".join(parts))
    for name, value in flags.items():
        if value is not None:
            parts = name.split("__")
            _set_path(tree, parts, value, ".".join(parts))
    return from_dict(AuditConfig, tree)


def _merge(tree: dict[str, Any], loaded: dict[str, Any], prefix: str) -> None:
    for key, value in loaded.items():
        dotted = f"{prefix}.{key}" if prefix else key
        if key not in tree:
            raise ConfigError(f"config key '{dotted}' is unknown (known here: {', '.join(sorted(tree))})")
        if isinstance(tree[key], dict) and isinstance(value, dict):
            _merge(tree[key], value, dotted)
        else:
            tree[key] = value  # lists (variants) replace the default list whole
