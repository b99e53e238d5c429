"""The engine's golden outputs (issue 9): profiles, response functions and inversions computed through
the public API on the SIR reference sets of ../shared/reference.

``compute(reference_dir)`` returns a flat dict of float64 arrays. The committed file
``tests/data/golden_engine_v1.npz`` was written by the last commit before the engine restructure
(``python tests/golden_cases.py --write tests/data/golden_engine_v1.npz`` run with that commit's code and
engine); ``tests/test_golden.py`` recomputes the same dict with the current engine and compares.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

SYNTH_FILES = ("synth_hinode_unsold", "synth_hinode", "synth_hinode_mu077_psf", "synth_gris", "synth_fe5250")
RF_MODEL = 0
INVERT_PIXELS = (0, 3, 11)


def compute(reference_dir: Path) -> dict[str, np.ndarray]:
    import pyinv
    from pyinv.io import read_abundances

    ref = Path(reference_dir)
    lines = pyinv.LineList.read_sir(ref / "LINES_REF")
    ab = read_abundances(ref / "THEVENIN")
    out: dict[str, np.ndarray] = {}
    for name in SYNTH_FILES:
        d = np.load(ref / f"{name}.npz")
        grid = pyinv.WavelengthGrid.from_regions([tuple(r) for r in json.loads(str(d["regions"]))], lines)
        atm = pyinv.Atmosphere.from_array(d["models"], macro=d["macro"])
        psf = ref / str(d["psf"]) if str(d["psf"]) else None
        cap = name == "synth_gris"
        for voigt in (True, False):
            s = pyinv.synthesize(atm, lines, grid, mu=float(d["mu"]), psf=psf, abundances=ab, damping_cap=cap,
                                 exact_voigt=voigt)
            out[f"synth/{name}/{'accurate' if voigt else 'sir'}"] = np.asarray(s)
        # the non-magnetic path (scalar formal solution) on the first model
        m0 = pyinv.Atmosphere.from_array(d["models"][0], macro=float(d["macro"][0]))
        m0 = m0.with_columns(B=np.zeros(m0.ndep))
        out[f"synth/{name}/nonmagnetic"] = np.asarray(
            pyinv.synthesize(m0, lines, grid, mu=float(d["mu"]), psf=psf, abundances=ab, damping_cap=cap))

    d = np.load(ref / "rf_hinode.npz")
    grid = pyinv.WavelengthGrid.from_regions([tuple(r) for r in json.loads(str(d["regions"]))], lines)
    m = pyinv.Atmosphere.from_array(d["models"][RF_MODEL], macro=float(d["macro"][RF_MODEL]))
    rf = pyinv.response_functions(m, lines, grid, abundances=ab)
    for k, v in rf.items():
        a = np.asarray(v, dtype=np.float64)
        if a.dtype.kind == "f":
            out[f"rf/{k}"] = a

    from pyinv.config import InversionConfig
    d = np.load(ref / "invert_hinode.npz")
    grid = pyinv.WavelengthGrid.from_regions([tuple(r) for r in json.loads(str(d["regions"]))], lines)
    cfg = InversionConfig.from_sir_text(str(d["sir_trol"]))
    guess = pyinv.Atmosphere.from_array(d["guess_model"], macro=float(d["guess_macro"]))
    import inspect
    # the pre-v2 engine's settings: SIR's Jacobian rule (a new one after every accepted step) and rtol 1e-4
    kw = {"rtol": 1e-4}
    if "jacobian_reuse" in inspect.signature(pyinv.invert_pixel).parameters:
        kw["jacobian_reuse"] = 0
    params = inspect.signature(pyinv.invert_pixel).parameters
    if "rules" in params:      # issue 17: the golden inversions keep SIR's λ schedule with the two-small-gains stop
        kw["rules"] = "sir"
    if "rescue" in params:
        kw["rescue"] = False
    if "coarse" in params:     # issue 17: every cycle on the model's grid, as when the golden file was written
        kw["coarse"] = False
    for i in INVERT_PIXELS:
        r = pyinv.invert_pixel(d["observed"][i], guess, lines, grid, cfg, abundances=ab, **kw)
        a = r.atmosphere
        out[f"invert/{i}/fit"] = np.asarray(r.fit)
        out[f"invert/{i}/chi2"] = np.asarray(r.chi2, dtype=np.float64)
        out[f"invert/{i}/iterations"] = np.asarray(r.iterations, dtype=np.float64)
        out[f"invert/{i}/model"] = np.stack([np.asarray(getattr(a, c), dtype=np.float64) for c in
                                             ("T", "Pe", "vmic", "B", "vlos", "gamma", "phi", "z", "Pg", "rho")])
        out[f"invert/{i}/macro"] = np.asarray([float(a.macro)])
        out[f"invert/{i}/errors_T"] = np.asarray(r.errors.T, dtype=np.float64)
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--reference", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "reference")
    ap.add_argument("--write", type=Path, required=True)
    args = ap.parse_args(argv)
    out = compute(args.reference)
    np.savez_compressed(args.write, **out)
    print(f"wrote {len(out)} arrays to {args.write} ({args.write.stat().st_size / 1e6:.2f} MB)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
