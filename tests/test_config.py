"""Configuration: TOML plus overrides, and one clear message per mistake."""

import pytest

from glassbox_audit.config import AuditConfig, config_hash, load_config
from glassbox_audit.errors import ConfigError


def test_defaults_describe_three_variants_on_synthetic_data():
    cfg = AuditConfig()
    assert cfg.data.layout == "synthetic"
    assert [v.name for v in cfg.variants] == ["precision-optimized", "balanced", "recall-optimized"]
    precision, _, recall = cfg.variants
    assert precision.loss.alpha > precision.loss.beta  # false positives cost more
    assert recall.loss.beta > recall.loss.alpha  # misses cost more


def test_toml_file_then_overrides_then_flags(tmp_path):
    path = tmp_path / "audit.toml"
    path.write_text('name = "nightly"\n[train]\nepochs = 5\n[model]\nbase_filters = 16\n')
    cfg = load_config(path, ["train.epochs=7"], model__base_filters=None, name="flagged")
    assert (cfg.name, cfg.train.epochs, cfg.model.base_filters) == ("flagged", 7, 16)


def test_variants_can_be_replaced_in_toml(tmp_path):
    path = tmp_path / "audit.toml"
    path.write_text('[[variants]]\nname = "only"\n[variants.loss]\nkind = "tversky"\nalpha = 0.9\nbeta = 0.1\n'
                    '[evaluate]\nreference_variant = "only"\n')
    cfg = load_config(path)
    assert [v.name for v in cfg.variants] == ["only"]
    assert cfg.variants[0].loss.alpha == 0.9


@pytest.mark.parametrize("override, message", [
    ("train.epocs=3", "'train.epocs' is unknown"),
    ('train.epochs="ten"', "'train.epochs' must be int"),
    ("train.epochs=true", "'train.epochs' must be int"),
    ("train.epochs=0", "'train.epochs' must be positive"),
    ("model.input_size=100", "'model.input_size' must be a multiple of"),
    ("model.base_filters=-4", "'model.base_filters' must be positive"),
    ("data.layout=nifti", "'data.layout' must be one of"),
    ("evaluate.threshold=1.5", "'evaluate.threshold' must be in (0, 1)"),
    ("variants.0.loss.alpha=-1", "'variants.0.loss' alpha and beta must be >= 0"),
    ("name=../../x", "'name' must be"),
    ("evaluate.reference_variant=nope", "'evaluate.reference_variant' must name a variant"),
    ('report.acceptance=["dice => 0.8"]', "'report.acceptance.0' must look like 'dice >= 0.85'"),
    ('report.acceptance=["volume >= 2"]', "'report.acceptance.0' must look like"),
    ('evaluate.regression_metrics=["speed"]', "'evaluate.regression_metrics' must be among"),
])
def test_bad_values_name_the_key(override, message):
    with pytest.raises(ConfigError) as err:
        load_config(overrides=[override])
    assert message in str(err.value)


def test_missing_data_folder_is_named(tmp_path):
    missing = tmp_path / "nowhere"
    with pytest.raises(ConfigError, match="nowhere"):
        load_config(overrides=["data.layout=folder"], data__root=str(missing))


def test_unknown_key_in_toml_is_named(tmp_path):
    path = tmp_path / "audit.toml"
    path.write_text("[model]\nwidth = 3\n")
    with pytest.raises(ConfigError, match="'model.width' is unknown"):
        load_config(path)


def test_invalid_toml_names_the_file(tmp_path):
    path = tmp_path / "broken.toml"
    path.write_text("[model\n")
    with pytest.raises(ConfigError, match="broken.toml"):
        load_config(path)


def test_config_hash_tracks_values():
    assert config_hash(AuditConfig()) == config_hash(AuditConfig())
    assert config_hash(load_config(overrides=["train.epochs=3"])) != config_hash(AuditConfig())
