"""Audit versions: distinct numbers, sealed by a manifest, nothing left on failure."""

import json
import os
import threading

import pytest

from glassbox_audit.data.imageio import sha256_file
from glassbox_audit.versions import MANIFEST, list_versions, new_version


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
