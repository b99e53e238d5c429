"""``pyinv synth --nlte rh|lightweaver``: non-LTE synthesis from the command line."""
from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Callable

import numpy as np

__all__ = ["synth_nlte"]


def _setup(args: argparse.Namespace):
    from ..lines import LineList, WavelengthGrid
    from .presets import ca_ii_8542

    lines = LineList.read_sir(args.lines) if args.lines else None
    if args.grid:
        from ..defaults import default_lines
        lines = lines or default_lines()
        return lines, WavelengthGrid.read_sir(args.grid, lines)
    return ca_ii_8542(lines)


def _normalise(grid, stokes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Divide each region by its NLTE intensity at the region's first wavelength (the code's own
    normalisation; absolute intensities are not comparable with pyinv's HSRA continuum)."""
    out = np.array(stokes, dtype=np.float64, copy=True)
    ref = np.empty(len(grid.regions))
    for k, sl in enumerate(grid.region_slices()):
        ref[k] = out[..., 0, sl][..., :1].mean() if out.ndim > 2 else out[0, sl][0]
        out[..., sl] /= ref[k]
    return out, ref


def synth_nlte(args: argparse.Namespace, load_model: Callable) -> int:
    """Synthesise a model (or, with ``--atmospheres``, a map) with an NLTE backend."""
    from ..io.sir import read_abundances, write_sir_profiles
    from . import make_backend
    from .backend import NLTE_STATUS_NAMES, grid_vacuum_nm, level_map
    from .departures import write_sir_departures

    lines, grid = _setup(args)
    used = sorted({i for r in grid.blends for i in r})
    options = {"mu": args.mu}
    if args.nlte == "rh" and args.rh_dir:
        options["rh_dir"] = args.rh_dir
    backend = make_backend(args.nlte, level_map(lines, used), **options)
    abundances = read_abundances(args.abundances) if args.abundances else None
    if args.atmospheres:
        from ..io.fits import write_stokes_cube
        from ..maps.synthesis import synthesize_map

        atm = np.load(args.atmospheres)
        m = synthesize_map(atm, lines, grid, backend=backend, abundances=abundances, workers=args.workers,
                           progress=True)
        out = Path(args.output if args.output != "pyinv_synth.per" else "pyinv_synth.fits")
        write_stokes_cube(out, m.stokes, grid.wavelength, overwrite=True)
        codes, counts = np.unique(m.status, return_counts=True)
        print(f"{args.nlte}: {m.status.size} pixels ({', '.join(f'{n} {NLTE_STATUS_NAMES.get(int(c), c)}' for c, n in zip(codes, counts))}) "
              f"-> {out} (absolute intensities, W m^-2 Hz^-1 sr^-1)")
        return 0
    atmos = load_model(args.model)
    t0 = time.perf_counter()
    res = backend.synthesize(atmos, grid_vacuum_nm(lines, grid), abundances=abundances)
    dt = time.perf_counter() - t0
    print(f"{args.nlte}: status {res.status} ({NLTE_STATUS_NAMES.get(res.status, '?')}), "
          f"{res.iterations} iterations, {dt:.2f} s {res.message}")
    if not np.all(np.isfinite(res.stokes)):
        return 1
    stokes, ref = _normalise(grid, res.stokes)
    out = Path(args.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_sir_profiles(out, grid.line_index, grid.offset_mA, stokes)
    print(f"  {grid.nwav} wavelengths -> {out} (normalised to I at each region's first wavelength: "
          + ", ".join(f"{r:.4e}" for r in ref) + " W m^-2 Hz^-1 sr^-1)")
    if res.departures is not None:
        dep = out.with_suffix(".dep")
        write_sir_departures(dep, res.departures, check_sir_limits=False)
        print(f"  departure coefficients (SIR 2017 format) -> {dep}")
    for name, row in zip("IQUV", stokes):
        print(f"  {name}: min {row.min():+.5f}  max {row.max():+.5f}")
    return 0
