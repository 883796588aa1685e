"""Bad images, folders and configuration: one line naming the file or key, exit 2, no
traceback, and the audit's earlier versions untouched."""

import pytest

from .battery import (BAD_IMAGES, CONFIG_CASES, ODD_BUT_VALID, SKIPPED, bad_config, bad_image, case_empty_folder,
                      case_missing_folder, case_mixed_folder)


@pytest.mark.parametrize("case", BAD_IMAGES)
def test_a_bad_image_stops_the_run_with_one_line_naming_the_file(sandbox, case):
    o = bad_image(sandbox, case)
    assert o.held, o.problems
    assert o.exit_code == 2 and o.message.startswith("error: ")


def test_an_empty_image_folder_is_named(sandbox):
    o = case_empty_folder(sandbox)
    assert o.held, o.problems


def test_a_missing_data_folder_is_named(sandbox):
    o = case_missing_folder(sandbox)
    assert o.held, o.problems


def test_skip_evaluates_odd_but_valid_images_and_lists_each_bad_file_with_its_reason(sandbox):
    fail, skip = case_mixed_folder(sandbox)
    assert fail.held, fail.problems
    assert skip.held, skip.problems
    assert set(ODD_BUT_VALID) <= set(skip.extra["evaluated"])
    assert {r["path"].rsplit("/", 1)[-1] for r in skip.extra["skipped"]} == set(SKIPPED)


@pytest.mark.parametrize("case", CONFIG_CASES)
def test_bad_configuration_names_the_key_and_changes_nothing(sandbox, case):
    o = bad_config(sandbox, case)
    assert o.held, o.problems


def test_debug_shows_the_traceback_the_plain_run_hides(sandbox):
    from glassbox_audit.errors import DataError

    folder = sandbox.folder("debug")
    (folder / "images" / "BAD_0001.png").write_bytes(b"")
    (folder / "masks" / "BAD_0001.png").write_bytes(b"")
    (folder / "splits" / "test.txt").write_text((folder / "splits" / "test.txt").read_text() + "BAD_0001\n")
    plain = sandbox.invoke(sandbox.folder_args(folder))
    debug = sandbox.invoke(["--debug"] + sandbox.folder_args(folder))
    assert plain.exit_code == 2 and plain.exception is None
    assert isinstance(debug.exception, DataError) and "BAD_0001.png" in str(debug.exception)
