"""Configuration sections: each checks its own fields under the key it is given; the tree adds
only what spans sections; loading a config needs none of the LLM code."""

import subprocess
import sys
from pathlib import Path

import pytest

from glassbox_audit.config import (
    AugmentConfig,
    AuditConfig,
    DataConfig,
    EvalConfig,
    ExecutorConfig,
    FolderConfig,
    LlmConfig,
    LossConfig,
    ModelConfig,
    ReportConfig,
    SyntheticConfig,
    TrainConfig,
    VariantConfig,
    load_config,
)
from glassbox_audit.errors import ConfigError

REPO = Path(__file__).resolve().parents[1]

SECTIONS = [
    (SyntheticConfig, "data.synthetic"), (FolderConfig, "data.folder"), (DataConfig, "data"),
    (AugmentConfig, "train.augment"), (ModelConfig, "model"), (LossConfig, "train.base_loss"),
    (TrainConfig, "train"), (VariantConfig, "variants.0"), (EvalConfig, "evaluate"),
    (ReportConfig, "report"), (LlmConfig, "llm"), (ExecutorConfig, "executor"),
]


@pytest.mark.parametrize("section, key", SECTIONS, ids=[k for _, k in SECTIONS])
def test_every_section_accepts_its_defaults_standalone(section, key):
    assert section().validate(key) is None


@pytest.mark.parametrize("section, key, message", [
    (TrainConfig(epochs=0), "train", "config key 'train.epochs' must be positive, got 0"),
    (LossConfig(alpha=-1), "variants.1.loss", "config key 'variants.1.loss' alpha and beta must be >= 0"),
    (LossConfig(alpha=0, beta=0), "train.base_loss", "config key 'train.base_loss' alpha + beta must be positive"),
    (LossConfig(dice_weight=2), "variants.2.loss", "config key 'variants.2.loss.dice_weight' must be in [0, 1]"),
    (SyntheticConfig(height=8), "data.synthetic", "config key 'data.synthetic.height' must be in 16..4096, got 8"),
    (FolderConfig(mask_ext="bmp"), "data.folder", "config key 'data.folder.mask_ext' must start with '.'"),
    (DataConfig(limit=-1), "data", "config key 'data.limit' must be 0 (all) or positive, got -1"),
    (AugmentConfig(hue=0.6), "train.augment", "config key 'train.augment.hue' must be in [0, 0.5]"),
    (ModelConfig(input_size=100), "model",
     "config key 'model.input_size' must be a multiple of 2**model.depth = 16, got 100"),
    (VariantConfig(name="../x"), "variants.2", "config key 'variants.2.name' must be a simple name, got '../x'"),
    (EvalConfig(curve_points=1), "evaluate", "config key 'evaluate.curve_points' must be in 2..99, got 1"),
    (ReportConfig(max_gallery=-1), "report", "config key 'report.max_gallery' must be 0 (no gallery) or positive"),
    (ReportConfig(acceptance=["volume >= 2"]), "report", "config key 'report.acceptance.0' must look like"),
    (LlmConfig(n_ctx=10), "llm", "config key 'llm.n_ctx' must be in 256..32768, got 10"),
    (LlmConfig(gguf="model.gguf"), "llm", "config key 'llm.sha256' is required when llm.gguf is set"),
    (ExecutorConfig(n_workers=0), "executor", "config key 'executor.n_workers' must be positive, got 0"),
])
def test_a_section_names_its_own_key(section, key, message):
    with pytest.raises(ConfigError) as err:
        section.validate(key)
    assert message in str(err.value)


@pytest.mark.parametrize("section, key, message", [
    (DataConfig(synthetic=SyntheticConfig(n_val=0)), "data", "'data.synthetic.n_val' must be positive"),
    (DataConfig(folder=FolderConfig(val_fraction=0.5, test_fraction=0.5)), "data",
     "'data.folder.test_fraction' plus val_fraction must be below 1"),
    (TrainConfig(base_loss=LossConfig(bce_weight=-1)), "train", "'train.base_loss.bce_weight' must be >= 0"),
    (TrainConfig(augment=AugmentConfig(min_scale=0)), "train", "'train.augment.min_scale' must be in (0, 1]"),
    (VariantConfig(loss=LossConfig(alpha=-1)), "variants.3", "'variants.3.loss' alpha and beta must be >= 0"),
])
def test_a_section_checks_its_sub_tables_under_its_key(section, key, message):
    with pytest.raises(ConfigError) as err:
        section.validate(key)
    assert message in str(err.value)


def test_checks_across_sections_belong_to_the_tree():
    EvalConfig(reference_variant="nope").validate("evaluate")  # the section cannot know the variants
    with pytest.raises(ConfigError, match="'evaluate.reference_variant' must name a variant"):
        AuditConfig(evaluate=EvalConfig(reference_variant="nope"))
    with pytest.raises(ConfigError, match="'variants' names must be unique"):
        AuditConfig(variants=[VariantConfig("a"), VariantConfig("a")])
    with pytest.raises(ConfigError, match="'variants' must list at least one variant"):
        AuditConfig(variants=[])


def test_llm_model_is_checked_for_form_here_and_against_the_known_models_by_the_runtime():
    with pytest.raises(ConfigError, match="'llm.model' must be 'auto' or a simple name, got 'a b'"):
        load_config(overrides=['llm.model="a b"'])
    cfg = load_config(overrides=["llm.model=no-such-model"])  # a simple name: the runtime's to judge

    from glassbox_audit.llm.runtime import KNOWN_MODELS, check_settings

    with pytest.raises(ConfigError) as err:
        check_settings(cfg.llm)
    assert str(err.value) == (f"config key 'llm.model' must be 'auto' or one of {', '.join(KNOWN_MODELS)}, "
                              "got 'no-such-model'")
    for name in ("auto", *KNOWN_MODELS):
        check_settings(LlmConfig(model=name))


def test_loading_a_config_does_not_import_the_llm_package():
    # A fresh interpreter: this test process has imported glassbox_audit.llm above.
    code = ("import sys, glassbox_audit.config as c; c.AuditConfig(); c.load_config(overrides=['llm.model=x']); "
            "found = sorted(m for m in sys.modules if m.startswith('glassbox_audit.llm')); "
            "assert not found, found")
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
