"""Figure helpers both reports draw with (``slhmc analyze`` and ``slhmc validate``).

Matplotlib's object API on an Agg canvas: no display, no global backend change, so a report can be
drawn inside any process (a notebook keeps its own backend). Figures are written atomically
(:mod:`slhmc_jax.files`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from slhmc_jax.files import atomic_open


def figure(width: float = 6.4, height: float = 4.2):
    """A matplotlib Figure of ``width`` x ``height`` inches on its own Agg canvas (constrained layout)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def colours(n: int) -> list:
    """``n`` RGBA colours of the tab10 cycle (tab:blue first; repeats after 10)."""
    from matplotlib import colormaps

    cmap = colormaps["tab10"]
    return [cmap(i % 10) for i in range(n)]


def hist_edges(arrays, bins: int = 60) -> np.ndarray:
    """(bins + 1,) common histogram edges spanning every value of ``arrays`` (a 1e-3 wide window
    around a constant, so that a delta-like distribution still gets a bar)."""
    pooled = np.concatenate([np.asarray(a).ravel() for a in arrays])
    lo, hi = float(pooled.min()), float(pooled.max())
    if hi - lo < 1e-12:
        lo, hi = lo - 0.5e-3, hi + 0.5e-3
    return np.linspace(lo, hi, bins + 1)


def save_figure(fig, path: Path, dpi: int = 110) -> None:
    """Write ``fig`` as PNG at ``path`` (atomically)."""
    with atomic_open(path, "wb") as fh:
        fig.savefig(fh, dpi=dpi, format="png")
