"""Audit versions: distinct numbers, sealed by a manifest, nothing left on failure."""

import json
import os
import threading

import pytest

from conftest import flip_bit
from glassbox_audit.data.imageio import sha256_file
from glassbox_audit.versions import MANIFEST, SEAL, list_versions, new_version, verify_path, verify_version


def build(audits, name="a", content="x"):
    with new_version(audits, name) as b:
        (b.path / "report.txt").write_text(content)
        (b.path / "sub").mkdir()
        (b.path / "sub" / "fig.png").write_bytes(b"png")
    return b


def test_versions_count_up_and_chain_their_manifests(tmp_path):
    first, second = build(tmp_path), build(tmp_path, content="y")
    assert [p.name for _, p in list_versions(tmp_path / "a")] == ["v001", "v002"]
    m1 = json.loads((first.final / MANIFEST).read_text())
    m2 = json.loads((second.final / MANIFEST).read_text())
    assert m1["previous_manifest_sha256"] is None
    assert m2["previous_manifest_sha256"] == sha256_file(first.final / MANIFEST)
    assert m2["files"]["report.txt"]["sha256"] == sha256_file(second.final / "report.txt")
    assert set(m2["files"]) == {"report.txt", "sub/fig.png"}


def test_sealed_files_are_read_only(tmp_path):
    b = build(tmp_path)
    assert not os.stat(b.final / "report.txt").st_mode & 0o222


def test_a_failed_build_leaves_nothing_behind(tmp_path):
    build(tmp_path)
    with pytest.raises(RuntimeError):
        with new_version(tmp_path, "a") as b:
            (b.path / "half.txt").write_text("half")
            raise RuntimeError("boom")
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == ["v001"]
    assert build(tmp_path).name == "v002"


def test_concurrent_builds_get_distinct_versions(tmp_path):
    names, barrier = [], threading.Barrier(4)

    def worker():
        with new_version(tmp_path, "a") as b:
            barrier.wait()
            (b.path / "f").write_text(b.name)
        names.append(b.name)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(names) == ["v001", "v002", "v003", "v004"]
    for _, p in list_versions(tmp_path / "a"):
        assert (p / "f").read_text() == p.name


def test_verify_passes_a_sealed_version_and_its_chain(tmp_path):
    build(tmp_path)
    build(tmp_path, content="y")
    reports = verify_path(tmp_path / "a")
    assert [r.ok for r in reports] == [True, True]
    assert [r.chain for r in reports] == ["first", "ok"]


@pytest.mark.parametrize("tamper, field", [
    (lambda v: flip_bit(v / "sub" / "fig.png"), "changed"),
    (lambda v: (v / "sub" / "fig.png").unlink(), "removed"),
    (lambda v: (v / "extra.txt").write_text("new"), "added"),
])
def test_verify_reports_each_kind_of_tampering(tmp_path, tamper, field):
    b = build(tmp_path)
    tamper(b.final)
    [report] = verify_path(b.final)
    assert not report.ok
    assert getattr(report, field) == [{"changed": "sub/fig.png", "removed": "sub/fig.png", "added": "extra.txt"}[field]]


def test_verify_reports_a_broken_chain(tmp_path):
    first = build(tmp_path)
    second = build(tmp_path, content="y")
    manifest = first.final / MANIFEST
    manifest.chmod(0o644)
    manifest.write_text(manifest.read_text().replace('"a"', '"b"'))
    assert "changed since" in verify_version(second.final).chain


def test_leftovers_of_a_killed_run_are_cleared_and_never_visible(tmp_path):
    import subprocess
    import sys

    audit = tmp_path / "a"
    audit.mkdir()
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    pid = int(dead.stdout)  # a process that has exited
    (audit / ".reserved-v001").mkdir()
    (audit / ".reserved-v001" / "pid").write_text(str(pid))
    (audit / f".building-v001-{pid}").mkdir()
    (audit / f".building-v001-{pid}" / "half.txt").write_text("half")
    assert list_versions(audit) == []
    b = build(tmp_path)
    assert b.name == "v001"
    assert sorted(p.name for p in audit.iterdir()) == ["v001"]


def test_a_live_reservation_is_respected(tmp_path):
    audit = tmp_path / "a"
    audit.mkdir()
    (audit / ".reserved-v001").mkdir()
    (audit / ".reserved-v001" / "pid").write_text(str(os.getpid()))  # alive: this process
    assert build(tmp_path).name == "v002"


def test_the_seal_lets_sha256sum_check_the_manifest(tmp_path):
    import shutil
    import subprocess

    b = build(tmp_path)
    if not shutil.which("sha256sum"):
        pytest.skip("sha256sum not installed")
    out = subprocess.run(["sha256sum", "-c", SEAL], cwd=b.final, capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.strip() == "manifest.json: OK"


def test_a_changed_byte_in_the_newest_manifest_is_caught_by_its_seal(tmp_path):
    # No later version chains to the newest manifest yet, so only the seal can see this edit.
    b = build(tmp_path)
    manifest = b.final / MANIFEST
    manifest.chmod(0o644)
    manifest.write_text(manifest.read_text().replace('"created": "', '"created": "1', 1))
    [report] = verify_path(b.final)
    assert not report.ok and "manifest.sha256" in report.seal and report.changed == []


def test_a_removed_seal_fails_but_a_manifest_from_before_seals_still_verifies(tmp_path):
    b = build(tmp_path)
    (b.final / SEAL).unlink()
    [report] = verify_path(b.final)
    assert not report.ok and report.seal == f"{SEAL} missing"
    manifest = b.final / MANIFEST
    manifest.chmod(0o644)
    doc = json.loads(manifest.read_text())
    manifest.write_text(json.dumps({**doc, "manifest_version": 1}))
    [legacy] = verify_path(b.final)
    assert legacy.ok and legacy.seal == "legacy"
