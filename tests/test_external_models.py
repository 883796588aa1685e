"""Auditing models trained elsewhere: plain Keras models with their own names, sizes, channels
and output activations get the same sealed dossier; what cannot be audited is refused by name."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import keras
import numpy as np
import pytest
from click.testing import CliRunner
from keras import layers

from conftest import tiny_overrides
from glassbox_audit.cli import cli
from glassbox_audit.config import ExternalModelConfig, load_config
from glassbox_audit.errors import ConfigError, ModelError
from glassbox_audit.models.external import load_external, unsafe_parts
from glassbox_audit.store import AuditStore


def plain_unet(size: int, channels: int, sigmoid: bool, name: str) -> keras.Model:
    """A small encoder-decoder written with plain Keras layers, none named as our builder names them."""
    keras.utils.set_random_seed(size)
    x = inp = keras.Input((size, size, channels), name="pixels")
    a = layers.Conv2D(8, 3, padding="same", activation="relu", name="stem")(x)
    b = layers.Conv2D(12, 3, strides=2, padding="same", activation="relu", name="squeeze")(a)
    c = layers.Conv2D(12, 3, padding="same", activation="relu", name="deep")(b)
    d = layers.Conv2DTranspose(8, 2, strides=2, name="widen")(c)
    e = layers.Concatenate(name="merge")([a, d])
    out = layers.Conv2D(1, 1, activation="sigmoid" if sigmoid else None, name="head")(e)
    return keras.Model(inp, out, name=name)


def discs(n: int, size: int, channels: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Dark discs on a light background: images in [0, 1] and their masks."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    masks = np.stack([((yy - rng.integers(size // 3, 2 * size // 3)) ** 2 + (xx - rng.integers(size // 3, 2 * size // 3)) ** 2
                       < (size // 4) ** 2) for _ in range(n)]).astype("float32")[..., None]
    images = np.repeat(0.8 - 0.5 * masks, channels, axis=-1) + rng.normal(0, 0.05, (n, size, size, channels))
    return np.clip(images, 0, 1).astype("float32"), masks


def fitted(model: keras.Model, seed: int = 0) -> keras.Model:
    """A few steps on dark discs, so the maps have something to explain."""
    keras.utils.set_random_seed(seed)
    images, masks = discs(32, model.input_shape[1], model.input_shape[3], seed)
    logits = model.layers[-1].activation.__name__ != "sigmoid"
    model.compile(optimizer=keras.optimizers.Adam(1e-2), loss=keras.losses.BinaryCrossentropy(from_logits=logits))
    model.fit(images, masks, epochs=12, batch_size=8, verbose=0)
    return model


@pytest.fixture(scope="module")
def user_files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("user-models")
    grey = fitted(plain_unet(64, 1, True, "grey_net"))
    grey.save(folder / "grey64.keras")
    rgb = fitted(plain_unet(48, 3, False, "rgb_logits"), seed=1)
    rgb.save(folder / "rgb48.h5")
    return {"grey": folder / "grey64.keras", "rgb": folder / "rgb48.h5", "folder": folder}


def _models_override(entries: list[dict]) -> str:
    return "models=[" + ", ".join("{" + ", ".join(f'{k}="{v}"' for k, v in e.items()) + "}" for e in entries) + "]"


@pytest.fixture(scope="module")
def external_audit(user_files, tmp_path_factory):
    from glassbox_audit import run_audit

    tmp = tmp_path_factory.mktemp("external")
    entries = [{"name": "grey", "path": user_files["grey"], "description": "Team A's <b>grey</b> net"},
               {"name": "rgb", "path": user_files["rgb"], "preprocess": "symmetric"}]
    cfg = load_config(overrides=tiny_overrides(tmp) + ["name=external", "report.pdf=false", _models_override(entries)])
    return {"result": run_audit(cfg), "tmp": tmp, "cfg": cfg}


def test_two_external_models_get_a_full_sealed_audit_with_their_cards(external_audit):
    result = external_audit["result"]
    assert list(result.summary) == ["grey", "rgb"]
    assert CliRunner().invoke(cli, ["verify", str(result.path)], obj={}).exit_code == 0
    html = result.html.read_text()
    assert html.count("External: training not audited.") == 2
    assert "Team A&#39;s &lt;b&gt;grey&lt;/b&gt; net" in html  # the user's words, escaped
    assert "RGB scaled to [-1, 1]" in html and "final activation sigmoid" in html and "final activation linear" in html
    with AuditStore(result.database, readonly=True) as store:
        cards = {r["name"]: json.loads(r["card_json"]) for r in store.rows("select name, card_json from models")}
    assert cards["grey"]["architecture"]["model_input_shape"] == [64, 64, 1]
    assert cards["rgb"]["external"]["format"] == ".h5" and cards["rgb"]["external"]["unsafe_load"] is False


def test_explanations_of_external_models_are_finite_and_follow_their_depth(external_audit):
    result = external_audit["result"]
    with AuditStore(result.database, readonly=True) as store:
        notes = store.rows("select note from xai_notes")
        checks = store.rows("select model, method, value from xai_checks where check_name = 'deletion'")
    assert {"grey", "rgb"} <= {c["model"] for c in checks}
    assert "layer_gradcam/bottom 32 px" in {c["method"] for c in checks if c["model"] == "grey"}
    assert all(c["value"] is not None and np.isfinite(c["value"]) for c in checks)
    assert any("attention skipped for grey: the model has no attention gates" in n["note"] for n in notes)
    assert "has no attention gates" in result.html.read_text()
    figures = {p.name for p in (result.path / "figures").iterdir()}
    assert "batch0000_xai_layer_gradcam_grey.png" in figures and "batch0000_xai_saliency.png" in figures


def test_layer_gradcam_groups_an_unknown_architecture_by_resolution(user_files):
    from glassbox_audit.models.external import adapt, check_contract
    from glassbox_audit.xai.cam import LayerGradCAM, depth_groups

    model = keras.models.load_model(user_files["grey"], compile=False)
    entry = ExternalModelConfig("grey", str(user_files["grey"]))
    logits = adapt(model, entry, 32, check_contract(model, user_files["grey"]))
    assert depth_groups(logits) == {"down 64 px": ["stem"], "bottom 32 px": ["deep"], "up 64 px": ["merge"]}
    images, masks = discs(2, 32, 3, seed=5)
    maps = LayerGradCAM(logits).explain(images, target="truth", masks=masks[..., 0])
    assert set(maps) == {"down 64 px", "bottom 32 px", "up 64 px"}
    assert all(np.isfinite(m).all() and m.shape == (2, 32, 32) for m in maps.values())
    assert sum(m.max() > 0 for m in maps.values()) >= 2  # the stages respond to the lesion, not all zero


def test_the_logits_view_is_the_inverse_sigmoid_of_the_models_output(user_files, tmp_path):
    images = np.random.default_rng(2).random((3, 32, 32, 3)).astype("float32")
    stored = load_external(ExternalModelConfig("grey", str(user_files["grey"])), 32, tmp_path, sample=images)
    original = keras.models.load_model(user_files["grey"], compile=False)
    grey = (images @ np.array([0.299, 0.587, 0.114], np.float32))[..., None]
    p = np.asarray(original(keras.ops.image.resize(grey, (64, 64))))  # the model on its own input
    logits = np.asarray(stored.model(images))  # at the audit's size, resized back from 64 px
    expected = np.asarray(keras.ops.image.resize(np.log(p / (1 - p)), (32, 32)))
    assert np.allclose(logits, expected, atol=1e-3)
    assert stored.card["external"]["output_activation"] == "sigmoid"
    assert 0 <= stored.card["external"]["observed_output_range"][0] <= stored.card["external"]["observed_output_range"][1] <= 1


def _save(model: keras.Model, path: Path) -> Path:
    model.save(path)
    return path


def test_refusals_name_the_file_and_the_problem(tmp_path):
    size_in = keras.Input((32, 32, 3))
    two = keras.Model(size_in, [layers.Conv2D(1, 1)(size_in), layers.Conv2D(1, 1)(size_in)])
    rgb_out = keras.Model(size_in, layers.Conv2D(3, 1, activation="sigmoid")(size_in))
    relu_out = keras.Model(size_in, layers.Conv2D(1, 1, activation="relu")(size_in))
    lam = keras.Model(size_in, layers.Lambda(lambda t: t[..., :1] * 2.0, name="double")(size_in))
    (tmp_path / "notes.keras").write_text("not a model")
    cases = {
        _save(two, tmp_path / "two.keras"): "has 2 outputs",
        _save(rgb_out, tmp_path / "rgb_out.keras"): "output shape (32, 32, 3) is not a single-channel map",
        _save(relu_out, tmp_path / "relu.keras"): "ends in a relu activation",
        _save(lam, tmp_path / "lambda.keras"): "Lambda layer 'double'",
        tmp_path / "notes.keras": "not a Keras model file",
        tmp_path / "missing.keras": "model file not found",
    }
    for path, problem in cases.items():
        with pytest.raises(ModelError, match=str(path.name)) as err:
            load_external(ExternalModelConfig(path.stem, str(path)), 32, tmp_path / "store")
        assert problem in str(err.value), str(err.value)
    assert "--unsafe-load" in str(pytest.raises(ModelError, load_external, ExternalModelConfig("lam", str(tmp_path / "lambda.keras")),
                                                32, tmp_path / "store").value)


def test_unsafe_load_runs_a_lambda_model_and_the_dossier_says_so_in_red(tmp_path):
    from glassbox_audit import run_audit

    inp = keras.Input((32, 32, 3))
    x = layers.Conv2D(4, 3, padding="same", activation="relu", name="body")(inp)
    x = layers.Lambda(lambda t: t * 0.5, name="halve")(x)
    model = keras.Model(inp, layers.Conv2D(1, 1, name="out")(x))
    path = _save(model, tmp_path / "lam.keras")
    assert unsafe_parts(json.loads(zipfile.ZipFile(path).read("config.json")))[0] == "Lambda layer 'halve'"
    cfg = load_config(overrides=tiny_overrides(tmp_path) + [
        "name=unsafe", "report.pdf=false", "xai.enabled=false", "unsafe_load=true",
        _models_override([{"name": "lam", "path": path}])])
    html = run_audit(cfg).html.read_text()
    assert '<span class="fail">Loaded with --unsafe-load' in html and "loaded with --unsafe-load (safe mode off)" in html


def test_a_changed_model_file_shows_in_the_change_log(external_audit, user_files):
    from glassbox_audit import run_audit

    changed = user_files["folder"] / "grey64-v2.keras"
    other = keras.models.load_model(user_files["grey"], compile=False)
    other.get_layer("head").set_weights([w * 1.5 for w in other.get_layer("head").get_weights()])
    other.save(changed)
    cfg = external_audit["cfg"]
    entries = [{"name": "grey", "path": changed}, {"name": "rgb", "path": user_files["rgb"], "preprocess": "symmetric"}]
    again = run_audit(load_config(overrides=tiny_overrides(external_audit["tmp"]) + [
        "name=external", "report.pdf=false", "xai.enabled=false", _models_override(entries)]))
    with AuditStore(again.database, readonly=True) as store:
        _, changes = store.comparison(store.run()["id"])
    assert [c["what"] for c in changes if c["what"].startswith("weights")] == ["weights grey"]
    assert cfg.models[0].path != str(changed)


def test_a_user_model_beside_one_of_our_trained_variants(two_runs, user_files, tmp_path):
    from glassbox_audit import run_audit
    from glassbox_audit.models import latest_by_name

    tmp = two_runs["tmp"]
    ours = latest_by_name(tmp / "models", "balanced")
    entries = [{"name": "theirs", "path": user_files["rgb"], "preprocess": "symmetric"},
               {"name": "balanced", "path": ours.path}]
    result = run_audit(load_config(overrides=tiny_overrides(tmp_path) + [  # its own audits folder
        "name=side-by-side", "report.pdf=false", "xai.enabled=false", _models_override(entries)]))
    html = result.html.read_text()
    assert list(result.summary) == ["theirs", "balanced"]
    assert html.count("External: training not audited.") == 1  # ours keeps its training card
    with AuditStore(result.database, readonly=True) as store:
        shas = {r["model_name"]: r["model_sha256"] for r in store.rows("select model_name, model_sha256 from evaluations")}
    assert shas["balanced"] == ours.sha256


def test_cli_evaluate_and_run_take_models_by_name_and_path(user_files, tmp_path):
    args = ["--set", "report.pdf=false"] + [a for o in tiny_overrides(tmp_path) for a in ("--set", o)]
    out = CliRunner().invoke(cli, ["evaluate", "--model", f"g={user_files['grey']}", *args], obj={})
    assert out.exit_code == 0, out.output
    doc = json.loads(out.stdout)
    assert list(doc["models"]) == ["g"] and 0 <= doc["models"]["g"]["macro"]["dice"] <= 1
    bad = CliRunner().invoke(cli, ["evaluate", "--model", "no-path", *args], obj={})
    assert bad.exit_code == 2 and "must look like NAME=PATH" in bad.stderr


def test_models_in_the_config_are_checked_before_anything_runs(tmp_path):
    with pytest.raises(ConfigError, match="models.1.name"):
        load_config(overrides=[_models_override([{"name": "a", "path": "x.keras"}, {"name": "a b", "path": "y.keras"}])])
    with pytest.raises(ConfigError, match="names must be unique"):
        load_config(overrides=[_models_override([{"name": "a", "path": "x.keras"}, {"name": "a", "path": "y.keras"}])])
    with pytest.raises(ConfigError, match="at most 8 models"):
        load_config(overrides=[_models_override([{"name": f"m{i}", "path": "x.keras"} for i in range(9)])])


def test_questions_name_external_models_by_their_own_names(external_audit):
    from glassbox_audit.llm import Catalog, answer_question, parse_question

    db = external_audit["result"].database
    catalog = Catalog.load(db)
    assert catalog.model_names == ["grey", "rgb"]
    assert parse_question("What is the Dice of rgb?", catalog).models == ("rgb",)
    ans = answer_question("Dice of model 1", db)  # no LLM: the parser's reading, for review
    assert [v.model for v in ans.values] == ["grey"] and ans.values[0].value is not None


def test_a_fleet_audit_takes_external_models_from_its_config_file(user_files, tmp_path):
    from glassbox_audit.fleet import load_fleet

    config = tmp_path / "external.toml"
    config.write_text(f'[[models]]\nname = "grey"\npath = "{user_files["grey"]}"\n\n'
                      f'[[models]]\nname = "rgb"\npath = "{user_files["rgb"]}"\npreprocess = "symmetric"\n')
    fleet = tmp_path / "fleet.toml"
    fleet.write_text('[[audit]]\nname = "site-a"\nconfig = "external.toml"\n')
    [cfg] = load_fleet(fleet).configs()
    assert cfg.model_names == ["grey", "rgb"] and cfg.models[1].preprocess == "symmetric"


def test_eight_models_in_one_audit_each_get_their_row_colour_and_card(user_files, tmp_path):
    from glassbox_audit import run_audit

    entries = [{"name": f"m{i}", "path": user_files["rgb"] if i % 2 else user_files["grey"]} for i in range(8)]
    result = run_audit(load_config(overrides=tiny_overrides(tmp_path) + [
        "name=eight", "report.pdf=false", "xai.enabled=false", _models_override(entries)]))
    assert list(result.summary) == [f"m{i}" for i in range(8)]
    html = result.html.read_text()
    assert html.count("External: training not audited.") == 8
    with AuditStore(result.database, readonly=True) as store:
        assert store.rows("select count(*) as n from evaluations")[0]["n"] == 8
        charts = {a["path"] for a in store.artifacts(store.run()["id"]) if a["kind"] == "chart"}
    assert {"figures/metric_comparison.png", "figures/confusion_matrices.png"} <= charts
