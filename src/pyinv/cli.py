"""The ``pyinv`` command line.

``pyinv synth``   synthesise Stokes profiles of a model atmosphere (defaults: the packaged default
                  guess atmosphere, Fe I 6301.5/6302.5 Å on the Hinode SP sampling), write a SIR .per
                  file and a PNG quick look.
``pyinv info``    version, engine status and packaged data.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

__all__ = ["main"]


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


def _cmd_info(args: argparse.Namespace) -> int:
    import pyinv

    print(f"pyinv {pyinv.__version__}")
    try:
        pyinv.engine.api()
        print("engine: pyinv._engine loaded")
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


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="pyinv", description="SIR-equivalent Stokes synthesis and inversion")
    sub = p.add_subparsers(dest="command", required=True)

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
    s.set_defaults(func=_cmd_synth)

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
