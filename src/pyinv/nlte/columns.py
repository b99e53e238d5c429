"""Training columns for the departure-coefficient emulator (issue 19): perturbed semi-empirical models, their
Ca II departure coefficients from an NLTE backend, stored in resumable shards.

Models, on the fixed grid :data:`LOG_TAU` (log τ₅₀₀ = 1.0 … −5.3 in 0.1 dex, deepest first, the range of
the Lightweaver FAL C column):

* temperature: FAL C (Fontenla, Avrett & Loeser 1993, ApJ 406, 319; Lightweaver's ``Falc82`` table) whose
  chromospheric rise (T above the running temperature minimum) is scaled and shifted in height to span the
  semi-empirical family — "A-like" (scale 0.3–0.8, a cool chromosphere), "C-like" (0.8–1.2), "F-like"
  (1.2–1.7, network) and "P-like" (1.7–2.5, plage); the scales bracket the chromospheric temperature
  differences of FAL A/C/F/P (Fontenla et al. 1993), the published tables themselves are not used — plus a
  temperature-minimum offset (±300 K), a photospheric offset (±100 K) and 0–2 Gaussian bumps (±100–700 K,
  centred anywhere in log τ −5.3 … −1, 0.25–0.8 dex wide);
* P_e in hydrostatic equilibrium (:func:`pyinv.hydrostatic`) from a top P_e scaled by 10^±0.3;
* v_mic: FAL C's turbulence × 0.5–1.5 ± 0.3 km/s; v_LOS: offset ±3 km/s, gradient ±1.5 km/s per dex and a
  chromospheric step ±3 km/s (SIR's sign: > 0 redshift);
* a field (B 0–2000 G with a gradient, any inclination and azimuth) in half the columns.

Column ``k`` is drawn from ``numpy.random.default_rng([seed, k])``, so a run can be killed and resumed
(complete shards are skipped) and always gives the same columns. Columns with ``k % 10 == 9`` form the
held-out set (never used for training or tuning); for them the backend's LTE profiles are computed too
(they set the continuum scale of the profile test).

Shard ``shard_NNNNN.npz`` (columns ``NNNNN·size`` …) holds: ``index``, ``log_tau`` (ndep), ``T`` [K],
``Pe`` [dyn cm⁻²], ``vmic`` [cm s⁻¹], ``vlos`` [cm s⁻¹], ``B`` [G], ``gamma``, ``phi`` [deg] (ncol, ndep),
``log_b`` (ncol, nlevel, ndep: log₁₀ b of every level of the active atom), ``stokes`` (ncol, 4, nλ: NLTE),
``stokes_lte`` (NaN where not computed), ``wavelength`` (vacuum nm), ``status``, ``iterations``, ``dpops``,
``seconds``, ``family``.

Run: ``python -m pyinv.nlte.columns OUTDIR --columns 2000`` (see ``--help``).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["LOG_TAU", "FAMILIES", "base_model", "draw_column", "is_held_out", "generate", "load_shards", "main"]

#: The emulator's depth grid: log τ₅₀₀ = 1.0 … −5.3, 0.1 dex, deepest first (64 points).
LOG_TAU = np.round(np.arange(1.0, -5.3 - 1e-9, -0.1), 2)
#: Chromospheric-rise scale ranges of the model families.
FAMILIES = {"A": (0.3, 0.8), "C": (0.8, 1.2), "F": (1.2, 1.7), "P": (1.7, 2.5)}
_FAMILY_NAMES = tuple(FAMILIES)


def is_held_out(k: int) -> bool:
    """True for the held-out columns (``k % 10 == 9``)."""
    return int(k) % 10 == 9


def _backend(lte: bool, atom_lines=None):
    from ..defaults import default_lines
    from .backend import level_map
    from .lw import Lightweaver

    lines = default_lines()
    return Lightweaver(level_map(lines, [8]) if atom_lines is None else atom_lines, hydrogen="model", prd=False,
                       lte=lte)


def _window():
    """Ca II 8542 ±1.5 Å at 30 mÅ (the bench_desire window): (lines, grid, vacuum wavelengths [nm])."""
    from ..defaults import default_lines
    from ..lines import WavelengthGrid
    from .backend import grid_vacuum_nm

    lines = default_lines()
    grid = WavelengthGrid.from_regions([(8, -1500, 30, 1500)], lines)
    return lines, grid, grid_vacuum_nm(lines, grid)


def base_model():
    """FAL C on :data:`LOG_TAU` (T, hydrostatic P_e, v_mic; at rest, no field), τ₅₀₀ from one Lightweaver
    call on Lightweaver's FAL C column."""
    from .column import atmosphere_from_column
    from .lw import falc_column

    col = falc_column()
    r0 = _backend(False).synthesize(col, _window()[2])
    return atmosphere_from_column(col, r0.tau500, LOG_TAU, hydrostatic=True)


def _rise(T: np.ndarray) -> np.ndarray:
    """T above the running minimum from the deep end (zero below the temperature minimum)."""
    return T - np.minimum.accumulate(T)


def draw_column(rng: np.random.Generator, base: Any, *, family: str | None = None,
                bump_width: tuple[float, float] = (0.25, 0.8), bump_amp: tuple[float, float] = (100.0, 700.0),
                nbumps: tuple[int, int] = (0, 2), rise_scale: tuple[float, float] | None = None,
                rise_shift: tuple[float, float] = (-0.5, 0.5)) -> tuple[Any, str]:
    """One perturbed model (module docstring) and its family letter.

    Parameters
    ----------
    rng : numpy Generator
    base : pyinv.Atmosphere
        :func:`base_model` (on :data:`LOG_TAU`).
    family : str, optional
        One of :data:`FAMILIES`; drawn uniformly otherwise.
    bump_width, bump_amp, nbumps
        Ranges of the Gaussian temperature bumps: width [dex], |amplitude| [K], count (inclusive).
    rise_scale, rise_shift
        Ranges of the chromospheric-rise scale (default: the family's) and of its shift [dex, > 0 deeper].
    """
    from ..physics.thermo import hydrostatic

    lt = np.asarray(base.log_tau, dtype=np.float64)
    fam = _FAMILY_NAMES[int(rng.integers(len(_FAMILY_NAMES)))] if family is None else family
    if fam not in FAMILIES:
        raise ValueError(f"family must be one of {sorted(FAMILIES)}, got {fam!r}")
    T0 = np.asarray(base.T, dtype=np.float64)
    scale = rng.uniform(*(FAMILIES[fam] if rise_scale is None else rise_scale))
    shift = rng.uniform(*rise_shift)                    # dex; > 0 moves the rise deeper
    rise = np.interp(lt - shift, lt[::-1], _rise(T0)[::-1])
    up = 1.0 / (1.0 + np.exp((lt + 2.5) / 0.3))         # 1 above log tau ~ -2.5
    deep = 1.0 / (1.0 + np.exp(-(lt + 0.5) / 0.3))      # 1 below log tau ~ -0.5
    T = T0 + (scale - 1.0) * _rise(T0) + scale * (rise - _rise(T0))
    T = T + rng.uniform(-300, 300) * up + rng.uniform(-100, 100) * deep
    for _ in range(int(rng.integers(nbumps[0], nbumps[1] + 1))):
        amp = rng.uniform(*bump_amp) * rng.choice([-1.0, 1.0])
        T = T + amp * np.exp(-0.5 * ((lt - rng.uniform(-5.3, -1.0)) / rng.uniform(*bump_width)) ** 2)
    T = np.maximum(T, 3000.0)
    vmic = np.maximum(np.asarray(base.vmic, dtype=np.float64) * rng.uniform(0.5, 1.5) + rng.uniform(-0.3, 0.3) * 1e5,
                      0.0)
    v = (rng.uniform(-3, 3) + rng.uniform(-1.5, 1.5) * (lt + 2.0)
         + rng.uniform(-3, 3) / (1.0 + np.exp((lt - rng.uniform(-5.0, -2.5)) / 0.3))) * 1e5
    if rng.uniform() < 0.5:
        B = np.maximum(rng.uniform(0, 2000) * (1.0 + rng.uniform(-0.3, 0.3) * (lt + 2.0) / 3.0), 0.0)
        gamma, phi = rng.uniform(0, 180), rng.uniform(0, 180)
    else:
        B, gamma, phi = 0.0, 0.0, 0.0
    atm = base.with_columns(T=T, vmic=vmic, vlos=v, B=B, gamma=gamma, phi=phi)
    return hydrostatic(atm, top_pe=float(np.asarray(base.Pe)[-1]) * 10.0 ** rng.uniform(-0.3, 0.3)), fam


_FIELDS = ("T", "Pe", "vmic", "vlos", "B", "gamma", "phi")


def _run_shard(path: Path, ks: range, seed: int, base: Any, be_nlte, be_lte, wl: np.ndarray, log=print,
               start=None) -> None:
    rows: dict[str, list] = {k: [] for k in (*_FIELDS, "index", "log_b", "stokes", "stokes_lte", "status",
                                             "iterations", "dpops", "seconds", "family")}
    for k in ks:
        atm, fam = draw_column(np.random.default_rng([seed, k]), base)
        be = be_lte if is_held_out(k) else be_nlte
        t0 = time.perf_counter()
        init = None if start is None else {start.atom: 10.0 ** start.log_b(atm)[:, ::-1]}
        r = be.synthesize(atm, wl, initial_b=init)
        if init is not None and not r.ok:      # a start the backend could not use: from LTE
            r = be.synthesize(atm, wl)
        dt = time.perf_counter() - t0
        b = next(iter(r.b_levels.values()), None) if r.ok else None
        nlev = 5
        if b is not None:
            # the backend's tau500 grid is the model's (tau scale): top first -> deepest first
            logb = np.log10(np.maximum(np.asarray(b, dtype=np.float64)[:, ::-1], 1e-300))
            nlev = logb.shape[0]
        else:
            logb = np.full((nlev, LOG_TAU.size), np.nan)
        for f in _FIELDS:
            rows[f].append(np.broadcast_to(np.asarray(getattr(atm, f), dtype=np.float64), LOG_TAU.shape).copy())
        rows["index"].append(k)
        rows["log_b"].append(logb)
        rows["stokes"].append(np.asarray(r.stokes, dtype=np.float64))
        rows["stokes_lte"].append(np.full((4, wl.size), np.nan) if r.stokes_lte is None else r.stokes_lte)
        rows["status"].append(int(r.status))
        rows["iterations"].append(int(r.iterations))
        rows["dpops"].append(float(r.delta))
        rows["seconds"].append(dt)
        rows["family"].append(fam)
        if r.status:
            log(f"column {k}: status {r.status} ({r.message})")
    arrays = {k: np.asarray(v) for k, v in rows.items()}
    tmp = path.with_name(path.name + ".tmp.npz")
    np.savez_compressed(tmp, log_tau=LOG_TAU, wavelength=wl, **arrays)
    os.replace(tmp, path)


def generate(outdir: str | os.PathLike, columns: int = 2000, *, seed: int = 19, shard_size: int = 50,
             start_emulator: str | os.PathLike | None = None, log=print) -> Path:
    """Generate (or resume) ``columns`` columns into ``outdir`` (module docstring); returns ``outdir``.

    ``start_emulator``: an emulator file (:mod:`pyinv.nlte.emulator`) whose b start the backend's iteration
    (about half the iterations; the converged b agree with an LTE start to the backend's tolerance, measured
    ≤ 0.0023 dex); recorded per shard in ``manifest.json``."""
    from .. import __version__

    out = Path(outdir)
    out.mkdir(parents=True, exist_ok=True)
    if columns < 1 or shard_size < 1:
        raise ValueError("columns and shard_size must be >= 1")
    manifest = out / "manifest.json"
    meta = {"seed": int(seed), "shard_size": int(shard_size), "log_tau": LOG_TAU.tolist(),
            "backend": "lightweaver", "lightweaver_options": {"hydrogen": "model", "prd": False},
            "atom": "CaII", "families": FAMILIES, "pyinv": __version__}
    if manifest.exists():
        old = json.loads(manifest.read_text())
        for key in ("seed", "shard_size", "log_tau"):
            if old.get(key) != meta[key]:
                raise ValueError(f"{out} holds a run with another {key} ({old.get(key)!r}); use a new folder")
        if "started_from_emulator" in old:
            meta["started_from_emulator"] = old["started_from_emulator"]
    meta["columns"] = int(columns)
    manifest.write_text(json.dumps(meta, indent=1) + "\n")
    base = base_model()
    be_nlte, be_lte = _backend(False), _backend(True)
    wl = _window()[2]
    start = None
    if start_emulator is not None:
        from .emulator import DepartureEmulator
        start = DepartureEmulator.load(start_emulator)
    nshard = -(-columns // shard_size)
    for s in range(nshard):
        path = out / f"shard_{s:05d}.npz"
        if path.exists():
            continue
        t0 = time.perf_counter()
        ks = range(s * shard_size, min((s + 1) * shard_size, columns))
        _run_shard(path, ks, seed, base, be_nlte, be_lte, wl, log=log, start=start)
        if start is not None:
            meta.setdefault("started_from_emulator", {})[path.name] = {
                "name": start.name, "version": start.version,
                "training_columns": (start.meta.get("training") or {}).get("train_columns")}
            manifest.write_text(json.dumps(meta, indent=1) + "\n")
        log(f"shard {s + 1}/{nshard}: columns {ks.start}-{ks.stop - 1} in {time.perf_counter() - t0:.0f} s")
    return out


def load_shards(outdir: str | os.PathLike) -> dict[str, np.ndarray]:
    """All complete shards of ``outdir`` concatenated (keys as a shard's; ``log_tau``/``wavelength`` once)."""
    files = sorted(Path(outdir).glob("shard_[0-9][0-9][0-9][0-9][0-9].npz"))
    if not files:
        raise FileNotFoundError(f"no shards in {outdir}")
    parts = [dict(np.load(f)) for f in files]
    out = {k: np.concatenate([p[k] for p in parts]) for k in parts[0] if k not in ("log_tau", "wavelength")}
    out["log_tau"], out["wavelength"] = parts[0]["log_tau"], parts[0]["wavelength"]
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m pyinv.nlte.columns", description=__doc__.split("\n")[0])
    ap.add_argument("outdir", type=Path, help="output folder (shards, manifest); resumed when it exists")
    ap.add_argument("--columns", type=int, default=2000)
    ap.add_argument("--seed", type=int, default=19)
    ap.add_argument("--shard-size", type=int, default=50)
    ap.add_argument("--start-emulator", type=Path, default=None,
                    help="emulator file whose b start the backend's iterations (faster; see generate)")
    args = ap.parse_args(argv)
    import warnings

    warnings.simplefilter("ignore")
    generate(args.outdir, args.columns, seed=args.seed, shard_size=args.shard_size,
             start_emulator=args.start_emulator, log=lambda s: print(s, flush=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
