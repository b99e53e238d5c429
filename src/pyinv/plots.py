"""Quick-look figures (matplotlib, non-interactive backend)."""
from __future__ import annotations

from pathlib import Path

import numpy as np

__all__ = ["plot_stokes"]


def plot_stokes(grid, stokes: np.ndarray, path: str | Path, title: str = "") -> Path:
    """Plot I, Q, U, V of one synthesis or observation against wavelength.

    Parameters
    ----------
    grid : WavelengthGrid
        Wavelength grid; the x axis is the absolute air wavelength [Å].
    stokes : ndarray, shape (4, nλ)
        Stokes profiles in units of the continuum intensity.
    path : str or Path
        Output image (PNG).
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    wav = np.asarray(grid.wavelength)
    stokes = np.asarray(stokes)
    fig, axes = plt.subplots(2, 2, figsize=(9, 6), sharex=True)
    labels = ["I / I$_c$", "Q / I$_c$", "U / I$_c$", "V / I$_c$"]
    # draw each region separately so that gaps between regions are not bridged
    region_id = np.asarray(getattr(grid, "region_id", np.zeros(wav.size, int)))
    for k, ax in enumerate(axes.flat):
        for r in np.unique(region_id):
            sel = region_id == r
            ax.plot(wav[sel], stokes[k, sel], lw=1.2, color="k")
        ax.set_ylabel(labels[k])
        ax.grid(alpha=0.3)
    for ax in axes[1]:
        ax.set_xlabel("air wavelength [Å]")
        ax.ticklabel_format(useOffset=False, axis="x")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
