"""Versioned audit folders: ``audits/<name>/v001``, ``v002``, ... built aside, moved into place.

A version is built in a hidden temporary folder, gets a ``manifest.json`` listing the
sha256 of every file and the hash of the previous version's manifest (a hash chain), has
its files made read-only, and is then renamed to ``vNNN`` in one step. A version number is
reserved first with an atomic ``mkdir``, so two runs started together get distinct numbers,
and an existing version is never written again. Versions are sealed in number order (a
build waits for lower-numbered builds still running), so each manifest hashes the manifest
of the version just below it and the chain has no gaps.
"""

from __future__ import annotations

import json
import logging
import os
import errno
import re
import shutil
import stat
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from .data.imageio import sha256_file
from .errors import RESOURCE_ERRNOS, StoreError

__all__ = ["MANIFEST", "SEAL", "VerifyReport", "VersionBuild", "list_versions", "new_version", "verify_path",
           "verify_version", "version_name", "wait_for_earlier_versions", "write_manifest"]

log = logging.getLogger(__name__)

MANIFEST = "manifest.json"
# The manifest's own sha256 in ``sha256sum`` format, so a changed byte in the newest manifest
# (which no later version chains to yet) is caught too; ``sha256sum -c manifest.sha256`` checks it.
SEAL = "manifest.sha256"
MANIFEST_VERSION = 2  # 2: sealed by SEAL; 1 (before the seal existed) is still verified without it
_VERSION = re.compile(r"^v(\d{3,})$")
_RESERVED = re.compile(r"^\.reserved-v(\d{3,})$")
_BUILDING = re.compile(r"^\.building-v(\d{3,})-(\d+)$")
_STAGING = re.compile(r"^\.staging-(\d+)-\d+$")
# How long a build waits for lower-numbered builds to seal before chaining past them.
SEAL_WAIT_SECONDS = 900.0

# Reservations held by builds running in this process (threads); another reservation
# carrying this process's pid is a leftover, not a build to wait for.
_ACTIVE: set[str] = set()
_ACTIVE_LOCK = threading.Lock()


def version_name(number: int) -> str:
    return f"v{number:03d}"


def list_versions(audit_dir: Path) -> list[tuple[int, Path]]:
    """Finished versions of one audit, oldest first."""
    if not audit_dir.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in audit_dir.iterdir() if (m := _VERSION.match(p.name)) and p.is_dir()]
    return sorted(found)


@dataclass
class VersionBuild:
    audit: str
    number: int
    path: Path  # the temporary folder to write into
    final: Path  # where it will be once finished

    @property
    def name(self) -> str:
        return version_name(self.number)


def _started_after(pid: int, moment: float) -> bool:
    """True when process ``pid`` started after ``moment`` (so it cannot have written a
    record made then: the pid was reused). False when unknown (not Linux)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        boot = next(float(ln.split()[1]) for ln in Path("/proc/stat").read_text().splitlines()
                    if ln.startswith("btime "))
        started = boot + int(fields[19]) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError, StopIteration):
        return False
    return started > moment + 1.0  # btime has one-second resolution


def _alive(pid: int, since: float | None = None) -> bool:
    """Is process ``pid`` running (and, with ``since``, the same process that was running then)?"""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        pass
    return since is None or not _started_after(pid, since)


def _owner_running(res: Path, max_age: float, building_here: bool = False) -> bool:
    """Is the owner of reservation ``res`` still running? With ``building_here``, a
    reservation carrying this process's pid counts only if one of our builds holds it."""
    try:
        pid = int((res / "pid").read_text())
        written = (res / "pid").stat().st_mtime
    except (OSError, ValueError):  # owner not written yet (a moment after mkdir) or never
        try:
            return time.time() - res.stat().st_mtime <= max_age
        except OSError:
            return False
    if pid == os.getpid() and building_here:
        with _ACTIVE_LOCK:
            return str(res) in _ACTIVE
    return _alive(pid, since=written)


def _clear_stale(audit_dir: Path, max_age: float = 3600.0) -> None:
    """Remove reservations and half-built folders left by runs that died (kill -9, power
    loss). A reservation whose owner process is gone, or that never got its owner written
    within ``max_age`` seconds, is stale."""
    for res in audit_dir.iterdir():
        m = _RESERVED.match(res.name)
        if not m:
            continue
        if not _owner_running(res, max_age):
            for building in audit_dir.glob(f".building-v{m.group(1)}-*"):
                shutil.rmtree(building, ignore_errors=True)
            shutil.rmtree(res, ignore_errors=True)
            log.info("audit: removed the leftovers of an interrupted run (%s)", res.name)
    # A build folder whose reservation is gone and whose owner died (a killed run's child
    # process can still write into it after the reservation was cleared), and a reservation
    # still being made when its owner died.
    for leftover in audit_dir.iterdir():
        m = _BUILDING.match(leftover.name)
        if m and not (audit_dir / f".reserved-v{m.group(1)}").exists() and not _alive(int(m.group(2))):
            shutil.rmtree(leftover, ignore_errors=True)
        m = _STAGING.match(leftover.name)
        if m and not _alive(int(m.group(1))):
            shutil.rmtree(leftover, ignore_errors=True)


def _reserve(audit_dir: Path) -> int:
    _clear_stale(audit_dir)
    taken = [n for n, _ in list_versions(audit_dir)]
    taken += [int(m.group(1)) for p in audit_dir.iterdir() if (m := _RESERVED.match(p.name))]
    number = max(taken, default=0) + 1
    # The reservation is made whole (owner written) under a private name and renamed into
    # place, so a run killed at any instant never leaves a reservation without its owner.
    staging = audit_dir / f".staging-{os.getpid()}-{threading.get_ident()}"
    try:
        staging.mkdir(exist_ok=True)
        (staging / "pid").write_text(str(os.getpid()))
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    while True:
        reservation = audit_dir / f".reserved-{version_name(number)}"
        with _ACTIVE_LOCK:
            _ACTIVE.add(str(reservation))
        try:
            os.rename(staging, reservation)  # fails when the number is taken (a non-empty folder)
        except OSError as exc:
            with _ACTIVE_LOCK:
                _ACTIVE.discard(str(reservation))
            if exc.errno not in (errno.EEXIST, errno.ENOTEMPTY):
                shutil.rmtree(staging, ignore_errors=True)
                raise
            number += 1
            continue
        if (audit_dir / version_name(number)).exists():  # finished between our listing and the rename
            with _ACTIVE_LOCK:
                _ACTIVE.discard(str(reservation))
            os.rename(reservation, staging)
            number += 1
            continue
        return number


def _wait_for_lower(audit_dir: Path, number: int, limit: float) -> None:
    """Wait until no build of a lower number is still running, so this version's manifest
    can chain to the version just below it."""
    deadline = time.monotonic() + limit
    while True:
        pending = sorted(res.name for res in audit_dir.iterdir()
                         if (m := _RESERVED.match(res.name)) and int(m.group(1)) < number
                         and _owner_running(res, max_age=60.0, building_here=True))
        if not pending:
            return
        if time.monotonic() > deadline:
            log.warning("audit: %s still building after %.0f s; %s chains to the last finished version",
                        ", ".join(pending), limit, version_name(number))
            return
        time.sleep(0.1)


def wait_for_earlier_versions(build: VersionBuild, limit: float = SEAL_WAIT_SECONDS) -> None:
    """Wait until every lower-numbered build of the audit has been sealed or abandoned, so
    the newest finished version below ``build`` is the one its manifest will chain to (a
    run comparing itself with its predecessor calls this first)."""
    _wait_for_lower(build.final.parent, build.number, limit)


def _fsync_tree(folder: Path) -> None:
    """Flush every file and folder of a build to disk, so the rename that publishes it
    cannot outlive its contents after a power loss."""
    for p in sorted(folder.rglob("*"), reverse=True) + [folder]:
        fd = os.open(p, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def write_manifest(folder: Path, audit: str, number: int, previous: Path | None) -> dict:
    """List every file of ``folder`` with its sha256 and chain to the previous manifest."""
    files = {}
    for p in sorted(folder.rglob("*")):
        if p.is_file() and p.relative_to(folder).as_posix() not in (MANIFEST, SEAL):
            files[p.relative_to(folder).as_posix()] = {"sha256": sha256_file(p), "bytes": p.stat().st_size}
    prev_hash = sha256_file(previous / MANIFEST) if previous and (previous / MANIFEST).exists() else None
    manifest = {
        "manifest_version": MANIFEST_VERSION, "audit": audit, "version": version_name(number),
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "previous_version": previous.name if previous else None,
        "previous_manifest_sha256": prev_hash, "files": files,
    }
    (folder / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True), encoding="utf-8")
    (folder / SEAL).write_text(f"{sha256_file(folder / MANIFEST)}  {MANIFEST}\n", encoding="utf-8")
    return manifest


def _make_read_only(folder: Path) -> None:
    for p in folder.rglob("*"):
        if p.is_file():
            p.chmod(stat.S_IRUSR | stat.S_IRGRP | stat.S_IROTH)


@contextmanager
def new_version(audits_dir: Path, audit: str) -> Iterator[VersionBuild]:
    """Reserve the next version, yield its build folder, then seal and move it into place.

    On any exception the temporary folder and the reservation are removed and nothing
    under ``audits/<audit>/`` changes.
    """
    audit_dir = Path(audits_dir) / audit
    try:
        audit_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StoreError(f"{audit_dir}: cannot create audit folder ({exc.strerror})") from None
    number = _reserve(audit_dir)
    reservation = audit_dir / f".reserved-{version_name(number)}"
    tmp = audit_dir / f".building-{version_name(number)}-{os.getpid()}"
    build = VersionBuild(audit, number, tmp, audit_dir / version_name(number))
    try:
        tmp.mkdir()
        yield build
        _wait_for_lower(audit_dir, number, SEAL_WAIT_SECONDS)
        earlier = [p for n, p in list_versions(audit_dir) if n < number]
        write_manifest(tmp, audit, number, earlier[-1] if earlier else None)
        _make_read_only(tmp)
        _fsync_tree(tmp)
        os.rename(tmp, build.final)
        # Make the new directory entry durable before reporting success.
        fd = os.open(audit_dir, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        log.info("audit: version %s written to %s", build.name, build.final)
    except BaseException as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(exc, OSError) and exc.errno in RESOURCE_ERRNOS:
            where = f" ({exc.filename})" if exc.filename else ""
            raise StoreError(f"{build.final}: cannot write the new version: {exc.strerror}{where}; "
                             "nothing was kept") from exc
        raise
    finally:
        with _ACTIVE_LOCK:
            _ACTIVE.discard(str(reservation))
        shutil.rmtree(reservation, ignore_errors=True)


@dataclass
class VerifyReport:
    """What ``verify`` found in one version folder."""

    path: Path
    changed: list[str]
    added: list[str]
    removed: list[str]
    chain: str  # "ok", "first" (no previous version) or a description of the break
    seal: str = "ok"  # "ok", "legacy" (manifest_version 1, made before seals) or what is wrong

    @property
    def file_findings(self) -> list[tuple[str, str]]:
        """Each changed, added or removed file as ``(what, path)``, in that order."""
        return [(label, f) for label, files in (("changed", self.changed), ("added", self.added),
                                                ("removed", self.removed)) for f in files]

    @property
    def ok(self) -> bool:
        return (not (self.changed or self.added or self.removed) and self.chain in ("ok", "first")
                and self.seal in ("ok", "legacy"))


def verify_version(folder: Path) -> VerifyReport:
    """Re-hash every file of a version against its manifest and check the link to the
    previous version's manifest."""
    folder = Path(folder)
    manifest_path = folder / MANIFEST
    if not manifest_path.is_file():
        return VerifyReport(folder, [], [], [MANIFEST], "manifest missing")
    seal = _check_seal(folder)
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
        listed = {f: meta["sha256"] for f, meta in manifest["files"].items()}
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        return VerifyReport(folder, [MANIFEST], [], [], f"manifest unreadable ({exc})", seal)
    if seal == "missing":
        # Only manifests made before seals existed may lack one; a newer one lost it.
        seal = "legacy" if manifest.get("manifest_version") == 1 else f"{SEAL} missing"
    present = {p.relative_to(folder).as_posix(): p for p in folder.rglob("*") if p.is_file()}
    present.pop(MANIFEST)
    present.pop(SEAL, None)
    changed = sorted(f for f, digest in listed.items() if f in present and sha256_file(present[f]) != digest)
    added = sorted(set(present) - set(listed))
    removed = sorted(set(listed) - set(present))
    previous = manifest.get("previous_version")
    if previous is None:
        chain = "first"
    else:
        prev_manifest = folder.parent / previous / MANIFEST
        if not prev_manifest.is_file():
            chain = f"previous version {previous} or its manifest is missing"
        elif sha256_file(prev_manifest) != manifest.get("previous_manifest_sha256"):
            chain = f"previous version {previous}'s manifest changed since this version was sealed"
        else:
            chain = "ok"
    return VerifyReport(folder, changed, added, removed, chain, seal)


def _check_seal(folder: Path) -> str:
    """Whether ``manifest.json`` still has the sha256 its seal recorded at sealing time."""
    seal = folder / SEAL
    if not seal.is_file():
        return "missing"
    try:
        digest, name = seal.read_text(encoding="utf-8").split()
    except (ValueError, UnicodeDecodeError):
        return f"{SEAL} unreadable (changed since sealing)"
    if name != MANIFEST or digest != sha256_file(folder / MANIFEST):
        return f"{MANIFEST} does not match {SEAL}: one of them changed since sealing"
    return "ok"


def verify_path(path: Path) -> list[VerifyReport]:
    """Verify one version folder, or every version of an audit folder."""
    path = Path(path)
    if (path / MANIFEST).exists() or _VERSION.match(path.name):
        return [verify_version(path)]
    versions = list_versions(path)
    if not versions:
        raise StoreError(f"{path}: neither an audit version folder nor an audit folder with versions")
    return [verify_version(p) for _, p in versions]
