"""The fault battery: bad input, crashes and concurrent runs against a real audit with history.

Every case does one bad thing through the real command line, in this process with click's
``CliRunner`` or, where the fault needs a process of its own (``kill -9``, two runs at once, a
lock held elsewhere, a file-size limit), as real ``python -m glassbox_audit`` children. Each
returns an :class:`Outcome`: what was done, the exit code, the message, whether every version
that existed before is still byte-identical and passes ``verify``, and ``PRAGMA
integrity_check`` of every visible version's database. ``Outcome.held`` says whether the
guarantee held and ``problems`` says why not.

``tests/reliability`` asserts ``held`` case by case; ``benchmarks/fault_battery.py`` prints one
row per case and repeats ``kill -9`` twenty times.

The audits are tiny (32 px, one variant, no explanations) and load one pre-trained model by
hash, so a run costs a few seconds; the faults do not depend on the size.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import random
import re
import resource
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import cv2
import numpy as np

TESTS = Path(__file__).resolve().parents[1]
REPO = TESTS.parent
if str(TESTS) not in sys.path:  # the benchmark imports this module without pytest
    sys.path.insert(0, str(TESTS))

from conftest import disc_pair, tiny_overrides  # noqa: E402
from . import gate  # noqa: E402

from glassbox_audit.versions import MANIFEST, list_versions, verify_path  # noqa: E402

__all__ = ["CASES", "Outcome", "Sandbox", "kill_nine", "run_case"]

AUDIT = "nightly"
ONE_VARIANT = 'variants=[{name="balanced", loss={kind="dice"}}]'
# No explanations and no LLM appendix: they add minutes of computing, not new ways to fail
# (explanations are computed before the version is reserved; the appendix writes into the
# version's own database like every other stage). The benchmark can turn the LLM back on.
SPEED = ["xai.enabled=false", "llm.enabled=false"]


# --- the sandbox: a trained model store and an audit with two versions --------------------


@dataclass
class Ran:
    """A finished command: exit code, its streams, and an exception that escaped (in-process)."""

    exit_code: int | None
    stdout: str
    stderr: str
    exception: BaseException | None = None
    seconds: float = 0.0


class Sandbox:
    """Everything a case touches, under one folder (with a space in its name, always).

    ``prepare()`` trains the tiny model once and writes versions v001 and v002 of the audit
    ``nightly``; cases then add versions, or try to and must fail cleanly.
    """

    def __init__(self, root: Path, llm: bool = False):
        self.root = Path(root) / "fault battery"
        self.root.mkdir(parents=True, exist_ok=True)
        self.audits = self.root / "audits"
        self.models = self.root / "models"
        self.llm = llm
        _quiet_logging(self.root / "battery.log")

    # -- commands --

    def overrides(self, audits: Path | None = None, models: Path | None = None) -> list[str]:
        out = []
        for o in tiny_overrides(self.root) + [ONE_VARIANT] + [x for x in SPEED if not (self.llm and "llm" in x)]:
            if audits is not None and o.startswith("audits_dir="):
                o = f'audits_dir="{audits}"'
            if models is not None and o.startswith("models_dir="):
                o = f'models_dir="{models}"'
            out.append(o)
        return out

    def run_args(self, *extra: str, name: str = AUDIT, audits: Path | None = None,
                 models: Path | None = None, pdf: bool = False) -> list[str]:
        args = ["-q", "run", "--name", name] + ([] if pdf else ["--no-pdf"])
        for o in self.overrides(audits, models):
            args += ["--set", o]
        return args + list(extra)

    def invoke(self, args: list[str]) -> Ran:
        """Run the CLI in this process (no TensorFlow start-up per call)."""
        from click.testing import CliRunner

        from glassbox_audit.cli import cli

        t0 = time.perf_counter()
        r = CliRunner().invoke(cli, args, obj={})
        exc = r.exception if r.exception is not None and not isinstance(r.exception, SystemExit) else None
        return Ran(r.exit_code, r.stdout, r.stderr, exc, time.perf_counter() - t0)

    def spawn(self, args: list[str], preexec: Callable[[], None] | None = None,
              gated: tuple[str, Path] | None = None) -> subprocess.Popen:
        """Start ``python -m glassbox_audit ARGS`` as a real child process; with ``gated``
        (pattern, signal file), the same command gated as in :func:`gate.install`."""
        env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONUNBUFFERED="1")
        command = (["-m", "glassbox_audit"] if gated is None
                   else ["-c", gate.GATED_MAIN, str(TESTS), gated[0], str(gated[1])])
        return subprocess.Popen([sys.executable, *command, *args], cwd=self.root, env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                errors="backslashreplace", preexec_fn=preexec)

    def call(self, args: list[str], preexec: Callable[[], None] | None = None,
             gated: tuple[str, Path] | None = None) -> Ran:
        t0 = time.perf_counter()
        p = self.spawn(args, preexec, gated)
        out, err = p.communicate()
        return Ran(p.returncode, out, err, None, time.perf_counter() - t0)

    # -- state --

    def prepare(self) -> None:
        """Train the tiny model once and write v001 and v002 (idempotent)."""
        if len(list_versions(self.audits / AUDIT)) >= 2:
            return
        train = ["-q", "train"]
        for o in self.overrides():
            train += ["--set", o]
        for args in (train, self.run_args(), self.run_args()):
            r = self.invoke(args)
            if r.exit_code != 0:
                raise RuntimeError(f"battery set-up failed: {args[1]}: {r.stderr or r.exception}")

    @property
    def synthetic(self) -> Path:
        return next((self.root / "cache").glob("synthetic-*"))

    def folder(self, label: str) -> Path:
        """A copy of the synthetic dataset as a ``folder`` layout with split lists; its
        training files are identical, so the stored model is found by hash."""
        dest = self.root / "data sets" / label
        if dest.exists():
            shutil.rmtree(dest)
        shutil.copytree(self.synthetic, dest)
        return dest

    def folder_args(self, data: Path, *extra: str, **kw) -> list[str]:
        return self.run_args("--layout", "folder", "--data", str(data), "--set", 'data.folder.splits="splits"',
                             *extra, **kw)

    def copy_audits(self, label: str) -> Path:
        """A private copy of the audits folder, for cases that damage it on purpose."""
        dest = self.root / "copies" / label / "audits"
        if dest.exists():
            _make_writable(dest.parent)
            shutil.rmtree(dest.parent)
        shutil.copytree(self.audits, dest)
        return dest


def _quiet_logging(path: Path) -> None:
    """Send the tool's log to a file: in this process, a handler bound to one CliRunner's
    stream would write to a closed stream on the next call."""
    root = logging.getLogger()
    if not root.handlers:
        root.addHandler(logging.FileHandler(path, encoding="utf-8", errors="backslashreplace"))
    logging.getLogger("glassbox_audit").setLevel(logging.INFO)


def _make_writable(folder: Path) -> None:
    for p in folder.rglob("*"):
        if p.is_file():
            p.chmod(0o644)


# --- what every case checks --------------------------------------------------------------


def tree_hashes(folder: Path) -> dict[str, str]:
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def visible_versions(audits: Path) -> list[Path]:
    if not audits.is_dir():
        return []
    return [p for a in sorted(audits.iterdir()) if a.is_dir() and not a.name.startswith(".")
            for _, p in list_versions(a)]


def snapshot(audits: Path) -> dict[Path, dict[str, str]]:
    return {v: tree_hashes(v) for v in visible_versions(audits)}


def integrity(audits: Path) -> str:
    """``PRAGMA integrity_check`` of every visible version's database and of the audit-level
    ones beside them (questions asked after sealing): "ok" or the first fault."""
    dbs = [v / "audit.sqlite" for v in visible_versions(audits)]
    dbs += sorted(p for a in audits.iterdir() if a.is_dir() for p in a.glob("*.sqlite")) if audits.is_dir() else []
    for db in dbs:
        v = db.parent
        if not db.is_file():
            return f"{v.name}: no audit.sqlite"
        try:
            conn = sqlite3.connect(db.resolve().as_uri() + "?mode=ro", uri=True, timeout=60)
            try:
                (result,) = conn.execute("PRAGMA integrity_check").fetchone()
            finally:
                conn.close()
        except sqlite3.Error as exc:
            return f"{v.parent.name}/{v.name}: {exc}"
        if result != "ok":
            return f"{v.parent.name}/{v.name}: {result}"
    return "ok"


def leftovers(audits: Path) -> list[str]:
    """Hidden folders of builds that did not finish (never visible as versions)."""
    if not audits.is_dir():
        return []
    return sorted(f"{a.name}/{p.name}" for a in audits.iterdir() if a.is_dir()
                  for p in a.iterdir() if p.name.startswith((".building-", ".reserved-")))


@dataclass
class Outcome:
    """One row of the battery."""

    case: str
    did: str
    exit_code: int | None = None
    message: str = ""
    earlier_verify: bool = True  # every version present before: byte-identical and verify ok
    integrity: str = "ok"
    problems: list[str] = field(default_factory=list)
    extra: dict = field(default_factory=dict)

    @property
    def held(self) -> bool:
        return not self.problems

    def row(self) -> dict:
        return {"case": self.case, "what was done": self.did, "exit": self.exit_code, "message": self.message,
                "earlier versions verify": ("yes" if self.earlier_verify else
                                            "NO (edited on purpose)" if self.extra.get("edited") else "NO"),
                "integrity": self.integrity,
                "held": "yes" if self.held else "NO: " + "; ".join(self.problems)}


def settle(o: Outcome, audits: Path, before: dict[Path, dict[str, str]]) -> Outcome:
    """Check what must hold after any case: earlier versions untouched and verifying, every
    visible version complete (verifies, chain included), every database intact."""
    for v, hashes in before.items():
        if not v.is_dir():
            o.earlier_verify = False
            o.problems.append(f"{v.name} disappeared")
        elif tree_hashes(v) != hashes:
            o.earlier_verify = False
            o.problems.append(f"{v.name} changed")
    for v in visible_versions(audits):
        [report] = verify_path(v)
        if not report.ok:
            if v in before:
                o.earlier_verify = False
            o.problems.append(f"{v.parent.name}/{v.name} fails verify (changed {report.changed}, added "
                              f"{report.added}, removed {report.removed}, chain {report.chain})")
    o.integrity = integrity(audits)
    if o.integrity != "ok":
        o.problems.append(f"integrity: {o.integrity}")
    return o


def expect_error(o: Outcome, ran: Ran, *names: str, code: int = 2, whole_stderr: bool = False) -> None:
    """A clean refusal: exit ``code``, one ``error:`` line naming each of ``names``, no traceback.

    ``whole_stderr``: stderr must be that one line and nothing else (child processes run
    with ``-q``; in this process the log goes to a file anyway).
    """
    o.exit_code = ran.exit_code
    lines = [ln for ln in ran.stderr.splitlines() if ln.strip()]
    errors = [ln for ln in lines if ln.startswith("error: ")]
    o.message = errors[0] if errors else (lines[-1] if lines else repr(ran.exception))
    if ran.exit_code != code:
        o.problems.append(f"exit code {ran.exit_code}, expected {code}")
    if ran.exception is not None or any("Traceback" in ln for ln in lines):
        o.problems.append(f"traceback ({ran.exception!r})")
    if len(errors) != 1:
        o.problems.append(f"{len(errors)} error lines")
    if whole_stderr and len(lines) != 1:
        o.problems.append(f"stderr has {len(lines)} lines, expected 1: {lines[:4]}")
    for n in names:
        if n not in (errors[0] if errors else ""):
            o.problems.append(f"message does not name {n!r}")


def expect_new_version(o: Outcome, ran: Ran, audits: Path, before: dict) -> Path | None:
    """Exit 0 and the printed path is a new, complete version."""
    o.exit_code = ran.exit_code
    printed = ran.stdout.strip().splitlines()[-1] if ran.stdout.strip() else ""
    o.message = printed or (ran.stderr.strip().splitlines() or [repr(ran.exception)])[-1]
    if ran.exit_code != 0 or ran.exception is not None:
        o.problems.append(f"exit code {ran.exit_code}: {ran.stderr.strip()[-300:] or ran.exception!r}")
        return None
    new = Path(printed)
    if new in before or not (new / MANIFEST).is_file():
        o.problems.append(f"{printed!r} is not a new sealed version")
        return None
    return new


def no_new_version(o: Outcome, audits: Path, before: dict) -> None:
    new = [v.name for v in visible_versions(audits) if v not in before]
    if new:
        o.problems.append(f"a version appeared: {new}")
    if leftovers(audits):
        o.problems.append(f"left behind: {leftovers(audits)}")


def refused(sb: Sandbox, case: str, did: str, args: list[str], *names: str, audits: Path | None = None) -> Outcome:
    """Run ``args`` in this process and expect a clean refusal that changes nothing."""
    audits = audits or sb.audits
    before = snapshot(audits)
    o = Outcome(case, did)
    expect_error(o, sb.invoke(args), *names)
    no_new_version(o, audits, before)
    return settle(o, audits, before)


# --- images ------------------------------------------------------------------------------


def _add_to_split(folder: Path, stem: str, part: str = "test") -> None:
    f = folder / "splits" / f"{part}.txt"
    with open(f, "ab") as fh:
        fh.write(os.fsencode(stem) + b"\n")


def _encode(array: np.ndarray, ext: str, params: list[int] | None = None) -> bytes:
    if array.ndim == 3:
        array = cv2.cvtColor(array, cv2.COLOR_RGB2BGR)
    ok, buf = cv2.imencode(ext, array, params or [])
    assert ok
    return buf.tobytes()


def _pair(folder: Path, stem: str, image: bytes | None, mask: bytes | None, img_ext: str = ".png",
          mask_ext: str = ".png", listed: bool = True) -> tuple[Path, Path]:
    """Write an image and/or mask under raw file names (bytes, so any name works)."""
    ipath = os.path.join(os.fsencode(folder / "images"), os.fsencode(stem + img_ext))
    mpath = os.path.join(os.fsencode(folder / "masks"), os.fsencode(stem + mask_ext))
    if image is not None:
        with open(ipath, "wb") as fh:
            fh.write(image)
    if mask is not None:
        with open(mpath, "wb") as fh:
            fh.write(mask)
    if listed:
        _add_to_split(folder, stem)
    return Path(os.fsdecode(ipath)), Path(os.fsdecode(mpath))


def _good(seed: int = 7, h: int = 40, w: int = 52) -> tuple[np.ndarray, np.ndarray]:
    return disc_pair(seed, h, w)


def _corrupt_png() -> bytes:
    data = bytearray(_encode(_good()[0], ".png"))
    data[60:70] = bytes(10)  # inside the first IDAT chunk: its CRC no longer matches
    return bytes(data)


# Each: (case, what was done, builder(folder) -> (image, mask) bytes and names, expected words).
def _bad_image_specs() -> list[tuple[str, str, Callable[[Path], None], list[str]]]:
    img, mask = _good()
    png_mask = _encode(mask, ".png")
    jpeg = _encode(img, ".jpg")
    png = _encode(img, ".png")
    ramp = np.tile(np.linspace(0, 255, 52, dtype=np.uint8), (40, 1))
    return [
        ("corrupt JPEG", "an image whose JPEG header is garbage",
         lambda f: _pair(f, "BAD_0001", b"\xff\xd8\xff\xe0" + bytes(random.Random(1).randbytes(3000)), png_mask,
                         img_ext=".jpg"), ["BAD_0001.jpg", "not a readable image"]),
        ("corrupt PNG", "an image with a damaged IDAT chunk (CRC mismatch)",
         lambda f: _pair(f, "BAD_0001", _corrupt_png(), png_mask), ["BAD_0001.png", "corrupt PNG"]),
        ("truncated PNG", "an image cut to half its bytes",
         lambda f: _pair(f, "BAD_0001", png[: len(png) // 2], png_mask), ["BAD_0001.png", "truncated PNG"]),
        ("truncated JPEG", "a JPEG cut to half its bytes",
         lambda f: _pair(f, "BAD_0001", jpeg[: len(jpeg) // 2], png_mask, img_ext=".jpg"),
         ["BAD_0001.jpg", "not a readable image"]),
        ("zero-byte file", "an empty mask file",
         lambda f: _pair(f, "BAD_0001", png, b""), ["BAD_0001.png", "empty file"]),
        ("image without mask", "an image with no mask beside it",
         lambda f: _pair(f, "BAD_0001", png, None, listed=False), ["BAD_0001.png", "image has no mask"]),
        ("mask without image", "a mask with no image beside it",
         lambda f: _pair(f, "BAD_0001", None, png_mask, listed=False), ["BAD_0001.png", "mask has no image"]),
        ("sizes differ", "a 52x40 image with a 60x40 mask",
         lambda f: _pair(f, "BAD_0001", png, _encode(np.zeros((40, 60), np.uint8), ".png")),
         ["BAD_0001.png", "mask is 60x40 but its image"]),
        ("mask not binary", "a mask that is a grey ramp (not 0/255)",
         lambda f: _pair(f, "BAD_0001", png, _encode(ramp, ".png")), ["BAD_0001.png", "mask is not binary"]),
        ("duplicate stems", "SYN_0000022.jpg beside SYN_0000022.png",
         lambda f: _pair(f, "SYN_0000022", jpeg, None, img_ext=".jpg", listed=False),
         ["SYN_0000022", "duplicate image stem"]),
        ("non-UTF-8 name, corrupt", "a corrupt image named caf\\xe9 (Latin-1 byte)",
         lambda f: _pair(f, "caf\udce9", b"not an image", png_mask), ["caf\\xe9.png", "not a readable image"]),
    ]


BAD_IMAGES = [spec[0] for spec in _bad_image_specs()]


def bad_image(sb: Sandbox, case: str) -> Outcome:
    """One bad file in an otherwise good folder, policy ``fail``."""
    _, did, build, names = next(spec for spec in _bad_image_specs() if spec[0] == case)
    folder = sb.folder(re.sub(r"\W+", "-", case))
    build(folder)
    return refused(sb, case, did + " (policy fail)", sb.folder_args(folder), *names)


def case_bad_images(sb: Sandbox) -> list[Outcome]:
    return [bad_image(sb, case) for case in BAD_IMAGES]


def case_empty_folder(sb: Sandbox) -> Outcome:
    folder = sb.root / "data sets" / "empty"
    for sub in ("images", "masks"):
        (folder / sub).mkdir(parents=True, exist_ok=True)
    return refused(sb, "empty folder", "images/ and masks/ with no files",
                   sb.run_args("--layout", "folder", "--data", str(folder)), str(folder / "images"), "no images")


def case_missing_folder(sb: Sandbox) -> Outcome:
    return refused(sb, "missing folder", "--data pointing nowhere",
                   sb.run_args("--layout", "folder", "--data", str(sb.root / "no such folder")),
                   "data.root", "does not exist")


ODD_BUT_VALID = {
    "GRAY_0001": "a grayscale (X-ray style) image",
    "DEEP_0001": "a 16-bit image and 16-bit mask",
    "LARGE_0001": "a 4000x3000 image",
    "JPEGMASK_0001": "a JPEG-compressed mask (values near 0/255)",
    "ZEROONE_0001": "a 0/1 mask (read as 1 = lesion)",
    "RGBMASK_0001": "an RGB mask",
    "caf\\xe9_0001": "a non-UTF-8 file name (Latin-1 byte)",
}
SKIPPED = {
    "BAD_CORRUPT.jpg": "not a readable image",
    "BAD_ALONE.png": "image has no mask",
    "BAD_RAMP.png": "mask is not binary",
    "BAD_SIZE.png": "but its image",
}


def _mixed_folder(sb: Sandbox) -> Path:
    """The synthetic data plus, in the test partition, every odd-but-valid kind of input and
    four bad files."""
    f = sb.folder("mixed inputs")
    img, mask = _good(3)
    gray = cv2.cvtColor(img, cv2.COLOR_RGB2GRAY)
    _pair(f, "GRAY_0001", _encode(gray, ".png"), _encode(mask, ".png"))
    _pair(f, "DEEP_0001", _encode(img.astype(np.uint16) * 257, ".png"), _encode(mask.astype(np.uint16) * 257, ".png"))
    big_img, big_mask = disc_pair(11, 3000, 4000)
    _pair(f, "LARGE_0001", _encode(big_img, ".png"), _encode(big_mask, ".png"))
    # JPEG rings along the border: at a realistic size that is well under the 2% of pixels a
    # mask may have away from 0 and 255.
    jimg, jmask = disc_pair(5, 300, 400)
    _pair(f, "JPEGMASK_0001", _encode(jimg, ".png"), _encode(jmask, ".jpg", [cv2.IMWRITE_JPEG_QUALITY, 75]),
          mask_ext=".jpg")
    _pair(f, "ZEROONE_0001", _encode(img, ".png"), _encode((mask > 0).astype(np.uint8), ".png"))
    _pair(f, "RGBMASK_0001", _encode(img, ".png"), _encode(np.dstack([mask] * 3), ".png"))
    _pair(f, "caf\udce9_0001", _encode(img, ".png"), _encode(mask, ".png"))
    png, png_mask = _encode(img, ".png"), _encode(mask, ".png")
    _pair(f, "BAD_CORRUPT", b"\xff\xd8\xff\xe0garbage", png_mask, img_ext=".jpg")
    _pair(f, "BAD_ALONE", png, None, listed=False)
    _pair(f, "BAD_RAMP", png, _encode(np.tile(np.linspace(0, 255, 52, dtype=np.uint8), (40, 1)), ".png"))
    _pair(f, "BAD_SIZE", png, _encode(np.zeros((30, 52), np.uint8), ".png"))
    return f


def case_mixed_folder(sb: Sandbox) -> list[Outcome]:
    """``--on-bad-input fail`` stops at a bad file; ``skip`` evaluates every odd-but-valid
    image, and lists each bad file with its reason in the database and the dossier."""
    from glassbox_audit.store import AuditStore

    folder = _mixed_folder(sb)
    fail = refused(sb, "bad files, policy fail", "a folder with 4 bad files among 45 pairs, --on-bad-input fail",
                   sb.folder_args(folder, "--on-bad-input", "fail"), "BAD_")
    before = snapshot(sb.audits)
    models_before = sorted(p.name for p in sb.models.iterdir())
    o = Outcome("bad files, policy skip", "the same folder, --on-bad-input skip; plus " +
                ", ".join(ODD_BUT_VALID.values()))
    new = expect_new_version(o, sb.invoke(sb.folder_args(folder, "--on-bad-input", "skip")), sb.audits, before)
    if new is not None:
        with AuditStore(new / "audit.sqlite", readonly=True) as store:
            ids = {r["image_id"] for r in store.rows("select distinct image_id from image_metrics")}
            skipped = store.rows("select path, reason from skipped_files")
        html = (new / "dossier.html").read_text(encoding="utf-8")
        o.extra = {"evaluated": sorted(ids), "skipped": skipped}
        for stem, what in ODD_BUT_VALID.items():
            if stem not in ids:
                o.problems.append(f"{what} ({stem}) was not evaluated")
        for name, reason in SKIPPED.items():
            rows = [r for r in skipped if r["path"].endswith(name)]
            if not rows or reason not in rows[0]["reason"]:
                o.problems.append(f"{name} not listed in skipped_files with {reason!r}: {rows}")
            if name not in html:
                o.problems.append(f"{name} not listed in the dossier")
        if ids & {n.split(".")[0] for n in SKIPPED}:
            o.problems.append("a skipped file was evaluated")
        if sorted(p.name for p in sb.models.iterdir()) != models_before:
            o.problems.append("the model was trained again (the folder's training files should match by hash)")
    return [fail, settle(o, sb.audits, before)]


# --- configuration -----------------------------------------------------------------------


def _config_specs(sb: Sandbox) -> list[tuple[str, str, list[str], list[str]]]:
    bad_toml = sb.root / "unknown key.toml"
    bad_toml.write_text("[train]\nepoch = 3\n", encoding="utf-8")
    broken = sb.root / "broken.toml"
    broken.write_text("[train\nepochs = 3\n", encoding="utf-8")
    cases = [
        ("unknown key (--set)", "--set data.colour=1", ["--set", "data.colour=1"], ["data.colour", "unknown"]),
        ("unknown key (TOML)", "[train] epoch = 3 in the config file", ["--config", str(bad_toml)],
         ["train.epoch", "unknown"]),
        ("wrong type", '--set train.epochs="three"', ["--set", 'train.epochs="three"'], ["train.epochs", "must be int"]),
        ("zero size", "--set model.input_size=0", ["--set", "model.input_size=0"], ["model.input_size", "positive"]),
        ("negative size", "--set train.batch_size=-4", ["--set", "train.batch_size=-4"],
         ["train.batch_size", "positive"]),
        ("negative image size", "--set data.synthetic.height=-40", ["--set", "data.synthetic.height=-40"],
         ["data.synthetic.height"]),
        ("missing config file", "--config pointing nowhere", ["--config", str(sb.root / "nope.toml")],
         ["nope.toml", "not found"]),
        ("invalid TOML", "a config file with a broken table header", ["--config", str(broken)],
         ["broken.toml", "not valid TOML"]),
    ]
    return cases


CONFIG_CASES = ["unknown key (--set)", "unknown key (TOML)", "wrong type", "zero size", "negative size",
                "negative image size", "missing config file", "invalid TOML"]


def bad_config(sb: Sandbox, case: str) -> Outcome:
    _, did, args, names = next(spec for spec in _config_specs(sb) if spec[0] == case)
    return refused(sb, case, did, sb.run_args(*args), *names)


def case_config(sb: Sandbox) -> list[Outcome]:
    return [bad_config(sb, case) for case in CONFIG_CASES]


# --- models ------------------------------------------------------------------------------


def _replace_model(folder: Path, write: Callable[[Path], None], update_card: bool = True) -> None:
    """Put a different ``model.keras`` in a stored model's folder; with ``update_card`` its
    card's sha256 is updated too, so only the loader's own checks can refuse it."""
    from glassbox_audit.data.imageio import sha256_file

    path = folder / "model.keras"
    write(path)
    if update_card:
        card = json.loads((folder / "card.json").read_text())
        card["sha256"] = sha256_file(path)
        (folder / "card.json").write_text(json.dumps(card))


def _model_writers(size: int) -> list[tuple[str, str, Callable[[Path], None], bool, list[str]]]:
    import keras

    from glassbox_audit.models.unet import build_attention_unet

    def flip_bytes(path: Path) -> None:
        data = bytearray(path.read_bytes())
        data[len(data) // 2:len(data) // 2 + 64] = bytes(64)
        path.write_bytes(bytes(data))

    def garbage(path: Path) -> None:
        path.write_bytes(b"PK\x03\x04" + bytes(random.Random(2).randbytes(5000)))

    def nan_weights(path: Path) -> None:
        model = keras.saving.load_model(path, compile=False, safe_mode=True)
        w = model.weights[0]
        w.assign(np.full(w.shape, np.nan, dtype="float32"))
        model.save(path)

    def other_size(path: Path) -> None:
        build_attention_unet(size * 2, 2, 4).save(path)

    def with_lambda(path: Path) -> None:
        inp = keras.Input((size, size, 3))
        out = keras.layers.Lambda(lambda t: t * 2.0, name="payload")(inp)
        keras.Model(inp, keras.layers.Conv2D(1, 1)(out)).save(path)

    return [
        ("model file changed", "bytes of model.keras overwritten, card left as it was", flip_bytes, False,
         ["model.keras", "does not match its card"]),
        ("corrupted .keras", "model.keras replaced by garbage, card hash updated to match", garbage, True,
         ["model.keras", "cannot load model safely"]),
        ("NaN weights", "a weight tensor set to NaN, card hash updated", nan_weights, True,
         ["model.keras", "NaN"]),
        ("input size differs", "a 64 px model stored where the 32 px config looks", other_size, True,
         ["model.keras", "model input is (64, 64)", "model.input_size = 32"]),
        ("Lambda layer", "a model carrying a Lambda layer (arbitrary code), card hash updated", with_lambda, True,
         ["model.keras", "cannot load model safely"]),
    ]


MODEL_CASES = ["model file changed", "corrupted .keras", "NaN weights", "input size differs", "Lambda layer"]


def bad_model(sb: Sandbox, case: str) -> Outcome:
    """A copy of the model store with the variant's stored model damaged or replaced."""
    _, did, write, update, names = next(spec for spec in _model_writers(32) if spec[0] == case)
    models = sb.root / "model copies" / re.sub(r"\W+", "-", case)
    if models.exists():
        shutil.rmtree(models)
    shutil.copytree(sb.models, models)
    _replace_model(next(models.glob("balanced-*")), write, update)
    return refused(sb, case, did, sb.run_args(models=models), *names)


def case_models(sb: Sandbox) -> list[Outcome]:
    return [bad_model(sb, case) for case in MODEL_CASES]


# --- storage -----------------------------------------------------------------------------


def _gated_run(sb: Sandbox, pattern: str, hold: float, child: bool) -> tuple[Ran, str, str]:
    """One run gated at the first database it opens matching ``pattern``, locked there by
    another process for ``hold`` seconds (-1: until the run has ended); returns the run and
    the locker's streams."""
    (sb.root / "gates").mkdir(exist_ok=True)
    signal = sb.root / "gates" / f"gate-{time.time_ns()}"  # fresh for this run
    other = gate.locker(signal, hold)
    try:
        if child:
            ran = sb.call(sb.run_args(), gated=(pattern, signal))
        else:
            gate.install(pattern, str(signal))
            try:
                ran = sb.invoke(sb.run_args())
            finally:
                gate.uninstall()
    finally:
        if not signal.exists():  # the run ended before opening the database: let the locker go
            signal.write_text("")
        out, err = other.communicate("release\n" if hold < 0 else None, timeout=gate.PATIENCE)
    return ran, out, err


_BUILDING = "*/.building-v*/audit.sqlite"


def case_lock_wait(sb: Sandbox, hold: float = 3.0, target: str = "building") -> Outcome:
    """A run whose database (``building``: the new version's, being written; ``previous``: the
    last version's, read for the comparison) is locked by another process for ``hold``
    seconds waits for the lock and finishes."""
    before = snapshot(sb.audits)
    pattern = _BUILDING if target == "building" else str(visible_versions(sb.audits)[-1] / "audit.sqlite")
    ran, lock_out, lock_err = _gated_run(sb, pattern, hold, child=True)
    what = "the new version's database (being written)" if target == "building" else "the previous version's database"
    o = Outcome(f"database locked {hold:g} s ({target})",
                f"another process holds BEGIN EXCLUSIVE on {what} for {hold:g} s during a run")
    expect_new_version(o, ran, sb.audits, before)
    if "locked" not in lock_out:
        o.problems.append(f"the other process never got the lock ({lock_err.strip()[-200:]})")
    o.extra = {"locker": lock_out.strip()}
    return settle(o, sb.audits, before)


def case_lock_timeout(sb: Sandbox, busy_timeout: float = 2.0) -> Outcome:
    """A lock held longer than the busy timeout: one line naming the database, no version.

    Runs in this process with ``store.BUSY_TIMEOUT`` lowered to ``busy_timeout`` seconds
    (30 s in use), so the test does not sit out the real timeout."""
    from glassbox_audit import store

    before = snapshot(sb.audits)
    saved = store.BUSY_TIMEOUT
    store.BUSY_TIMEOUT = busy_timeout
    try:
        ran, lock_out, lock_err = _gated_run(sb, _BUILDING, -1, child=False)
    finally:
        store.BUSY_TIMEOUT = saved
    o = Outcome("database locked past timeout",
                f"another process holds BEGIN EXCLUSIVE on the new version's database longer than the "
                f"busy timeout ({busy_timeout:g} s here, {saved:g} s in use)")
    expect_error(o, ran, "audit.sqlite", "database is locked")
    no_new_version(o, sb.audits, before)
    if "locked" not in lock_out:
        o.problems.append(f"the other process never got the lock ({lock_err.strip()[-200:]})")
    return settle(o, sb.audits, before)


def case_lock_timeout_child(sb: Sandbox) -> Outcome:
    """The same with the real 30 s busy timeout, the run a child process: stderr is one line."""
    from glassbox_audit.store import BUSY_TIMEOUT

    before = snapshot(sb.audits)
    ran, lock_out, lock_err = _gated_run(sb, _BUILDING, -1, child=True)
    o = Outcome(f"database locked past {BUSY_TIMEOUT:g} s",
                "another process holds BEGIN EXCLUSIVE on the new version's database until the run ends")
    expect_error(o, ran, "audit.sqlite", "database is locked", whole_stderr=True)
    no_new_version(o, sb.audits, before)
    if "locked" not in lock_out:
        o.problems.append(f"the other process never got the lock ({lock_err.strip()[-200:]})")
    return settle(o, sb.audits, before)


_TMPFS: list[bool] = []


def tmpfs_available() -> bool:
    """Can this process mount a tmpfs (root with the capability, e.g. not in every container)?"""
    if not _TMPFS:
        ok = False
        if os.geteuid() == 0 and shutil.which("mount"):
            import tempfile

            probe = Path(tempfile.mkdtemp(prefix="tmpfs-probe-"))
            ok = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(probe)],
                                capture_output=True).returncode == 0
            if ok:
                subprocess.run(["umount", str(probe)], capture_output=True)
            probe.rmdir()
        _TMPFS.append(ok)
    return _TMPFS[0]


class Tmpfs:
    """A small tmpfs mounted for one case (root only), to fill a real disk."""

    def __init__(self, where: Path, size: int):
        self.where = where
        where.mkdir(parents=True, exist_ok=True)
        subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)], check=True,
                       capture_output=True)

    def resize(self, size: int) -> None:
        subprocess.run(["mount", "-o", f"remount,size={size}", str(self.where)], check=True, capture_output=True)

    def free(self) -> int:
        st = os.statvfs(self.where)
        return st.f_bavail * st.f_frsize

    def close(self) -> None:
        subprocess.run(["umount", "-l", str(self.where)], capture_output=True)


def _used(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def case_disk_full_tmpfs(sb: Sandbox, margin: int = 64 * 1024) -> Outcome:
    """The audits folder on a tmpfs with ``margin`` bytes free: the run fails with one line,
    nothing half-written stays, v001/v002 verify; after growing the disk the next run works."""
    where = sb.root / "small disk" / f"m{margin}"
    src = sb.audits / AUDIT
    disk = Tmpfs(where, _used(src) + 1024 * 1024)  # room for the copy, then shrunk to the margin
    try:
        audits = where / "audits"
        shutil.copytree(src, audits / AUDIT)
        st = os.statvfs(where)
        used = (st.f_blocks - st.f_bfree) * st.f_frsize
        disk.resize(used + margin)
        before = snapshot(audits)
        o = Outcome(f"disk full ({margin // 1024} KiB free)",
                    f"audits folder on a tmpfs with {margin // 1024} KiB free; a run writes about 1 MB")
        ran = sb.invoke(sb.run_args(audits=audits))
        expect_error(o, ran, AUDIT)
        if not any(w in o.message for w in ("No space left on device", "database or disk is full")):
            o.problems.append("the message does not say the disk is full")
        no_new_version(o, audits, before)
        settle(o, audits, before)
        disk.resize(used + 64 * 1024 * 1024)
        after = sb.invoke(sb.run_args(audits=audits))
        if expect_new_version(Outcome("", ""), after, audits, before) is None or after.exit_code != 0:
            o.problems.append(f"the next run on a disk with room failed: {after.stderr.strip()[-200:]}")
        o.extra["next run"] = after.stdout.strip()
        return settle(o, audits, before)
    finally:
        disk.close()


def case_disk_full_rlimit(sb: Sandbox, limit: int = 64 * 1024) -> Outcome:
    """Without root: the run as a child process whose files may not grow past ``limit``
    bytes (RLIMIT_FSIZE, the kernel's per-file size limit), so a write fails part way."""
    before = snapshot(sb.audits)

    def limit_writes() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    ran = sb.call(sb.run_args(), preexec=limit_writes)
    o = Outcome(f"write fails past {limit // 1024} KiB", f"a run whose files may not exceed {limit // 1024} KiB "
                "(RLIMIT_FSIZE): a write fails part way through the new version")
    expect_error(o, ran, code=2, whole_stderr=True)
    if o.message and not any(w in o.message for w in ("File too large", "disk", "full", "I/O")):
        o.problems.append("the message does not say the write failed")
    no_new_version(o, sb.audits, before)
    return settle(o, sb.audits, before)


def _watch_run(sb: Sandbox, args: list[str], kill_after_reserve: float | None = None,
               kill_after_start: float | None = None) -> dict:
    """Start a run as a child; optionally SIGKILL it ``kill_after_start`` seconds after it
    started or ``kill_after_reserve`` seconds after its version reservation appeared."""
    audit_dir = sb.audits / AUDIT
    t0 = time.monotonic()
    p = sb.spawn(args)
    reserved_at = killed_at = None
    while p.poll() is None:
        now = time.monotonic() - t0
        if reserved_at is None and audit_dir.is_dir() and any(x.name.startswith(".reserved-") for x in audit_dir.iterdir()):
            reserved_at = now
        if kill_after_start is not None and now >= kill_after_start:
            killed_at = now
        if kill_after_reserve is not None and reserved_at is not None and now >= reserved_at + kill_after_reserve:
            killed_at = now
        if killed_at is not None:
            p.send_signal(signal.SIGKILL)
            break
        time.sleep(0.01)
    out, err = p.communicate()
    end = time.monotonic() - t0
    if killed_at is None or p.returncode == 0:  # exited just as the signal was sent
        stage = "finished before the kill"
    elif reserved_at is None:
        stage = "before the version was reserved"
    else:
        stage = "while building the version"
    return {"returncode": p.returncode, "stdout": out, "stderr": err, "reserved_at": reserved_at,
            "killed_at": killed_at, "seconds": end, "stage": stage}


def baseline_run(sb: Sandbox) -> dict:
    """One complete child run, timed: how long the whole run and its build phase take."""
    before = snapshot(sb.audits)
    r = _watch_run(sb, sb.run_args())
    o = Outcome("baseline run", "one complete run as a child process")
    expect_new_version(o, Ran(r["returncode"], r["stdout"], r["stderr"]), sb.audits, before)
    settle(o, sb.audits, before)
    r["outcome"] = o
    r["build_seconds"] = r["seconds"] - (r["reserved_at"] or 0.0)
    return r


def kill_nine(sb: Sandbox, at: float, after_reserve: bool, index: int = 0, next_in_process: bool = True) -> Outcome:
    """SIGKILL a run at ``at`` seconds (after its start, or after its version reservation
    appeared), then check: nothing half-written visible, earlier versions verify, databases
    intact; and the next run succeeds and clears the leftovers."""
    before = snapshot(sb.audits)
    r = _watch_run(sb, sb.run_args(), **({"kill_after_reserve": at} if after_reserve else {"kill_after_start": at}))
    when = f"{at:.2f} s after the {'reservation' if after_reserve else 'start'}"
    o = Outcome(f"kill -9 #{index + 1}", f"SIGKILL {when} ({r['stage']})", exit_code=r["returncode"],
                message=r["stage"])
    if r["killed_at"] is None and r["returncode"] != 0:
        o.problems.append(f"the run failed before the kill: {r['stderr'][-200:]}")
    o.extra = {"stage": r["stage"], "left": leftovers(sb.audits)}
    settle(o, sb.audits, before)
    before_next = snapshot(sb.audits)
    ran = sb.invoke(sb.run_args()) if next_in_process else sb.call(sb.run_args())
    nxt = Outcome("", "")
    expect_new_version(nxt, ran, sb.audits, before_next)
    if not nxt.held:
        o.problems.append("the next run failed: " + "; ".join(nxt.problems))
    if leftovers(sb.audits):
        o.problems.append(f"leftovers not cleared by the next run: {leftovers(sb.audits)}")
    return settle(o, sb.audits, before)


def case_concurrent(sb: Sandbox, n: int = 2) -> Outcome:
    """``n`` runs on the same audit name started at the same moment."""
    before = snapshot(sb.audits)
    procs = [sb.spawn(sb.run_args()) for _ in range(n)]
    results = [p.communicate() + (p.returncode,) for p in procs]
    o = Outcome(f"{n} runs at once", f"{n} runs of the same audit name started together as child processes",
                exit_code=max(r[2] for r in results))
    printed = [r[0].strip().splitlines()[-1] if r[0].strip() else "" for r in results]
    o.message = ", ".join(Path(p).name for p in printed if p)
    for out, err, code in results:
        if code != 0:
            o.problems.append(f"a run failed ({code}): {err.strip()[-200:]}")
    new = [Path(p) for p in printed if p]
    if len({p.name for p in new}) != len(new):
        o.problems.append(f"versions collide: {printed}")
    versions = [p for _, p in list_versions(sb.audits / AUDIT)]
    chain = [json.loads((v / MANIFEST).read_text()).get("previous_version") for v in versions]
    if chain != [None] + [v.name for v in versions[:-1]]:
        o.problems.append(f"the chain is not v001 <- v002 <- ...: {list(zip([v.name for v in versions], chain))}")
    # Each measured version's change log compares it with the newest earlier measurement, even
    # when that one was still being built as this run listed the audit's versions (versions
    # that only record a review carry the reviewed version's evaluation and are passed over).
    measured: list[str] = []
    for v in versions:
        conn = sqlite3.connect(f"file:{v / 'audit.sqlite'}?mode=ro", uri=True)
        own = f"v{conn.execute('select version from runs').fetchone()[0]:03d}" == v.name
        against = {r[0] for r in conn.execute("select distinct against_version from comparisons")}
        conn.close()
        if own:
            expected = {measured[-1]} if measured else set()
            if against != expected:
                o.problems.append(f"{v.name}: change log compares with {sorted(against)}, "
                                  f"the newest earlier measurement is {sorted(expected)}")
            measured.append(v.name)
    no_new = leftovers(sb.audits)
    if no_new:
        o.problems.append(f"left behind: {no_new}")
    return settle(o, sb.audits, before)


def _edit_specs() -> list[tuple[str, str, Callable[[Path], str]]]:
    def edit_html(v: Path) -> str:
        p = v / "dossier.html"
        p.chmod(0o644)
        p.write_text(p.read_text().replace("Dice", "Dice (edited)", 1))
        return "changed: dossier.html"

    def edit_db(v: Path) -> str:
        p = v / "audit.sqlite"
        p.chmod(0o644)
        conn = sqlite3.connect(p)
        with conn:
            conn.execute("update evaluation_metrics set value = 0.99 where metric = 'dice'")
        conn.close()
        return "changed: audit.sqlite"

    def delete_figure(v: Path) -> str:
        fig = sorted((v / "figures").glob("*.png"))[0]
        (v / "figures").chmod(0o755)
        fig.unlink()
        return f"removed: figures/{fig.name}"

    def add_file(v: Path) -> str:
        (v / "notes.txt").write_text("added later")
        return "added: notes.txt"

    def edit_manifest(v: Path) -> str:
        p = v / MANIFEST
        p.chmod(0o644)
        p.write_text(p.read_text().replace('"created": "', '"created": "1', 1))
        return "changed since this version was sealed"

    return [
        ("edited dossier", "a word of dossier.html changed", edit_html),
        ("edited database", "a Dice value in audit.sqlite set to 0.99 with sqlite3", edit_db),
        ("deleted figure", "a figure deleted", delete_figure),
        ("added file", "a file added", add_file),
        ("edited manifest", "the manifest's date changed (the next version's chain must break)", edit_manifest),
    ]


EDIT_CASES = [spec[0] for spec in _edit_specs()]


def edited_by_hand(sb: Sandbox, case: str) -> Outcome:
    """Edit a sealed version of a copy of the audits: ``verify`` names the change, exits 1."""
    _, did, edit = next(spec for spec in _edit_specs() if spec[0] == case)
    audits = sb.copy_audits(re.sub(r"\W+", "-", case))
    v1 = visible_versions(audits)[0]
    expected = edit(v1)
    ran = sb.invoke(["verify", str(audits / AUDIT)])
    o = Outcome(case, f"{did} in {v1.name}, then verify", exit_code=ran.exit_code)
    failed = [ln for ln in ran.stdout.splitlines() if "FAILED" in ln]
    o.message = "; ".join(ln.strip() for ln in ran.stdout.splitlines() if "FAILED" in ln or ln.startswith("  "))
    if ran.exit_code != 1:
        o.problems.append(f"verify exit code {ran.exit_code}, expected 1")
    if expected not in ran.stdout:
        o.problems.append(f"verify does not report {expected!r}")
    if not failed:
        o.problems.append("verify reports no FAILED version")
    o.earlier_verify = False  # broken on purpose: verify must say so
    o.extra["edited"] = True
    o.integrity = integrity(audits)
    if o.integrity != "ok" and case != "edited database":
        o.problems.append(f"integrity: {o.integrity}")
    return o


def case_edited_by_hand(sb: Sandbox) -> list[Outcome]:
    return [edited_by_hand(sb, case) for case in EDIT_CASES]


# --- security ----------------------------------------------------------------------------


HOSTILE = "<script>alert('x')</script><img src=x onerror=alert(1)>"


def _name_specs(sb: Sandbox) -> list[tuple[str, str, list[str], list[str]]]:
    return [
        ("HTML in audit name", f"run --name {HOSTILE!r}", sb.run_args(name=HOSTILE), ["name"]),
        ("path traversal (run)", "run --name ../../x", sb.run_args(name="../../x"), ["name", "../../x"]),
        ("path traversal (review)", "review ../../x v001",
         ["review", "../../x", "v001", "--audits-dir", str(sb.audits), "--reviewer", "R", "--decision", "approve"],
         ["../../x"]),
        ("path traversal (version)", "render nightly v001/../../..",
         ["render", AUDIT, "v001/../../..", "--audits-dir", str(sb.audits), "-o", str(sb.root / "render-out")],
         ["v001/../../.."]),
        ("path traversal (diff)", "diff ../audits/nightly v001 v002",
         ["diff", f"../{sb.audits.name}/{AUDIT}", "v001", "v002", "--audits-dir", str(sb.audits)], ["../"]),
    ]


NAME_CASES = ["HTML in audit name", "path traversal (run)", "path traversal (review)", "path traversal (version)",
              "path traversal (diff)"]


def hostile_name(sb: Sandbox, case: str) -> Outcome:
    _, did, args, names = next(spec for spec in _name_specs(sb) if spec[0] == case)
    o = refused(sb, case, did, args, *names)
    for outside in (sb.root / "x", sb.root.parent / "x", sb.root / "render-out"):
        if outside.exists():
            o.problems.append(f"{outside} was written, outside the audits folder")
    return o


def case_names(sb: Sandbox) -> list[Outcome]:
    return [hostile_name(sb, case) for case in NAME_CASES]


class _Tags:
    def __init__(self, html: str):
        from html.parser import HTMLParser

        self.tags: list[tuple[str, dict]] = []
        outer = self

        class P(HTMLParser):
            def handle_starttag(self, tag, attrs):
                outer.tags.append((tag, dict(attrs)))

        P().feed(html)


def case_review_text(sb: Sandbox, pdf: bool = True) -> Outcome:
    """A review whose reviewer name and note are HTML: escaped in the HTML dossier, shown as
    literal text in the PDF."""
    import pypdf

    before = snapshot(sb.audits)
    last = [p for _, p in list_versions(sb.audits / AUDIT)][-1]
    args = ["-q", "review", AUDIT, last.name, "--audits-dir", str(sb.audits), "--reviewer", f"Eve {HOSTILE}",
            "--decision", "reject", "--note", f"Looks fine {HOSTILE}"] + ([] if pdf else ["--no-pdf"])
    o = Outcome("HTML in reviewer name and note", "review with <script> and <img onerror> in --reviewer and --note"
                + (", HTML and PDF" if pdf else ", HTML"))
    new = expect_new_version(o, sb.invoke(args), sb.audits, before)
    if new is not None:
        html = (new / "dossier.html").read_text(encoding="utf-8")
        tags = _Tags(html).tags
        if any(t == "script" for t, _ in tags) or any("onerror" in a for _, a in tags):
            o.problems.append("the HTML dossier holds a live <script> or onerror attribute")
        if "&lt;script&gt;alert(" not in html:
            o.problems.append("the escaped text is not in the HTML dossier")
        if pdf:
            text = "".join(page.extract_text() for page in pypdf.PdfReader(new / "dossier.pdf").pages)
            if "<script>alert(" not in text.replace("\n", ""):
                o.problems.append("the PDF does not show the text literally")
    return settle(o, sb.audits, before)


QUERY_ATTACKS = [
    ("query: DELETE", "delete from evaluation_metrics", "DELETE"),
    ("query: DROP", "drop table runs", "DROP"),
    ("query: UPDATE", "update runs set status = 'forged'", "UPDATE"),
    ("query: ATTACH", "attach database 'evil.sqlite' as evil", "ATTACH"),
    ("query: PRAGMA writable_schema", "pragma writable_schema = 1", "PRAGMA"),
    ("query: PRAGMA journal_mode", "pragma journal_mode = wal", "PRAGMA"),
    ("query: two statements", "select 1; delete from runs", "one statement"),
    ("query: load_extension", "select load_extension('/tmp/evil.so')", "load_extension"),
    ("query: CTE hiding a write", "with x as (select 1) delete from runs", "DELETE"),
    ("query: VACUUM INTO", "vacuum into 'copy.sqlite'", "VACUUM"),
]


QUERY_CASES = [spec[0] for spec in QUERY_ATTACKS]


def query_attack(sb: Sandbox, case: str) -> Outcome:
    """A way to write through the read-only ``query`` command: refused, the database unchanged."""
    _, sql, word = next(spec for spec in QUERY_ATTACKS if spec[0] == case)
    target = [p for _, p in list_versions(sb.audits / AUDIT)][-1]
    before = snapshot(sb.audits)
    ran = sb.invoke(["query", sql, "--audit", AUDIT, "--audits-dir", str(sb.audits)])
    o = Outcome(case, f"query {sql!r} on {target.name}")
    expect_error(o, ran, "refused")
    if word.lower() not in o.message.lower():
        o.problems.append(f"the message does not say {word} was refused")
    no_new_version(o, sb.audits, before)
    for stray in ("evil.sqlite", "copy.sqlite"):
        if (sb.root / stray).exists() or (REPO / stray).exists() or (Path.cwd() / stray).exists():
            o.problems.append(f"{stray} was created")
    return settle(o, sb.audits, before)


def case_query(sb: Sandbox) -> list[Outcome]:
    return [query_attack(sb, case) for case in QUERY_CASES]


def case_llm_answer(sb: Sandbox) -> Outcome:
    """An LLM answer and question carrying HTML, rendered by the dossier's own template
    environment: escaped."""
    from glassbox_audit.report import default_templates, environment

    o = Outcome("HTML in LLM answers", "the LLM appendix rendered with <script> in a question, answer and reading")
    env = environment(default_templates())
    try:
        template = env.get_template("_llm_appendix.html.j2")
    except Exception as exc:  # noqa: BLE001 - the appendix is another helper's; say it is missing
        o.problems.append(f"no LLM appendix template ({exc})")
        return o
    q = {"question": f"Which model? {HOSTILE}", "answer": f"balanced {HOSTILE}", "status": "needs review",
         "source": "ask", "asked_at": "2026-01-01T00:00:00Z", "model": "none", "model_sha256": "",
         "llm_seconds": 0.0, "llm_intent": HOSTILE, "parser_intent": HOSTILE, "sql": [], "error": ""}
    html = template.render(llm_questions=[q], llm_models=[], llm_counts={"needs review": 1})
    tags = _Tags(html).tags
    o.message = f"{html.count('&lt;script&gt;')} escaped <script>, {sum(t == 'script' for t, _ in tags)} live"
    if any(t == "script" for t, _ in tags) or any("onerror" in a for _, a in tags):
        o.problems.append("a live <script> or onerror attribute in the rendered appendix")
    if html.count("&lt;script&gt;") < 4:
        o.problems.append("not every hostile field shows escaped")
    return o


# --- the whole battery, for the benchmark -------------------------------------------------


def run_case(fn: Callable[..., Outcome | list[Outcome]], *args, **kw) -> list[Outcome]:
    result = fn(*args, **kw)
    return result if isinstance(result, list) else [result]


# Every case but the kill -9 loop, the disk-full variants and the concurrent runs, which the
# benchmark drives with its own counts and sizes.
CASES: list[tuple[str, Callable[[Sandbox], Outcome | list[Outcome]]]] = [
    ("images", case_bad_images),
    ("images", case_empty_folder),
    ("images", case_missing_folder),
    ("images", case_mixed_folder),
    ("config", case_config),
    ("models", case_models),
    ("storage", case_lock_wait),
    ("storage", lambda sb: case_lock_wait(sb, 3.0, "previous")),
    ("storage", case_lock_timeout),
    ("storage", case_lock_timeout_child),
    ("storage", case_edited_by_hand),
    ("security", case_names),
    ("security", case_review_text),
    ("security", case_query),
    ("security", case_llm_answer),
]
