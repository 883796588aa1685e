"""Locks, a full disk, kill -9, concurrent runs and hand edits: nothing half-written is ever
visible, earlier versions stay byte-identical and verify, every database passes
``PRAGMA integrity_check``, and the next run succeeds."""

import json

import pytest

from glassbox_audit.versions import MANIFEST, list_versions

from .battery import (AUDIT, EDIT_CASES, case_concurrent, case_disk_full_rlimit, case_disk_full_tmpfs, case_lock_timeout,
                      case_lock_wait, edited_by_hand, kill_nine, tmpfs_available)


def test_a_run_waits_for_a_lock_another_process_holds_briefly(sandbox):
    o = case_lock_wait(sandbox, hold=3.0, target="building")
    assert o.held, o.problems
    assert o.extra["locker"].startswith("locked")


def test_a_lock_held_past_the_busy_timeout_fails_in_one_line_and_writes_nothing(sandbox):
    o = case_lock_timeout(sandbox, busy_timeout=2.0)
    assert o.held, o.problems
    assert "database is locked" in o.message


def test_a_full_disk_fails_in_one_line_and_the_next_run_with_room_succeeds(sandbox):
    # A real filesystem filling up where mount is allowed (root); otherwise the kernel's
    # per-file size limit makes a write of the run fail the same way.
    o = case_disk_full_tmpfs(sandbox, margin=64 * 1024) if tmpfs_available() else case_disk_full_rlimit(sandbox)
    assert o.held, o.problems


@pytest.mark.parametrize("delay", [0.0, 0.2, 0.6])
def test_kill_nine_while_building_leaves_nothing_visible_and_the_next_run_succeeds(sandbox, delay):
    o = kill_nine(sandbox, delay, after_reserve=True)
    assert o.held, o.problems
    assert o.extra["stage"] == "while building the version"  # the kill did land mid-build


def test_two_runs_started_together_get_distinct_versions_in_one_chain(sandbox):
    o = case_concurrent(sandbox, n=2)
    assert o.held, o.problems
    versions = [p for _, p in list_versions(sandbox.audits / AUDIT)]
    previous = [json.loads((v / MANIFEST).read_text())["previous_version"] for v in versions]
    assert previous == [None] + [v.name for v in versions[:-1]]


@pytest.mark.parametrize("case", EDIT_CASES)
def test_verify_reports_a_version_edited_by_hand(sandbox, case):
    o = edited_by_hand(sandbox, case)
    assert o.held, o.problems
    assert o.exit_code == 1


def test_a_build_waits_for_a_lower_numbered_build_before_sealing(tmp_path):
    # The second build finishes its work first, but seals only after the first one, so its
    # manifest chains to it and the chain has no gap.
    import threading

    from glassbox_audit.versions import new_version, wait_for_earlier_versions

    first_inside, second_sealed = threading.Event(), threading.Event()
    order = []

    def first():
        with new_version(tmp_path, "a") as b:
            first_inside.set()
            second_sealed.wait(timeout=1.0)  # the second cannot seal while we are open
            (b.path / "f").write_text("1")
        order.append(b.name)

    t = threading.Thread(target=first)
    t.start()
    first_inside.wait()
    with new_version(tmp_path, "a") as second:
        wait_for_earlier_versions(second)
        (second.path / "f").write_text("2")
    second_sealed.set()
    order.append(second.name)
    t.join()
    assert order == ["v001", "v002"]
    manifest = json.loads((tmp_path / "a" / "v002" / MANIFEST).read_text())
    assert manifest["previous_version"] == "v001"
