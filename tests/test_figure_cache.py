"""The figure cache: a figure drawn again from the same inputs is copied, byte for byte."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pytest

from glassbox_audit.report import charts, figure_cache
from glassbox_audit.report.figure_cache import cached_figure, figure_cache as cache_block

DRAW = charts.plot_histogram.__wrapped__  # the drawing itself, under the cache
VALUES = {"a": [0.1, 0.5, 0.9, 0.7], "b": [0.2, 0.3]}


class Scores(Sequence):
    def __init__(self, values):
        self._values = list(values)

    def __getitem__(self, i):
        return self._values[i]

    def __len__(self):
        return len(self._values)


@pytest.fixture
def drawn(monkeypatch):
    """Counts the histograms actually drawn (the function under the cache)."""
    calls = []
    def counting(*args, **kwargs):
        calls.append(args[0])
        return DRAW(*args, **kwargs)

    monkeypatch.setattr(charts, "plot_histogram", cached_figure(counting))
    return calls


def test_a_figure_drawn_again_from_the_same_inputs_is_copied_byte_for_byte(drawn, tmp_path):
    plain = DRAW(tmp_path / "plain.png", VALUES, "Dice", dpi=40)
    with cache_block(tmp_path / "cache"):
        charts.plot_histogram(tmp_path / "first.png", VALUES, "Dice", dpi=40)
        charts.plot_histogram(tmp_path / "second.png", VALUES, "Dice", dpi=40)
    assert drawn == [tmp_path / "first.png"]  # the second one was not drawn
    assert (tmp_path / "second.png").read_bytes() == plain.read_bytes() == (tmp_path / "first.png").read_bytes()


def test_any_change_of_an_argument_draws_anew(drawn, tmp_path):
    with cache_block(tmp_path / "cache"):
        charts.plot_histogram(tmp_path / "a.png", VALUES, "Dice", dpi=40)
        charts.plot_histogram(tmp_path / "b.png", {"a": [0.1, 0.5, 0.9, 0.71], "b": [0.2, 0.3]}, "Dice", dpi=40)
        charts.plot_histogram(tmp_path / "c.png", VALUES, "Jaccard", dpi=40)
        charts.plot_histogram(tmp_path / "d.png", VALUES, "Dice", threshold=0.65, dpi=40)
        charts.plot_histogram(tmp_path / "e.png", dict(reversed(list(VALUES.items()))), "Dice", dpi=40)
    assert len(drawn) == 5


def test_arrays_are_keyed_by_their_values_shape_and_type():
    f = DRAW
    a = np.arange(6, dtype=np.float32)
    keys = {figure_cache.figure_key(f, (x,), {}) for x in (a, a.reshape(2, 3), a.astype(np.float64), a + 1)}
    assert len(keys) == 4
    assert figure_cache.figure_key(f, (a.copy(),), {}) == figure_cache.figure_key(f, (a,), {})


def test_a_change_of_the_drawing_code_draws_anew(drawn, tmp_path, monkeypatch):
    with cache_block(tmp_path / "cache"):
        charts.plot_histogram(tmp_path / "a.png", VALUES, "Dice", dpi=40)
        monkeypatch.setattr(figure_cache, "code_digest", lambda: "another version of the code")
        charts.plot_histogram(tmp_path / "b.png", VALUES, "Dice", dpi=40)
    assert len(drawn) == 2


def test_outside_a_cache_block_or_with_an_unkeyable_argument_the_figure_is_drawn(drawn, tmp_path):
    charts.plot_histogram(tmp_path / "a.png", VALUES, "Dice", dpi=40)
    charts.plot_histogram(tmp_path / "b.png", VALUES, "Dice", dpi=40)
    with cache_block(tmp_path / "cache"):
        odd = {"a": Scores([0.1, 0.5])}  # a type the key does not know how to read
        charts.plot_histogram(tmp_path / "c.png", odd, "Dice", dpi=40)
    assert len(drawn) == 3
    assert not any((tmp_path / "cache").rglob("*.png"))


def test_a_cached_figure_whose_bytes_changed_on_disk_is_drawn_again_not_copied(drawn, tmp_path):
    with cache_block(tmp_path / "cache"):
        charts.plot_histogram(tmp_path / "first.png", VALUES, "Dice", dpi=40)
    [stored] = (tmp_path / "cache").glob("*/*.png")
    stored.write_bytes(stored.read_bytes()[:-40])  # truncated on disk
    with cache_block(tmp_path / "cache"):
        charts.plot_histogram(tmp_path / "second.png", VALUES, "Dice", dpi=40)
    assert len(drawn) == 2
    assert (tmp_path / "second.png").read_bytes() == (tmp_path / "first.png").read_bytes()
    # and the cache holds the good figure again
    assert stored.read_bytes() == (tmp_path / "first.png").read_bytes()


def test_a_cached_figure_that_cannot_be_read_is_drawn_and_the_run_goes_on(drawn, tmp_path, monkeypatch):
    with cache_block(tmp_path / "cache"):
        charts.plot_histogram(tmp_path / "first.png", VALUES, "Dice", dpi=40)
    real = figure_cache._store

    def failing(src, dst, check=None):
        if check is not None:
            raise PermissionError(f"cannot read {src}")
        return real(src, dst, check)

    monkeypatch.setattr(figure_cache, "_store", failing)
    with cache_block(tmp_path / "cache"):
        charts.plot_histogram(tmp_path / "second.png", VALUES, "Dice", dpi=40)
    assert len(drawn) == 2 and (tmp_path / "second.png").read_bytes() == (tmp_path / "first.png").read_bytes()


def test_the_cache_keeps_the_most_recently_used_figures_within_its_size(drawn, tmp_path):
    import os

    cache = tmp_path / "cache"
    with cache_block(cache):
        for i in range(3):
            charts.plot_histogram(tmp_path / f"{i}.png", VALUES, f"metric {i}", dpi=40)
    pngs = sorted(cache.glob("*/*.png"), key=lambda p: p.stat().st_mtime)
    for age, png in enumerate(pngs):  # oldest first, one minute apart
        os.utime(png, (1_000_000 + 60 * age, 1_000_000 + 60 * age))
    keep = pngs[-1].stat().st_size + pngs[-2].stat().st_size
    assert figure_cache.prune(cache, keep) == 1
    assert not pngs[0].exists() and not pngs[0].with_suffix(".sha256").exists()
    assert pngs[1].exists() and pngs[2].exists()
