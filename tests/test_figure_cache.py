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
