"""The loss panel of `--plot`: zero-loss trials sit on a labelled row of their own."""

from __future__ import annotations

import numpy as np
import pytest

from twamp.bench import plot


@pytest.mark.parametrize(
    ("losses", "row"),
    [([0.0, 0.5, 0.0, 30.0], 0.01), ([0.0, 0.0], 0.001), ([0.004, 100.0], 0.0001)],
)
def test_zero_loss_trials_are_drawn_on_a_labelled_row(losses: list[float], row: float) -> None:
    matplotlib = pytest.importorskip("matplotlib")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # why: only after choosing the Agg backend

    fig, ax = plt.subplots()
    try:
        xs = [float(i) for i in range(len(losses))]
        plot._loss_panel(ax, xs, losses)
        fig.canvas.draw()
        labels = [t.get_text() for t in ax.get_yticklabels()]
        assert labels[0] == "0 (no loss)"
        assert ax.get_yticks()[0] == pytest.approx(row)
        # The row is below every loss drawn, and no tick claims more than 100 %.
        assert max(ax.get_yticks()) <= 100.0
        drawn = {
            str(c.get_label()): np.asarray(c.get_offsets(), dtype=float)[:, 1].tolist()
            for c in ax.collections
        }
        zero = drawn.get("trial with no loss (the '0' row)", [])
        assert len(zero) == losses.count(0.0)
        assert all(y == pytest.approx(row) for y in zero)
        lossy = drawn.get("trial that lost packets", [])
        assert sorted(lossy) == sorted(v for v in losses if v > 0)
        assert all(row < v for v in lossy)
    finally:
        plt.close(fig)
