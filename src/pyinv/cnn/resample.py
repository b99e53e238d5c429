"""Resampling a Stokes cube onto a CNN model's wavelength grid (``resample=True`` of
:func:`pyinv.cnn.predict` and ``init="cnn"``)."""
from __future__ import annotations

import warnings

import numpy as np

__all__ = ["resample_to_model", "grid_mismatch"]


def grid_mismatch(model, grid) -> float | None:
    """Largest |offset difference| [mÅ] between the data grid and the model's grid, point by point, or
    None when the two cannot be compared point by point (other number of points or other lines)."""
    ref = np.asarray(model.meta["offset_mA"], dtype=np.float64)
    off = np.asarray(grid.offset_mA, dtype=np.float64)
    if off.size != ref.size or [int(v) for v in np.asarray(grid.line_index)] != list(model.meta["line_index"]):
        return None
    return float(np.abs(off - ref).max())


def resample_to_model(data: np.ndarray, grid, model) -> tuple[np.ndarray, dict]:
    """Linear interpolation of ``data`` (..., 4, nλ_data) from ``grid`` onto the model's wavelengths.

    Every model point (line index L, offset o from line L) is interpolated from the data points of the
    same line index; model points outside the data's range of that line take the edge value. Warns
    (UserWarning) with the size of the change: data and model sampling, the largest distance from a model
    point to its nearest data point, and the number of model points outside the data range.

    Returns
    -------
    cube : ndarray (..., 4, nλ_model)
    info : dict
        ``max_shift_mA`` (largest distance to the nearest data point), ``outside`` (model points beyond the
        data range), ``data_points``, ``model_points``.
    """
    d = np.asarray(data, dtype=np.float64)
    if d.shape[-1] != grid.nwav:
        raise ValueError(f"the cube has {d.shape[-1]} wavelengths, its grid {grid.nwav}")
    m_li = np.asarray(model.meta["line_index"], dtype=int)
    m_off = np.asarray(model.meta["offset_mA"], dtype=np.float64)
    d_li = np.asarray(grid.line_index, dtype=int)
    d_off = np.asarray(grid.offset_mA, dtype=np.float64)
    out = np.empty(d.shape[:-1] + (m_off.size,))
    flat = d.reshape(-1, d.shape[-1])
    oflat = out.reshape(-1, m_off.size)
    shift, outside = 0.0, 0
    for L in np.unique(m_li):
        mj = np.nonzero(m_li == L)[0]
        dj = np.nonzero(d_li == L)[0]
        if dj.size == 0:
            raise ValueError(f"cannot resample: the data have no wavelengths of line {int(L)}, which the CNN "
                             f"model needs")
        o = np.argsort(d_off[dj])
        xs = d_off[dj][o]
        ys = flat[:, dj[o]]
        xt = m_off[mj]
        outside += int(((xt < xs[0] - 1e-6) | (xt > xs[-1] + 1e-6)).sum())
        shift = max(shift, float(np.abs(xt[:, None] - xs[None, :]).min(axis=1).max()))
        k = np.clip(np.searchsorted(xs, xt) - 1, 0, max(xs.size - 2, 0))
        if xs.size == 1:
            oflat[:, mj] = ys[:, :1]
            continue
        t = np.clip((xt - xs[k]) / (xs[k + 1] - xs[k]), 0.0, 1.0)
        oflat[:, mj] = ys[:, k] * (1 - t) + ys[:, k + 1] * t
    dstep = float(np.median(np.abs(np.diff(d_off)))) if d_off.size > 1 else float("nan")
    mstep = float(np.median(np.abs(np.diff(m_off)))) if m_off.size > 1 else float("nan")
    info = {"max_shift_mA": shift, "outside": outside, "data_points": int(d_off.size),
            "model_points": int(m_off.size), "data_step_mA": dstep, "model_step_mA": mstep}
    warnings.warn(f"resampled the cube onto the CNN model's grid: {d_off.size} points of {dstep:.3f} mA -> "
                  f"{m_off.size} points of {mstep:.3f} mA; largest distance from a model point to the nearest data "
                  f"point {shift:.2f} mA; {outside} model point(s) outside the data range (edge values)",
                  UserWarning, stacklevel=3)
    return out, info
