"""``pyinv sir CONTROL.trol`` / :func:`run_sir`: run a SIR control file as SIR would (issue 13).

The control file (spec-forward §2.2) names every input relative to its own folder; the outputs are
written where SIR writes them (spec-forward §2.10, spec-inversion §3.8), with pyinv's naming rule: the
base name of a model is its file name without the last suffix, a trailing ``_<digits>`` being the cycle
offset (``guess_2.mod`` continues with ``guess_3``); outputs go into the model's folder.

* cycles > 0 (inversion): per cycle c, ``<model1>_c.mod``, ``<model1>_c.per`` (the mixed fit at the
  observed wavelengths), ``<model1>_c.err`` (uncertainties, header zeros), with model 2 also
  ``<model2>_c.mod/.err``; ``<control>.chi`` one row per cycle (SIR's s/n and χ², spec-inversion §3.1);
  ``<control>.log`` the per-cycle summary. Each cycle is one :func:`pyinv.invert_pixel` call with
  ``config.single_cycle(c)``, started from the previous cycle's result (in memory, full precision), with
  SIR's stopping rules (:data:`SIR_RULES`; ``sir_rules=False`` for invert_pixel's defaults).
  A FITS cube as observed profiles (``.fits``/``.fit``/``.fts``) is inverted as a map with
  :func:`pyinv.invert` (one component, all cycles); the result is ``<model1>_<cycles>.fits``.
* cycles = 0 (synthesis): the profile file named on line 2 from model 1 (+ model 2 and the stray light).
* cycles = −1 (response functions): the profile file and one RF file per parameter with a non-zero node
  entry (spec-forward §2.10: ``.rt .rpe .rmic .rh .rvz .rinc .raz .rmac``; ``.rff`` and ``.rstl`` for an
  inverted filling factor / stray light), see :func:`pyinv.io.sir.write_sir_rf`.

Every field is honoured or refused with a ValueError naming it (the README's "SIR control-file fields"
table); invalid input files give a ValueError naming the file and the value.
"""
from __future__ import annotations

import math
import os
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..atmosphere import Atmosphere, AtmosphereErrors, QuantityDict
from ..config import InversionConfig, NODE_PARAMETERS
from ..defaults import default_lines
from ..io.sir import (read_sir_model, read_sir_profiles, read_sir_rf, write_sir_chi, write_sir_model,
                     write_sir_profiles, write_sir_rf)
from ..lines import GridRegion, LineList, WavelengthGrid

__all__ = ["run_sir", "SirRun", "output_base", "RF_SUFFIX", "SIR_RULES", "read_sir_rf", "write_sir_rf"]

PathLike = str | os.PathLike

#: RF file suffix per node slot (spec-forward §2.10), plus the filling factor (f₂) and the stray light; the
#: keys are the node slots' and response functions' names (:data:`pyinv.config.NODE_PARAMETERS`).
RF_SUFFIX = QuantityDict({"T": ".rt", "Pe": ".rpe", "vmic": ".rmic", "B": ".rh", "vlos": ".rvz",
                          "gamma": ".rinc", "phi": ".raz", "macro": ".rmac", "filling": ".rff", "stray": ".rstl"},
                         place="rf")
_FITS_SUFFIXES = (".fits", ".fit", ".fts")
# control-file line of each file field (messages name the line and the label)
_FILE_LINE = {"observed": (2, "Observed profiles"), "stray_file": (3, "Stray light file"),
              "psf_file": (4, "PSF file"), "grid_file": (5, "Wavelength grid file"),
              "lines_file": (6, "Atomic parameters file"), "abundances_file": (7, "Abundances file"),
              "model1": (8, "Initial guess model 1"), "model2": (9, "Initial guess model 2"),
              "nlte_file": (42, "NLTE Departures filename")}


@dataclass
class SirRun:
    """What :func:`run_sir` did.

    Attributes
    ----------
    mode : {"inversion", "map", "synthesis", "rf"}
    outputs : list of Path
        Every file written, in order.
    chi : ndarray (ncycles, 2) or None
        Inversion: the rows of the ``.chi`` file (s/n, χ²).
    results : list
        Inversion: the :class:`pyinv.PixelResult` of each cycle; map: the :class:`pyinv.InversionResult`.
    stokes : ndarray (4, nλ) or None
        Synthesis / RF mode: the profiles written.
    rf : dict or None
        RF mode: the arrays written, keyed by suffix (``".rt"``, ...), each ``(n_depth, n_col)``.
    """

    mode: str
    outputs: list = field(default_factory=list)
    chi: np.ndarray | None = None
    results: list = field(default_factory=list)
    stokes: np.ndarray | None = None
    rf: dict | None = None


# ------------------------------------------------------------------------------------------ names
def output_base(path: PathLike) -> tuple[Path, int]:
    """pyinv's output base name of a model file and its cycle offset (spec-forward §2.10, "pyinv: correct").

    ``dir/guess.mod`` → (``dir/guess``, 0); ``dir/guess_2.mod`` → (``dir/guess``, 2). Directories and other
    ``.``/``_`` characters are kept.
    """
    p = Path(path)
    stem = p.name[: -len(p.suffix)] if p.suffix else p.name
    m = re.fullmatch(r"(.+)_(\d+)", stem)
    if m:
        return p.parent / m.group(1), int(m.group(2))
    return p.parent / stem, 0


# ------------------------------------------------------------------------------------------ inputs
def _cycles_of(text: str, source: str) -> int:
    """Line 1 (number of cycles) read with the control-file rules, before InversionConfig (which refuses
    cycles < 1) sees it."""
    lines = text.splitlines()
    if not lines or ":" not in lines[0]:
        raise ValueError(f"{source}:1 (Number of cycles): no ':' separating label and value")
    value = re.sub(r"\s+", "", lines[0].split(":", 1)[1].split("!", 1)[0])
    tok = re.split(r"[,;]", value)[0] if value else ""
    if not re.fullmatch(r"[+-]?\d+", tok):
        raise ValueError(f"{source}:1 (Number of cycles): expected an integer, got {value!r}")
    return int(tok)


def _with_cycles(text: str, n: int) -> str:
    lines = text.splitlines()
    label = lines[0].split(":", 1)[0]
    lines[0] = f"{label}:{n}"
    return "\n".join(lines) + "\n"


def _field(name: str, value: Any) -> str:
    line, label = _FILE_LINE[name]
    return f"control line {line} ({label}) = {value!r}"


def _file(cfg: InversionConfig, name: str, required: bool = False) -> Path | None:
    """Resolved path of a file field; ValueError naming the field when required and empty or missing."""
    p = cfg.resolve(name)
    if p is None:
        if required:
            line, label = _FILE_LINE[name]
            raise ValueError(f"control line {line} ({label}) is empty; this run needs the file")
        return None
    if not p.is_file():
        raise ValueError(f"{_field(name, getattr(cfg, name))}: file {p} not found")
    return p


def _read_model(path: Path) -> Atmosphere:
    m = read_sir_model(path, errors=False)
    assert isinstance(m, Atmosphere)
    return m


def _check_range(path: Path, name: str, value: float, lo: float, hi: float, open_: bool) -> None:
    ok = math.isfinite(value) and ((lo < value < hi) if open_ else (lo <= value <= hi))
    if not ok:
        iv = f"({lo:g}, {hi:g})" if open_ else f"[{lo:g}, {hi:g}]"
        raise ValueError(f"{path}: header {name} = {value!r} is outside {iv}")


def _models(cfg: InversionConfig, mode: str) -> tuple[Atmosphere, Atmosphere | None, Path, Path | None]:
    """Model 1 (and 2) with SIR's header rules (spec-forward §2.3): f₂ from model 2, α from model 1; one
    component: filling forced to 1 (warning if not 1)."""
    p1 = _file(cfg, "model1", required=True)
    p2 = _file(cfg, "model2")
    m1 = _read_model(p1)
    inverting = mode == "inversion"
    inv_ff = inverting and any(cfg.value("invert_filling", c) == 1 for c in range(1, cfg.cycles + 1))
    inv_st = inverting and any(cfg.value("invert_stray", c) == 1 for c in range(1, cfg.cycles + 1))
    stray = float(m1.stray)
    if cfg.stray_file:
        _check_range(p1, "stray-light fraction alpha [%]", stray, 0.0, 100.0, inv_st)
    elif stray != 0.0:
        warnings.warn(f"{p1}: stray-light fraction {stray:g} % in the header but no stray-light file (control line 3); "
                      "no stray light is used", stacklevel=3)
        stray = 0.0
    m2 = None
    if p2 is None:
        if float(m1.filling) != 1.0:
            warnings.warn(f"{p1}: filling factor {float(m1.filling):g} in the header of a single-component run; "
                          "1 is used (as SIR)", stacklevel=3)
        m1 = m1.with_columns(filling=1.0, stray=stray)
        return m1, None, p1, None
    m2 = _read_model(p2)
    if m2.ndep != m1.ndep or not np.allclose(m2.log_tau, m1.log_tau, rtol=0, atol=1e-4):
        raise ValueError(f"{p2}: the log tau grid of model 2 ({m2.ndep} points, {m2.log_tau[0]:g} .. "
                         f"{m2.log_tau[-1]:g}) differs from model 1's in {p1} ({m1.ndep} points, "
                         f"{m1.log_tau[0]:g} .. {m1.log_tau[-1]:g})")
    f2 = float(m2.filling)
    _check_range(p2, "filling factor f2", f2, 0.0, 1.0, inv_ff)
    if abs(float(m1.filling) + f2 - 1.0) > 1e-6:
        warnings.warn(f"filling factors of {p1} ({float(m1.filling):g}) and {p2} ({f2:g}) do not add up to 1; "
                      f"model 2's f2 = {f2:g} is used (f1 = {1 - f2:g})", stacklevel=3)
    if float(m2.stray) != float(m1.stray):
        warnings.warn(f"stray-light fractions differ ({float(m1.stray):g} % in {p1}, {float(m2.stray):g} % in "
                      f"{p2}); model 1's is used", stacklevel=3)
    return m1.with_columns(filling=1.0 - f2, stray=stray), m2.with_columns(filling=f2, stray=stray), p1, p2


def _regions_of(line_index: np.ndarray, offset: np.ndarray, blends: dict[int, tuple[int, ...]],
                lines: LineList, source: Path) -> WavelengthGrid:
    """A grid on the given samples: one region per contiguous run of a line index, its blends from the
    grid file (``blends``: main index → indices), else the line alone."""
    regs, offs = [], []
    k = 0
    n = line_index.size
    while k < n:
        j = k
        while j < n and line_index[j] == line_index[k]:
            j += 1
        idx = int(line_index[k])
        if not lines.has_index(idx):
            raise ValueError(f"{source}: line {idx} is not in the line list (indices {lines.indices})")
        off = np.asarray(offset[k:j], dtype=np.float64)
        if off.size > 1 and np.any(np.diff(off) <= 0):
            r = k + 2 + int(np.argmax(np.diff(off) <= 0))
            raise ValueError(f"{source}: the wavelengths of line {idx} must increase (row {r})")
        d = np.diff(off)
        step = float(d[0]) if off.size > 1 and np.allclose(d, d[0], rtol=0, atol=1e-3) else None
        regs.append(GridRegion(blends.get(idx, (idx,)), float(off[0]), step, float(off[-1]), off.size))
        offs.append(off)
        k = j
    return WavelengthGrid(regs, offs, lines)


def _stray(cfg: InversionConfig, grid: WavelengthGrid) -> np.ndarray | None:
    """The stray-light profile (4, nλ) on ``grid``; ValueError naming the file and the first wavelength
    that differs from the grid by more than 1 mÅ (or a different line / number of points)."""
    p = _file(cfg, "stray_file")
    if p is None:
        return None
    prof = read_sir_profiles(p)
    if prof.offset_mA.size != grid.nwav:
        raise ValueError(f"stray-light file {p}: {prof.offset_mA.size} wavelength points, the profiles/grid have "
                         f"{grid.nwav}")
    bad = (np.abs(prof.offset_mA - grid.offset_mA) > 1.0) | (prof.line_index != grid.line_index)
    if np.any(bad):
        j = int(np.argmax(bad))
        raise ValueError(f"stray-light file {p}: row {j + 1} is line {prof.line_index[j]} at "
                         f"{prof.offset_mA[j]:.4f} mÅ, the grid has line {grid.line_index[j]} at "
                         f"{grid.offset_mA[j]:.4f} mÅ (more than 1 mÅ apart)")
    if not np.all(np.isfinite(prof.stokes)):
        raise ValueError(f"stray-light file {p}: NaN or infinite values")
    return prof.stokes


@dataclass
class _Inputs:
    cfg: InversionConfig
    lines: LineList
    psf: Path | None
    abundances: Path | None
    departures: Path | None


def _common(cfg: InversionConfig) -> _Inputs:
    lp = _file(cfg, "lines_file")
    lines = LineList.read_sir(lp) if lp is not None else default_lines()
    ap = _file(cfg, "abundances_file")
    if ap is not None:
        from ..io.sir import read_abundances
        read_abundances(ap)  # validate now: the error names the file
    return _Inputs(cfg, lines, _file(cfg, "psf_file"), ap, _file(cfg, "nlte_file"))


def _grid_blends(cfg: InversionConfig, lines: LineList) -> tuple[WavelengthGrid | None, dict[int, tuple[int, ...]]]:
    gp = _file(cfg, "grid_file")
    if gp is None:
        return None, {}
    g = WavelengthGrid.read_sir(gp, lines)
    return g, {r.main: r.indices for r in g.regions}


def _check_components(cfg: InversionConfig, has2: bool, has_stray: bool) -> None:
    """Fields that need a second model or a stray-light file (ValueError naming the field and value)."""
    for c in range(1, cfg.cycles + 1):
        if not has2:
            n2 = cfg.nodes_for(c, 2)
            used = {p: v for p, v in n2.items() if v != 0}
            if used:
                p, v = next(iter(used.items()))
                line = 23 + NODE_PARAMETERS.index(p)
                raise ValueError(f"control line {line} (nodes of model 2, {p}) = {v} in cycle {c}, but no model 2 is "
                                 "given (line 9)")
            if cfg.value("invert_filling", c) == 1:
                raise ValueError(f"control line 31 (Invert filling factor) = 1 in cycle {c} needs a model 2 (line 9)")
        if not has_stray and cfg.value("invert_stray", c) == 1:
            raise ValueError(f"control line 32 (Invert stray light factor) = 1 in cycle {c} needs a stray-light "
                             "file (line 3)")


def _refused_by_invert_pixel(cfg: InversionConfig, control: Path) -> None:
    """invert_pixel's own list of settings it cannot honour, checked for every cycle before the first one runs."""
    from ..physics.inversion import refuse_unsupported

    try:
        refuse_unsupported(cfg, two_components=bool(cfg.model2))
    except ValueError as exc:
        raise ValueError(f"{control}: {exc}") from None


# ------------------------------------------------------------------------------------------ modes
#: invert_pixel options of SIR's own rules (its stopping criteria, a new Jacobian after every accepted step).
SIR_RULES = {"rtol": 0.0, "jacobian_reuse": 0}


def run_sir(path: PathLike, *, sir_rules: bool = True, workers: int | None = None, progress: bool = False) -> SirRun:
    """Run a SIR control file as SIR would (see the module docstring for the files written).

    Parameters
    ----------
    path : str or path-like
        The control file (42 lines). Relative file names in it refer to its folder.
    sir_rules : bool
        One-pixel inversions with SIR's stopping rules and a new Jacobian after every accepted step
        (:data:`SIR_RULES`, default); False: :func:`pyinv.invert_pixel`'s defaults (its extra stopping rule
        and Broyden updates: fewer syntheses, slightly higher χ² on some pixels). Map mode always uses
        :func:`pyinv.invert`'s defaults.
    workers : int, optional
        Map mode only: worker processes of :func:`pyinv.invert` (default: usable cores).
    progress : bool
        Map mode only: progress bar.

    Returns
    -------
    SirRun

    Raises
    ------
    ValueError
        A field pyinv does not honour (named with its value), a missing or malformed input file, stray-light
        wavelengths more than 1 mÅ from the grid, a header f₂ / α out of range, model 2 on another log τ grid.
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"control file {path} not found")
    text = path.read_text()
    cycles = _cycles_of(text, str(path))
    if cycles < -1:
        raise ValueError(f"control line 1 (Number of cycles) = {cycles}: node-compressed response functions "
                         "(cycles < -1) are not supported; -1 writes them at every depth point")
    cfg = InversionConfig.from_sir_text(text if cycles >= 1 else _with_cycles(text, 1), source=str(path),
                                        base_dir=str(path.resolve().parent))
    inp = _common(cfg)
    if cycles == 0:
        return _synthesis(inp, rf=False, control=path)
    if cycles == -1:
        return _synthesis(inp, rf=True, control=path)
    obs = _file(cfg, "observed", required=True)
    if obs.suffix.lower() in _FITS_SUFFIXES:
        return _map(inp, obs, control=path, workers=workers, progress=progress)
    return _inversion(inp, obs, control=path, options=SIR_RULES if sir_rules else {})


def _synthesis_grid(inp: _Inputs) -> WavelengthGrid:
    cfg = inp.cfg
    grid, _ = _grid_blends(cfg, inp.lines)
    if grid is not None:
        return grid
    sp = _file(cfg, "stray_file")
    if sp is None:
        raise ValueError("control line 5 (Wavelength grid file) is empty; a synthesis needs it (or a stray-light "
                         "file, line 3, whose wavelengths are then used)")
    prof = read_sir_profiles(sp)
    return _regions_of(prof.line_index, prof.offset_mA, {}, inp.lines, sp)


def _synthesis(inp: _Inputs, rf: bool, control: Path) -> SirRun:
    from ..physics.response import response_functions
    from ..physics.synthesis import synthesize

    cfg = inp.cfg
    mode = "rf" if rf else "synthesis"
    m1, m2, p1, p2 = _models(cfg, mode)
    grid = _synthesis_grid(inp)
    stray = _stray(cfg, grid)
    if rf:
        _check_components(cfg, m2 is not None, stray is not None)
    out_path = cfg.resolve("observed")
    if out_path is None:
        raise ValueError("control line 2 (Observed profiles) is empty; in synthesis / RF mode it names the output "
                         "profile file")
    mix: dict[str, Any] = {}
    if m2 is not None:
        mix.update(atmos2=m2, filling=float(m2.filling))
    if stray is not None:
        mix.update(stray_profile=stray, stray=float(m1.stray))
    opts = dict(mu=abs(cfg.mu), psf=inp.psf, abundances=inp.abundances, departures=inp.departures)
    run = SirRun(mode=mode)
    if not rf:
        stokes = synthesize(m1, inp.lines, grid, **opts, **mix)
    else:
        r = response_functions(m1, inp.lines, grid, **opts, **mix)
        stokes = r["stokes"]
        run.rf = _write_rfs(cfg, r, m1, m2, p1, p2, run)
    # negative Q/U/V weights: that column is X/I (spec-forward §2.2 lines 10-13, §9.5)
    w = cfg.weights_for(1)
    out = np.array(stokes, copy=True)
    for s in (1, 2, 3):
        if w[s] < 0:
            out[s] = out[s] / out[0]
    write_sir_profiles(out_path, grid.line_index, grid.offset_mA, out)
    run.outputs.insert(0, out_path)
    run.stokes = out
    log = control.with_suffix(".log")
    log.write_text(f"pyinv sir: {mode} of {p1}" + (f" + {p2}" if p2 else "") +
                   f" on {grid.nwav} wavelengths -> {out_path}\n" +
                   "".join(f"  {p}\n" for p in run.outputs[1:]))
    run.outputs.append(log)
    return run


def _write_rfs(cfg: InversionConfig, r: dict, m1: Atmosphere, m2: Atmosphere | None, p1: Path,
               p2: Path | None, run: SirRun) -> dict:
    """RF files of every slot with a non-zero node entry (cycle 1's), SIR's units: per K, dyn cm⁻², cm/s,
    G, cm/s, radian (γ, φ), km/s (macro); filling factor per unit f₂, stray light per percent."""
    nw = r["stokes"].shape[-1]
    written: dict[str, np.ndarray] = {}

    def stokes_cols(a: np.ndarray, magnetic: bool) -> np.ndarray:
        a = np.asarray(a)
        if a.ndim == 2:
            a = a[None]
        return (a[:, 0, :] if not magnetic else a.reshape(a.shape[0], 4 * nw)).copy()

    magnetic = bool(np.any(m1.B != 0)) or (m2 is not None and bool(np.any(m2.B != 0))) or bool(
        np.any(r["stokes"][1:] != 0))
    for comp, (model, base_path, sfx) in enumerate(((m1, p1, ""), (m2, p2, "_2")), start=1):
        if model is None:
            continue
        base = base_path.parent / (base_path.name[: -len(base_path.suffix)] if base_path.suffix else base_path.name)
        nodes = cfg.nodes_for(1, comp)
        for p in NODE_PARAMETERS:
            if nodes.get(p, 0) == 0:
                continue
            if p == "macro":
                a = r["macro" + sfx]
            else:
                key = p
                if p == "T" and nodes.get("Pe", 0) == 0 and ("T_he" + sfx) in r:
                    key = "T_he"  # P_e follows hydrostatic equilibrium (spec-forward §10)
                a = r[key + sfx]
                if p in ("gamma", "phi"):
                    a = a * (180.0 / math.pi)  # per degree -> per radian
            arr = stokes_cols(a, magnetic)
            f = Path(str(base) + RF_SUFFIX[p])
            write_sir_rf(f, arr)
            written[f.name] = arr
            run.outputs.append(f)
    base1 = p1.parent / (p1.name[: -len(p1.suffix)] if p1.suffix else p1.name)
    if cfg.value("invert_filling", 1) == 1 and "filling" in r:
        arr = stokes_cols(r["filling"], magnetic)
        f = Path(str(base1) + RF_SUFFIX["filling"])
        write_sir_rf(f, arr)
        written[f.name] = arr
        run.outputs.append(f)
    if cfg.value("invert_stray", 1) == 1:
        if "stray" not in r:
            raise ValueError("control line 32 (Invert stray light factor) = 1 needs a stray-light file (line 3)")
        arr = stokes_cols(r["stray"], magnetic)
        f = Path(str(base1) + RF_SUFFIX["stray"])
        write_sir_rf(f, arr)
        written[f.name] = arr
        run.outputs.append(f)
    if cfg.value("invert_filling", 1) == 1 and "filling" not in r:
        raise ValueError("control line 31 (Invert filling factor) = 1 needs a model 2 (line 9)")
    return written


def _zero_header(e: AtmosphereErrors | None, like: Atmosphere) -> AtmosphereErrors:
    if e is None:
        z = np.zeros_like(np.asarray(like.log_tau))
        e = AtmosphereErrors(log_tau=like.log_tau, T=z, Pe=z, vmic=z, B=z, vlos=z, gamma=z, phi=z)
    return e.with_columns(macro=0.0, filling=0.0, stray=0.0)


def _inversion(inp: _Inputs, obs_path: Path, control: Path, options: dict) -> SirRun:
    from ..physics.inversion import invert_pixel

    cfg = inp.cfg
    m1, m2, p1, p2 = _models(cfg, "inversion")
    prof = read_sir_profiles(obs_path)
    _, blends = _grid_blends(cfg, inp.lines)
    grid = _regions_of(prof.line_index, prof.offset_mA, blends, inp.lines, obs_path)
    stray = _stray(cfg, grid)
    _check_components(cfg, m2 is not None, stray is not None)
    _refused_by_invert_pixel(cfg, control)
    cfg.check_nodes(m1.ndep)
    base1, off1 = output_base(p1)
    base2, off2 = output_base(p2) if p2 is not None else (None, 0)
    chi_path = control.with_suffix(".chi")
    log_path = control.with_suffix(".log")
    chi_path.write_text("")
    run = SirRun(mode="inversion")
    guess, guess2 = m1, m2
    f2 = float(m2.filling) if m2 is not None else None
    alpha = float(m1.stray) if stray is not None else None
    log_lines = [f"pyinv sir: inversion of {obs_path} from {p1}" + (f" + {p2}" if p2 else "") +
                 f", {cfg.cycles} cycle(s)", " cycle  iterations   s/n          chi2         status"]
    rows = []
    for c in range(1, cfg.cycles + 1):
        kw: dict[str, Any] = {}
        if guess2 is not None:
            kw.update(guess2=guess2, filling=f2)
        if stray is not None:
            kw.update(stray_profile=stray, stray=alpha)
        try:
            res = invert_pixel(prof.stokes, guess, inp.lines, grid, cfg.single_cycle(c), psf=inp.psf,
                               abundances=inp.abundances, departures=inp.departures, magnetic_start="guess",
                               **options, **kw)   # SIR starts from the guess file
        except ValueError as exc:  # a setting invert_pixel refuses: name the control file and the cycle
            raise ValueError(f"{control}, cycle {c}: {exc}") from None
        run.results.append(res)
        if not res.ok and res.chi2.size == 0:
            raise ValueError(f"{control}: cycle {c} could not start: {res.message} (engine status {res.status})")
        if not res.ok:
            warnings.warn(f"cycle {c}: {res.message} (status {res.status}); the best model reached is written",
                          stacklevel=2)
        atm = res.atmosphere
        n1 = off1 + c
        for f, writer in ((Path(f"{base1}_{n1}.mod"), lambda f: write_sir_model(f, atm)),
                          (Path(f"{base1}_{n1}.per"),
                           lambda f: write_sir_profiles(f, grid.line_index, grid.offset_mA, res.fit)),
                          (Path(f"{base1}_{n1}.err"), lambda f: write_sir_model(f, _zero_header(res.errors, atm)))):
            writer(f)
            run.outputs.append(f)
        if guess2 is not None:
            atm2 = getattr(res, "atmosphere2", None)
            if atm2 is None:
                raise ValueError("invert_pixel returned no component-2 atmosphere (needs pyinv with two-component "
                                 "inversions, issue 13)")
            n2 = off2 + c
            write_sir_model(Path(f"{base2}_{n2}.mod"), atm2)
            write_sir_model(Path(f"{base2}_{n2}.err"), _zero_header(getattr(res, "errors2", None), atm2))
            run.outputs += [Path(f"{base2}_{n2}.mod"), Path(f"{base2}_{n2}.err")]
            guess2 = atm2
            f2 = getattr(res, "filling2", None) or float(atm2.filling)
        if stray is not None:
            sp = getattr(res, "stray", None)
            alpha = float(sp) if sp is not None else float(atm.stray)
        if res.chi2.size:
            row = (float(res.snr[-1]), float(res.chi2[-1]))
        else:  # the cycle made no trial (engine failure before the first one)
            row = (float("nan"), float("nan"))
        rows.append(row)
        write_sir_chi(chi_path, np.array([row]), append=True)
        log_lines.append(f" {c:5d}  {int(res.iterations[-1]) if res.iterations.size else 0:10d}  {row[0]:11.5g}  "
                         f"{row[1]:11.5g}  {res.status} ({res.message})")
        guess = atm
    log_path.write_text("\n".join(log_lines) + "\n")
    run.outputs += [chi_path, log_path]
    run.chi = np.array(rows)
    return run


def _map(inp: _Inputs, obs_path: Path, control: Path, workers: int | None, progress: bool) -> SirRun:
    from ..io.fits import read_stokes_cube
    from ..maps.inversion import invert

    cfg = inp.cfg
    m1, m2, p1, p2 = _models(cfg, "inversion")
    _check_components(cfg, m2 is not None, bool(cfg.stray_file))
    _refused_by_invert_pixel(cfg, control)
    grid, _ = _grid_blends(cfg, inp.lines)
    if grid is None:
        raise ValueError("control line 5 (Wavelength grid file) is empty; a FITS map needs the grid of its "
                         "wavelength axis")
    cube, wl = read_stokes_cube(obs_path)
    if cube.ndim == 2:
        cube = cube[None, None]
    elif cube.ndim == 3:
        cube = cube[None]
    if cube.shape[-1] != grid.nwav:
        raise ValueError(f"{obs_path}: {cube.shape[-1]} wavelengths, the grid file has {grid.nwav}")
    if wl is not None:
        dev = np.abs(np.asarray(wl) - grid.wavelength) * 1e3
        if np.any(dev > 1.0):
            j = int(np.argmax(dev > 1.0))
            raise ValueError(f"{obs_path}: wavelength {j} is {wl[j]:.4f} Å, the grid file has "
                             f"{grid.wavelength[j]:.4f} Å (more than 1 mÅ apart)")
    # model 2 and the stray-light file (config.stray_file) with SIR's header rules: f2 from model 2's header,
    # alpha from model 1's
    res = invert(cube, inp.lines, grid, cfg, guess=m1, guess2=m2, psf=inp.psf, abundances=inp.abundances,
                 workers=workers, progress=progress)
    base1, off1 = output_base(p1)
    out = Path(f"{base1}_{off1 + cfg.cycles}.fits")
    res.to_fits(out, overwrite=True)
    return SirRun(mode="map", outputs=[out], results=[res])
