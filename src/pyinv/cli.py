"""The ``pyinv`` command line.

``pyinv synth``   synthesise Stokes profiles of a model atmosphere (defaults: the packaged default
                  guess atmosphere, Fe I 6301.5/6302.5 Å on the Hinode SP sampling), write a SIR .per
                  file and a PNG quick look; ``--nlte rh|lightweaver`` for non-LTE.
``pyinv invert``  invert a Stokes cube (FITS) pixel by pixel (pyinv.invert): local process pool or a dask
                  scheduler, checkpoint/resume, result FITS with provenance; ``--nlte rh|lightweaver``
                  for a DeSIRe-style NLTE inversion.
``pyinv sir``     run a SIR control file as SIR would (pyinv.run_sir): inversion (one pixel, or a map
                  for a FITS cube), synthesis or response functions, outputs next to the control file.
``pyinv info``    version, engine status and packaged data.
``pyinv cnn``     the CNN of the assisted inversion (pyinv.cnn):
                  ``pyinv cnn list``   the catalogue of pretrained models;
                  ``pyinv cnn train``  a catalogue model from its recipe (``--recipe NAME``), or a model
                  trained on a map and its training-set inversion, or on generated maps;
                  ``pyinv cnn demo``   CNN-assisted inversion of a generated Hinode-SP-like map, end to end,
                  with figures.

Deprecated spellings, still accepted with a DeprecationWarning (issue 18): ``pyinv train`` (now
``pyinv cnn train``), ``pyinv demo`` (now ``pyinv cnn demo``) and ``pyinv synth --backend`` (now ``--nlte``,
the flag ``pyinv invert`` has; ``--backend lte`` is no ``--nlte``); in ``pyinv invert`` the quantities'
old names (:data:`pyinv.atmosphere.QUANTITY_ALIASES`): ``--filling2`` (now ``--filling``, f₂ of component 2),
``--stray-percent`` (now ``--stray``, α [%]) and ``--stray FILE|local`` (the profile, now ``--stray-profile``).
"""
from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path

import numpy as np

__all__ = ["main"]


def _deprecated(old: str, new: str) -> None:
    """An old spelling was used: say so on stderr (shown whatever the warning filters) and warn."""
    msg = f"'{old}' is deprecated; use '{new}'"
    print(f"pyinv: DeprecationWarning: {msg}", file=sys.stderr)
    warnings.warn(msg, DeprecationWarning, stacklevel=3)


class _RenamedFlag(argparse.Action):
    """A flag named after an old spelling of a quantity (``--filling2``, ``--stray-percent``): sets the
    canonical one's destination (:data:`pyinv.atmosphere.QUANTITY_ALIASES`), with a deprecation warning."""

    def __call__(self, parser, namespace, values, option_string=None):
        from .atmosphere import QUANTITY_ALIASES

        new = QUANTITY_ALIASES[option_string.lstrip("-").replace("-", "_")][0]
        _deprecated(f"pyinv invert {option_string}", f"pyinv invert --{new.replace('_', '-')}")
        setattr(namespace, new, values)


class _StrayFlag(argparse.Action):
    """``pyinv invert --stray``: α [%]; before issue 18 it took the stray-light profile (a SIR .per file or
    ``local``), which is still taken as ``--stray-profile`` with a deprecation warning."""

    def __call__(self, parser, namespace, values, option_string=None):
        try:
            setattr(namespace, self.dest, float(values))
        except ValueError:
            _deprecated(f"pyinv invert --stray {values}", f"pyinv invert --stray-profile {values}")
            namespace.stray_profile = values


class _BackendFlag(argparse.Action):
    """``pyinv synth --backend lte|rh|lightweaver``: the deprecated spelling of ``--nlte`` (``lte``: no NLTE)."""

    def __call__(self, parser, namespace, values, option_string=None):
        _deprecated(f"pyinv synth {option_string} {values}",
                    "pyinv synth" if values == "lte" else f"pyinv synth --nlte {values}")
        setattr(namespace, self.dest, None if values == "lte" else values)


def _load_model(spec: str):
    from . import models
    from .io.sir import read_sir_model

    path = Path(spec)
    if path.suffix in (".mod", ".err") or path.exists():
        return read_sir_model(path)
    try:
        return getattr(models, spec)()
    except AttributeError:
        raise SystemExit(
            f"pyinv synth: unknown model {spec!r}; give a SIR .mod file or one of {models.names()}"
        ) from None


def _cmd_synth(args: argparse.Namespace) -> int:
    from . import synthesize
    from .io.sir import read_abundances, read_psf, write_sir_profiles
    from .lines import LineList, WavelengthGrid
    from . import models
    from .defaults import default_lines

    if args.nlte:
        from .nlte.cli import synth_nlte
        return synth_nlte(args, _load_model)
    if args.atmospheres:
        return _synth_map(args)
    atmos = _load_model(args.model)
    if args.macro is not None:
        atmos = atmos.with_columns(macro=args.macro)
    lines = LineList.read_sir(args.lines) if args.lines else default_lines()
    if args.grid:
        grid = WavelengthGrid.read_sir(args.grid, lines)
    else:
        grid = models.hinode_grid(lines)
    abundances = read_abundances(args.abundances) if args.abundances else None
    psf = read_psf(args.psf) if args.psf else None
    t0 = time.perf_counter()
    stokes = synthesize(atmos, lines, grid, mu=args.mu, psf=psf, abundances=abundances)
    dt = time.perf_counter() - t0
    out = Path(args.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_sir_profiles(out, grid.line_index, grid.offset_mA, stokes)
    print(f"synthesised {grid.nwav} wavelengths x {atmos.ndep} depths in {dt * 1e3:.1f} ms -> {out}")
    for name, row in zip("IQUV", stokes):
        print(f"  {name}: min {row.min():+.5f}  max {row.max():+.5f}")
    if not args.no_plot:
        from .plots import plot_stokes

        png = out.with_suffix(".png")
        plot_stokes(grid, stokes, png, title=f"pyinv synth: {args.model}")
        print(f"  figure -> {png}")
    return 0


def _nlte_backend(name, lines, grid, args):
    """The NLTE backend of ``pyinv invert --nlte`` (None without it): the grid's lines that the backend's
    atoms carry are treated in NLTE (``--nlte-lines``: only those SIR indices), the others in LTE (a joint
    inversion, e.g. Fe I 6301/6302 in LTE with Ca II 8542 in NLTE)."""
    if not name:
        if getattr(args, "nlte_lines", None):
            raise SystemExit("pyinv invert: --nlte-lines needs --nlte rh|lightweaver")
        return None
    from . import nlte

    used = sorted({k for r in grid.regions for k in r.indices})
    wanted = used
    if getattr(args, "nlte_lines", None):
        try:
            wanted = sorted({int(k) for k in str(args.nlte_lines).split(",") if k.strip()})
        except ValueError:
            raise SystemExit(f"pyinv invert --nlte-lines {args.nlte_lines!r}: give SIR line indices, e.g. 8 or "
                             "8,9") from None
        if not set(wanted) <= set(used):
            raise SystemExit(f"pyinv invert --nlte-lines: lines {sorted(set(wanted) - set(used))} are not in the "
                             f"grid (its lines: {used})")
    lm = nlte.level_map(lines, wanted)
    if not lm:
        raise SystemExit(f"pyinv invert --nlte {name}: none of the lines {wanted} has a known NLTE level map "
                         f"({sorted(nlte.KNOWN_LEVELS)})")
    if getattr(args, "nlte_lines", None) and len(lm) < len(wanted):
        missing = sorted(set(wanted) - {ln.index for ln in lm})
        raise SystemExit(f"pyinv invert --nlte-lines: lines {missing} have no known NLTE level map "
                         f"({sorted(nlte.KNOWN_LEVELS)})")
    options = {"lte": True}
    if name == "rh" and getattr(args, "rh_dir", None):
        options["rh_dir"] = args.rh_dir
    lte_lines = [k for k in used if k not in {ln.index for ln in lm}]
    print(f"pyinv invert --nlte {name}: NLTE lines " + ", ".join(f"{ln.index} ({ln.atom} {ln.lower}-{ln.upper})"
                                                              for ln in lm)
          + (f"; LTE lines {', '.join(map(str, lte_lines))}" if lte_lines else ""))
    refine = getattr(args, "nlte_refine", "auto")
    emulated = getattr(args, "nlte_departures", "backend") == "emulated"
    if refine not in ("none", "auto") and not emulated:
        raise SystemExit(f"pyinv invert --nlte-refine {refine}: needs --nlte-departures emulated (the refinement "
                         "makes b follow T through the emulator)")
    reanchor = getattr(args, "nlte_reanchor", None)
    if reanchor is not None and not emulated:
        raise SystemExit(f"pyinv invert --nlte-reanchor {reanchor}: needs --nlte-departures emulated")
    be = nlte.make_backend(name, lm, **options)
    if emulated:
        from .nlte.desire import REANCHOR, NlteSolver
        ra = REANCHOR if reanchor is None else (None if reanchor == "none" else _reanchor_kelvin(reanchor))
        return NlteSolver(be, departures="emulated", t_refine=None if refine == "none" else refine,  # auto: map
                          reanchor=ra)
    return be


def _reanchor_kelvin(text: str) -> float:
    """``--nlte-reanchor K``: a T move [K] >= 0."""
    try:
        k = float(text)
    except ValueError:
        k = float("nan")
    if not k >= 0:
        raise SystemExit(f"pyinv invert --nlte-reanchor: a T move in K >= 0 or 'none', got {text!r}")
    return k


def _cmd_invert(args: argparse.Namespace) -> int:
    from . import invert
    from .config import InversionConfig
    from .defaults import default_lines
    from .lines import LineList, WavelengthGrid
    from . import models

    cfg = InversionConfig.read_sir(args.config) if args.config else InversionConfig(
        cycles=1, nodes={"T": 2, "vlos": 1, "B": 1, "gamma": 1, "phi": 1}, weights=(1, 4, 4, 2))

    def cfg_file(flag, field):
        if flag:
            return flag
        p = cfg.resolve(field) if args.config else None
        return str(p) if p is not None and p.exists() else None

    lines_f, grid_f = cfg_file(args.lines, "lines_file"), cfg_file(args.grid, "grid_file")
    lines = LineList.read_sir(lines_f) if lines_f else default_lines()
    grid = WavelengthGrid.read_sir(grid_f, lines) if grid_f else models.hinode_grid(lines)
    guess = args.guess
    if guess is None and args.init == "single" and args.config:
        guess = cfg_file(None, "model1")  # the control file's initial model 1
    if args.init == "multistart" and guess is not None and guess.isdigit():
        guess = int(guess)
    mask = None
    if args.mask:
        mask = np.load(args.mask) if args.mask.endswith(".npy") else __import__(
            "astropy.io.fits", fromlist=["getdata"]).getdata(args.mask)
        mask = np.asarray(mask) != 0
    sigma = args.sigma
    executor = None
    client = None
    if args.dask:
        from distributed import Client

        client = executor = Client(args.dask)
    init = args.init
    if args.init == "cnn":
        from .cnn import CNNInit

        if not args.config:
            cfg = None  # pyinv.cnn.assisted_config(): one cycle, T 5, v 3, B 3, the rest 1
        init = CNNInit(guess, fallback=not args.no_fallback, resample=args.resample)
        guess = None
    guess2 = args.guess2 or cfg_file(None, "model2") if cfg is not None else args.guess2
    profile = args.stray_profile
    if profile is not None and profile != "local" and not Path(profile).exists():
        raise ValueError(f"--stray-profile {profile!r}: no such file (a SIR .per profile, or 'local')")
    mixing = {}
    if guess2 is not None:
        mixing.update(guess2=guess2, filling=args.filling)
    elif args.filling is not None:
        raise ValueError("--filling needs a second component (--guess2 or the control file's model 2)")
    if profile is not None:
        mixing["stray_profile"] = profile
        if profile == "local":
            mixing["stray_window"] = args.stray_window
    if args.stray is not None:
        mixing["stray"] = args.stray
    try:
        res = invert(args.cube, lines, grid, cfg, init=init, guess=guess, mask=mask, sigma=sigma, mu=args.mu,
                     psf=cfg_file(args.psf, "psf_file"), abundances=cfg_file(args.abundances, "abundances_file"),
                     axes=args.axes, executor=executor, workers=args.workers, chunk=args.chunk,
                     checkpoint=args.checkpoint, progress=not args.no_progress, time_limit=args.time_limit,
                     check=not args.no_check, nlte=_nlte_backend(args.nlte, lines, grid, args),
                     magnetic_start=args.magnetic_start, **mixing)
    finally:
        if client is not None:
            client.close()
    out = Path(args.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    res.to_fits(out, overwrite=True)
    p = res.provenance
    print(f"inverted {p['computed']} pixels in {p['seconds']:.1f} s ({p.get('executor')}, workers={p.get('workers')}) "
          f"-> {out}")
    for line in res.describe().splitlines():
        print("  " + line)
    if args.plot:
        res.plot(out.with_suffix(".png"))
        print(f"  figure -> {out.with_suffix('.png')}")
    return 0


def _synth_map(args: argparse.Namespace) -> int:
    """``pyinv synth --atmospheres RESULT.fits|ATM.npy -o CUBE.fits``: the forward direction of a map."""
    from . import synthesize
    from .atmosphere import Atmosphere
    from .defaults import default_lines
    from .io.fits import write_stokes_cube
    from .lines import LineList, WavelengthGrid
    from .maps.result import InversionResult
    from . import models

    src = args.atmospheres
    if src.endswith(".npy"):
        atm = np.load(src)
        macro = np.full(atm.shape[:2], args.macro if args.macro is not None else 0.0)
    else:
        res = InversionResult.from_fits(src)
        atm, macro = np.asarray(res.atmospheres), np.asarray(res.macro)
        if args.macro is not None:
            macro = np.full(atm.shape[:2], args.macro)
    if atm.ndim != 4 or atm.shape[-1] not in (8, 11):
        raise ValueError(f"{src}: expected atmospheres (ny, nx, ndep, 8|11), got {atm.shape}")
    lines = LineList.read_sir(args.lines) if args.lines else default_lines()
    grid = WavelengthGrid.read_sir(args.grid, lines) if args.grid else models.hinode_grid(lines)
    ny, nx = atm.shape[:2]
    ok = np.isfinite(atm).all(axis=(2, 3)) & np.isfinite(macro)
    cube = np.full((ny, nx, 4, grid.nwav), np.nan)
    if ok.any():
        stack = Atmosphere.from_array(atm[ok], macro=macro[ok])
        cube[ok] = synthesize(stack, lines, grid, mu=args.mu, psf=args.psf, abundances=args.abundances)
    out = Path(args.output if args.output != "pyinv_synth.per" else "pyinv_synth.fits")
    write_stokes_cube(out, cube, grid.wavelength, overwrite=True)
    print(f"synthesised {int(ok.sum())} of {ny * nx} pixels -> {out}")
    return 0


def _cmd_sir(args: argparse.Namespace) -> int:
    from .sir.dropin import run_sir

    run = run_sir(args.control, sir_rules=not args.pyinv_rules, workers=args.workers,
                  progress=not args.no_progress)
    print(f"pyinv sir: {run.mode} of {args.control}")
    if run.chi is not None:
        for c, (sn, chi2) in enumerate(run.chi, start=1):
            print(f"  cycle {c}: s/n {sn:.5g}  chi2 {chi2:.7g}")
    for f in run.outputs:
        print(f"  -> {f}")
    return 0


def _cmd_info(args: argparse.Namespace) -> int:
    import pyinv

    print(f"pyinv {pyinv.__version__}")
    try:
        pyinv.engine.api()
        isa = pyinv.engine.isa()
        print(f"engine: loaded, {isa} build ({pyinv.engine._ISA_MODULES[isa]}; PYINV_ENGINE_ISA overrides)")
    except ImportError as exc:
        print(f"engine: NOT available ({exc})")
        return 1
    from . import models
    from .defaults import default_lines

    print("packaged atmospheres:", ", ".join(models.names()))
    lines = default_lines()
    for line in lines:
        print(f"  line {line.index:4d}: {line.element:2s} {line.ion} {line.wavelength:11.4f} A  g_eff={line.g_eff:.3f}")
    return 0


#: ``pyinv cnn train`` without --recipe (a model of your own): the defaults of the options it shares with the
#: recipe mode, or that only it has.
_OWN_MODEL_DEFAULTS = {"size": 32, "seed": 101, "mu": 1.0, "epochs": 200, "batch": 64, "patience": 30,
                       "output": "pyinv_cnn.npz"}
_OWN_MODEL_ONLY = ("cube", "result", "generate", "size", "seed", "mu", "patience", "from_model", "checkpoint")
_RECIPE_ONLY = ("pixels", "learning_rate", "lr_decay", "workdir", "threads")


def _flags(names) -> str:
    return ", ".join(n if n == "cube" else "--" + n.replace("_", "-") for n in names)


def _cmd_cnn_train(args: argparse.Namespace) -> int:
    """``pyinv cnn train``: with --recipe a catalogue model (cnn.commands.cmd_cnn_train), else a model trained
    on a cube or on generated maps (cnn.commands.cmd_train)."""
    from .cnn import commands

    recipe = getattr(args, "recipe", None)
    wrong = [k for k in (_OWN_MODEL_ONLY if recipe else _RECIPE_ONLY) if getattr(args, k, None) is not None]
    if wrong and recipe:
        raise ValueError(f"--recipe makes a catalogue model from its recipe; {_flags(wrong)} train on a cube or "
                         "generated maps instead")
    if wrong:
        raise ValueError(f"{_flags(wrong)}: options of --recipe (a catalogue model) only")
    if recipe:
        for k in ("workers", "threads"):
            if getattr(args, k) is None:
                setattr(args, k, 1)
        return commands.cmd_cnn_train(args)
    if not (args.cube or args.generate):
        raise ValueError(("give --recipe NAME (a catalogue model), " if hasattr(args, "recipe") else "give ")
                         + "a cube FITS (with --result or not) or --generate N")
    for k, v in _OWN_MODEL_DEFAULTS.items():
        if getattr(args, k, None) is None:
            setattr(args, k, v)
    return commands.cmd_train(args)


def _cmd_cnn_demo(args: argparse.Namespace) -> int:
    from .cnn.commands import cmd_demo
    return cmd_demo(args)


def _cmd_cnn_list(args: argparse.Namespace) -> int:
    from .cnn.commands import cmd_cnn_list
    return cmd_cnn_list(args)


def _cmd_train_deprecated(args: argparse.Namespace) -> int:
    _deprecated("pyinv train", "pyinv cnn train")
    return _cmd_cnn_train(args)


def _cmd_demo_deprecated(args: argparse.Namespace) -> int:
    _deprecated("pyinv demo", "pyinv cnn demo")
    return _cmd_cnn_demo(args)


def _add_cnn_train_args(t: argparse.ArgumentParser, recipe: bool = True) -> None:
    """The options of ``pyinv cnn train`` (``recipe=False``: those of the deprecated ``pyinv train``)."""
    d = _OWN_MODEL_DEFAULTS
    if recipe:
        t.add_argument("--recipe", help="make this catalogue model from its seeded recipe (pyinv cnn list); "
                                        "otherwise train on CUBE or --generate N")
    t.add_argument("cube", nargs="?", help="Stokes cube FITS to train on (omit with --recipe or --generate)")
    t.add_argument("--result", help="its inversion result FITS (default: invert it now with the training-set "
                                    "configuration)")
    t.add_argument("--generate", type=int, metavar="N", help="train on N generated maps instead of a cube")
    t.add_argument("--size", type=int, help=f"side of the generated maps [{d['size']}]")
    t.add_argument("--seed", type=int, help=f"seed of the first generated map (then +1, ...) [{d['seed']}]")
    t.add_argument("--mu", type=float, help=f"heliocentric cosine of the map [{d['mu']:g}]")
    t.add_argument("--from-model", help="fine-tune this model instead of starting from random weights")
    t.add_argument("--checkpoint", help="folder for resumable training-set inversions")
    t.add_argument("--patience", type=int, help=f"early-stopping patience in epochs (0 = off) [{d['patience']}]")
    if recipe:
        t.add_argument("--pixels", type=int, help="--recipe: training pixels [the recipe's]")
        t.add_argument("--learning-rate", type=float, help="--recipe: AdaMax learning rate [the recipe's]")
        t.add_argument("--lr-decay", choices=("cosine",), help="--recipe: learning-rate decay over the epochs: "
                                                               "'cosine' (to 1 %% of the rate) [none: constant]")
        t.add_argument("--workdir", help="--recipe: folder of the resumable training-set shards "
                                         "[~/.cache/pyinv/cnn/<recipe>_set]")
        t.add_argument("--threads", type=int, help="--recipe: torch threads while training [1]")
    t.add_argument("--epochs", type=int, help=f"epochs [the recipe's; else {d['epochs']}]")
    t.add_argument("--batch", type=int, help=f"batch size [the recipe's; else {d['batch']}]")
    t.add_argument("--workers", type=int, help="worker processes: the training-set inversions [usable cores]; "
                                               "--recipe: generating shards [1]")
    t.add_argument("--device", default="cpu", help="torch device for training [cpu]")
    t.add_argument("-o", "--output", help="model file [--recipe: ~/.cache/pyinv/cnn/<recipe>.npz, where "
                                          f"pretrained() finds it; else {d['output']}]")
    t.set_defaults(func=_cmd_cnn_train)


def _add_cnn_demo_args(d: argparse.ArgumentParser) -> None:
    d.add_argument("--size", type=int, default=24, help="map side in pixels [24]")
    d.add_argument("--seed", type=int, default=7, help="map seed [7]")
    d.add_argument("--mu", type=float, default=1.0, help="heliocentric cosine [1]")
    d.add_argument("--model", help="CNN model file [the packaged pretrained model]")
    d.add_argument("--workers", type=int, help="worker processes [usable cores]")
    d.add_argument("--standard", action="store_true", help="also run the standard 3-cycle inversion and compare")
    d.add_argument("-o", "--outdir", default="pyinv_demo", help="output folder [pyinv_demo]")
    d.set_defaults(func=_cmd_cnn_demo)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="pyinv", description="SIR-equivalent Stokes synthesis and inversion")
    # the deprecated spellings ``train`` and ``demo`` are accepted but not listed
    sub = p.add_subparsers(dest="command", required=True, metavar="{synth,invert,cnn,sir,info}")

    s = sub.add_parser("synth", help="synthesise the Stokes profiles of a model atmosphere")
    s.add_argument("--model", default="default_guess",
                   help="packaged model name (pyinv info lists them) or a SIR .mod file [default_guess]")
    s.add_argument("--lines", help="SIR LINES file [packaged line list]")
    s.add_argument("--grid", help="SIR wavelength-grid file [Hinode SP Fe I 6301.5/6302.5]")
    s.add_argument("--abundances", help="SIR abundance file [Asplund et al. 2009]")
    s.add_argument("--psf", help="spectral PSF file (offset mA, response)")
    s.add_argument("--mu", type=float, default=1.0, help="heliocentric cosine (hydrostatics only, as SIR)")
    s.add_argument("--macro", type=float, help="macroturbulence [km/s] (overrides the model's)")
    s.add_argument("-o", "--output", default="pyinv_synth.per", help="output SIR profile file")
    s.add_argument("--no-plot", action="store_true", help="do not write the PNG quick look")
    s.add_argument("--atmospheres", help="map mode: an inversion result FITS or an .npy (ny, nx, ndep, 11) of "
                                         "atmospheres; writes a Stokes cube FITS (-o, default pyinv_synth.fits)")
    s.add_argument("--nlte", choices=("rh", "lightweaver"), help="non-LTE synthesis with this backend (default "
                   "grid Ca II 8542 +-1.5 A) [none: LTE, pyinv's engine]")
    s.add_argument("--backend", dest="nlte", choices=("lte", "rh", "lightweaver"), action=_BackendFlag,
                   help="deprecated spelling of --nlte (lte: no --nlte)")
    s.add_argument("--rh-dir", help="RH 2 build for --nlte rh [$PYINV_RH_DIR]")
    s.add_argument("--workers", type=int, help="map mode: worker processes [all cores]")
    s.set_defaults(func=_cmd_synth)

    v = sub.add_parser("invert", help="invert a Stokes cube (FITS) pixel by pixel")
    v.add_argument("cube", help="FITS cube (axes from its PYAXES keyword or --axes), normalised to the HSRA continuum")
    v.add_argument("--config", help="SIR control file (.trol) [1 cycle: T 2, v, B, γ, φ 1 node]")
    v.add_argument("--lines", help="SIR LINES file [the control file's, else packaged]")
    v.add_argument("--grid", help="SIR wavelength-grid file [the control file's, else Hinode SP Fe I 6301/6302]")
    v.add_argument("--psf", help="spectral PSF file [the control file's]")
    v.add_argument("--abundances", help="SIR abundance file [the control file's, else packaged]")
    v.add_argument("--init", default="single", help="single | previous | multistart | cluster | cnn [single]")
    v.add_argument("--guess", help="guess for --init: .mod (single; default the control file's model 1, else the "
                                   "packaged quiet-Sun guess), result FITS (previous), N (multistart), "
                                   "model path or catalogue name (cnn; default hinode-sp-fe6301)")
    v.add_argument("--guess2", help="second component: .mod or an earlier two-component result FITS [the control "
                                    "file's model 2]")
    v.add_argument("--filling", type=float, help="filling factor f2 of component 2 [model 2's header]")
    v.add_argument("--filling2", dest="filling", type=float, action=_RenamedFlag, help=argparse.SUPPRESS)
    v.add_argument("--stray-profile", help="stray-light profile: SIR .per file, or 'local' (mean Stokes I of the "
                                           "surrounding pixels) [the control file's]")
    v.add_argument("--stray-window", type=int, default=7, help="--stray-profile local: window size in pixels, "
                                                                "odd [7]")
    v.add_argument("--stray", action=_StrayFlag, metavar="PERCENT",
                   help="stray-light fraction alpha [%%] [model 1's header]")
    v.add_argument("--stray-percent", dest="stray", type=float, action=_RenamedFlag, help=argparse.SUPPRESS)
    v.add_argument("--mask", help="boolean map (ny, nx) as .npy or FITS: nonzero = invert")
    v.add_argument("--sigma", type=float, help="noise of Stokes I in continuum units (replaces the S/N)")
    v.add_argument("--mu", type=float, help="heliocentric cosine [the control file's]")
    v.add_argument("--axes", default="yxsl", help="numpy axis order of the cube, permutation of yxsl")
    v.add_argument("--workers", type=int, help="local worker processes [usable cores]")
    v.add_argument("--chunk", type=int, help="pixels per task")
    v.add_argument("--dask", metavar="ADDRESS", help="dask scheduler address (tcp://host:8786) instead of a local pool")
    v.add_argument("--checkpoint", help="folder of the resumable result store")
    v.add_argument("--time-limit", type=float, help="seconds per pixel")
    v.add_argument("--no-check", action="store_true", help="invert a cube that does not look normalised: its "
                   "unusable pixels get status 102 instead of refusing the map")
    v.add_argument("--no-progress", action="store_true", help="no progress bar")
    v.add_argument("--plot", action="store_true", help="also write a PNG quick look")
    v.add_argument("--magnetic-start", choices=("guess", "profiles"), default=None,
                   help="B, gamma, phi of each pixel's start: the guess's, or read off the pixel's profiles "
                   "(centre of gravity / weak field; one component without stray light; --init single) "
                   "[pyinv.physics.inversion.MAGNETIC_START]")
    v.add_argument("--no-fallback", action="store_true", help="--init cnn: do not re-invert clearly worse pixels "
                                                             "from the standard start")
    v.add_argument("--resample", action="store_true", help="--init cnn: interpolate the cube onto the CNN model's "
                                                          "wavelength grid when they differ (warns by how much)")
    v.add_argument("--nlte", choices=("rh", "lightweaver"), help="DeSIRe-style NLTE inversion with this backend "
                   "(its NLTE lines: those of the grid it knows, e.g. Ca II 8542; rh needs PYINV_RH_DIR)")
    v.add_argument("--nlte-lines", metavar="I[,J...]", help="--nlte: SIR indices of the lines treated in NLTE, the "
                   "grid's other lines in LTE (e.g. 8: Ca II 8542 in NLTE with Fe I 6301/6302 in LTE) [every line "
                   "of the grid with a known level map]")
    v.add_argument("--rh-dir", help="RH 2 build for --nlte rh [$PYINV_RH_DIR]")
    v.add_argument("--nlte-departures", choices=("backend", "emulated"), default="backend",
                   help="--nlte: departure coefficients from the backend at every cycle (default) or from the "
                        "learned emulator, the backend called once per pixel to check (docs/nlte.md)")
    v.add_argument("--nlte-refine", choices=("auto", "none", "map"), default="auto",
                   help="--nlte-departures emulated: after the last cycle, the regularised T refinement (map: T every "
                        "0.3 dex under a smooth prior centred on the start model; no backend call; docs/nlte.md "
                        "'Regularised refinement'); none: the node result [auto: map with --nlte-departures "
                        "emulated when every region of the grid holds an NLTE line, none with LTE lines in the fit]")
    v.add_argument("--nlte-reanchor", default=None, metavar="K|none",
                   help="--nlte-departures emulated, with the refinement: where it moved T more than K (rms above "
                        "log tau -1) from the backend's model, one more backend call there and a second refinement; "
                        "none: never [220]")
    v.add_argument("-o", "--output", default="pyinv_result.fits", help="result FITS file")
    v.set_defaults(func=_cmd_invert)

    c = sub.add_parser("cnn", help="the CNN of the assisted inversion: list the catalogue, train a model, demo")
    csub = c.add_subparsers(dest="cnn_command", required=True)
    cl = csub.add_parser("list", help="the catalogue's models, where they are installed, their recipes")
    cl.set_defaults(func=_cmd_cnn_list)
    _add_cnn_train_args(csub.add_parser(
        "train", help="train a CNN: a catalogue model from its seeded recipe (--recipe NAME), or on a cube and its "
                      "training-set inversion, or on generated maps (--generate N); needs torch: pyinv[train]"))
    _add_cnn_demo_args(csub.add_parser(
        "demo", help="CNN-assisted inversion of a generated map, end to end, with figures"))
    # deprecated spellings (issue 18): pyinv train, pyinv demo
    old_train = sub.add_parser("train", description="deprecated: use pyinv cnn train")
    _add_cnn_train_args(old_train, recipe=False)
    old_train.set_defaults(func=_cmd_train_deprecated)
    old_demo = sub.add_parser("demo", description="deprecated: use pyinv cnn demo")
    _add_cnn_demo_args(old_demo)
    old_demo.set_defaults(func=_cmd_demo_deprecated)

    r = sub.add_parser("sir", help="run a SIR control file (.trol) as SIR would; outputs next to it")
    r.add_argument("control", help="SIR control file (42 lines); its file names are relative to its folder")
    r.add_argument("--pyinv-rules", action="store_true", help="one pixel: invert_pixel's default stopping rule and "
                   "Broyden Jacobian updates (faster) instead of SIR's rules")
    r.add_argument("--workers", type=int, help="map mode (FITS cube as observed profiles): worker processes")
    r.add_argument("--no-progress", action="store_true", help="map mode: no progress bar")
    r.set_defaults(func=_cmd_sir)

    i = sub.add_parser("info", help="version, engine and packaged data")
    i.set_defaults(func=_cmd_info)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except (ValueError, FileNotFoundError) as exc:
        print(f"pyinv {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
