"""Quick-look figures (matplotlib, non-interactive backend)."""
from __future__ import annotations

from pathlib import Path

import numpy as np

__all__ = ["plot_stokes", "plot_coupled", "coupled_chi2_history", "COUPLED_PANELS"]


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


#: Panels of :func:`plot_coupled`: (map name, label, colour map, scale of the map's units).
COUPLED_PANELS = (("T", "T [K]", "inferno", 1.0), ("B", "B [G]", "viridis", 1.0),
                  ("vlos", "v$_{LOS}$ [km/s]", "RdBu_r", 1e-5), ("gamma", "γ [deg]", "RdBu_r", 1.0))


def coupled_chi2_history(result) -> list[tuple[int, list[float]]]:
    """Per tile of a coupled inversion (``result.provenance["coupled"]["tiles"]``): (tile index, χ² of the tile
    after each accepted LM step, the start first). Empty for a result without that record."""
    tiles = ((getattr(result, "provenance", None) or {}).get("coupled") or {}).get("tiles") or []
    return [(int(t.get("tile", k)), [float(c) for c in t["chi2"]]) for k, t in enumerate(tiles) if t.get("chi2")]


def plot_coupled(pixel, coupled, path: str | Path | None = None, log_tau: float = 0.0):
    """Quick look at a spatially coupled inversion, from what a user has (no truth): the pixel-by-pixel
    start and the coupled result side by side.

    Rows: T, B, v_LOS, γ at ``log_tau`` and the reduced χ² against the noise model (log₁₀; 0 = the noise
    level). Columns: pixel by pixel, coupled (same colour scale per row), coupled − pixel. The last panel
    shows χ² of each tile's coupled solve after every accepted Levenberg–Marquardt step, relative to its
    start (``provenance["coupled"]["tiles"]``), when the result records it.

    Parameters
    ----------
    pixel, coupled : pyinv.InversionResult
        The pixel-by-pixel inversion (the start) and :func:`pyinv.coupled.invert_coupled`'s result (or
        ``pyinv.invert(..., spatial_psf=...)``'s), of the same map.
    path : str or Path, optional
        Output image (PNG, Agg backend); None: only return the figure.
    log_tau : float
        log τ₅₀₀ of the maps.

    Returns
    -------
    matplotlib.figure.Figure
    """
    import matplotlib

    if path is not None:
        matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    if tuple(pixel.shape) != tuple(coupled.shape):
        raise ValueError(f"pixel and coupled results must be of one map: shapes {pixel.shape} and {coupled.shape}")
    rows = len(COUPLED_PANELS) + 1
    fig, axes = plt.subplots(rows, 3, figsize=(11, 3.0 * rows), constrained_layout=True)
    for r, (name, label, cmap, scale) in enumerate(COUPLED_PANELS):
        a, b = pixel.map(name, log_tau) * scale, coupled.map(name, log_tau) * scale
        both = np.concatenate([a[np.isfinite(a)], b[np.isfinite(b)]])
        lo, hi = (np.percentile(both, [1, 99]) if both.size else (0.0, 1.0))
        if name == "vlos":
            lo, hi = -max(abs(lo), abs(hi), 1e-3), max(abs(lo), abs(hi), 1e-3)
        for c, (m, what) in enumerate(((a, "pixel by pixel"), (b, "coupled"))):
            im = axes[r, c].imshow(m, origin="lower", cmap=cmap, vmin=lo, vmax=hi)
            axes[r, c].set_title(f"{label}, {what}", fontsize=9)
        fig.colorbar(im, ax=axes[r, :2], shrink=0.8)
        d = b - a
        lim = np.nanpercentile(np.abs(d), 99) if np.isfinite(d).any() else 1.0
        im = axes[r, 2].imshow(d, origin="lower", cmap="RdBu_r", vmin=-(lim or 1.0), vmax=lim or 1.0)
        axes[r, 2].set_title(f"coupled − pixel, {label}", fontsize=9)
        fig.colorbar(im, ax=axes[r, 2], shrink=0.8)
    r = rows - 1
    with np.errstate(divide="ignore", invalid="ignore"):
        c2 = [np.log10(np.asarray(x.chi2_reduced, dtype=np.float64)) for x in (pixel, coupled)]
    fin = np.concatenate([c[np.isfinite(c)] for c in c2])
    lo, hi = (np.percentile(fin, [1, 99]) if fin.size else (-1.0, 1.0))
    for c, (m, what) in enumerate(zip(c2, ("pixel by pixel", "coupled"))):
        im = axes[r, c].imshow(m, origin="lower", cmap="magma", vmin=min(lo, 0.0), vmax=max(hi, 0.1))
        med = np.nanmedian(10 ** m) if np.isfinite(m).any() else np.nan
        axes[r, c].set_title(f"log₁₀ reduced χ², {what} (median {med:.2f})", fontsize=9)
    fig.colorbar(im, ax=axes[r, :2], shrink=0.8)
    ax = axes[r, 2]
    hist = coupled_chi2_history(coupled)
    for k, h in hist:
        ax.plot(np.arange(len(h)), np.asarray(h) / h[0], marker=".", lw=1, label=f"tile {k}")
    if hist:
        ax.set_yscale("log")
        ax.set_xlabel("accepted LM step")
        ax.set_ylabel("χ² / χ² of the start")
        if len(hist) <= 8:
            ax.legend(fontsize=7)
    else:
        ax.text(0.5, 0.5, "no per-iteration χ² recorded", ha="center", va="center", transform=ax.transAxes)
    ax.set_title("coupled solve: χ² per tile", fontsize=9)
    fig.suptitle(f"coupled vs pixel-by-pixel inversion, {pixel.shape[0]}×{pixel.shape[1]} pixels, "
                 f"log τ = {log_tau:g}")
    if path is not None:
        fig.savefig(path, dpi=100)
        plt.close(fig)
    return fig
