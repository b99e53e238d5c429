"""Real data through init="cnn" (issue 12, reported, not gated): the 25 Hinode SP quiet-Sun spectra of
../shared/data/hinode_sp_5x5_globin (a 21.4319 mÅ sampling starting at 6300.883 Å, not the model's
21.549 mÅ grid) inverted twice with the same workers: the standard inversion (reference configuration:
3 cycles, T 1,3,5; v, B 1,3,3; γ, φ, vmic, macro 1; default guess) and the assisted one (packaged CNN,
``resample=True`` onto the model's grid for the CNN only — the inversion fits the observed wavelengths —,
one cycle with the last-cycle nodes, fallback on). Prints χ² per pixel side by side, the quiet-Sun
continuum estimate against the file's IC_HSRA, and the wall times; writes
benchmarks/results/real_hinode_cnn.json (with the commit).

    PYTHONPATH=<build>/site:src python benchmarks/real_hinode_cnn.py [--workers N]
"""
from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from pathlib import Path

import numpy as np

from _common import DATA, RESULTS, code_version, hinode_5x5_sample

PSF = DATA / "instrument_hinode_sp" / "HINODE_SP_ins_prof.psf"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--out", default=str(RESULTS / "real_hinode_cnn.json"))
    args = ap.parse_args()
    sample = hinode_5x5_sample()
    if sample is None:
        return 0
    raw, wl, ic = sample                                          # (x, y, 4, 112) counts
    import pyinv
    import pyinv.cnn as cnn
    from pyinv.lines import WavelengthGrid

    ic_est = cnn.quiet_sun_continuum(raw)
    print(f"quiet-Sun continuum: estimate {ic_est:.1f} DN, file's IC_HSRA {ic:.1f} DN ({ic_est / ic - 1:+.2%})")
    cube = raw / ic
    lines = pyinv.default_lines()
    grid = WavelengthGrid.from_wavelengths(wl, lines, indices="1,2")
    cfg = cnn.reference_config(snr=1.0 / 1.3e-3)
    kw = dict(psf=str(PSF) if PSF.is_file() else None, workers=args.workers, progress=False)
    t0 = time.perf_counter()
    rs = pyinv.invert(cube, lines, grid, cfg, **kw)
    t_std = time.perf_counter() - t0
    with warnings.catch_warnings(record=True) as wrec:
        warnings.simplefilter("always")
        t0 = time.perf_counter()
        ra = pyinv.invert(cube, lines, grid, cfg, init=cnn.CNNInit(resample=True), **kw)
        t_ass = time.perf_counter() - t0
    msgs = sorted({str(w.message) for w in wrec})
    for m in msgs:
        print("warning:", m)
    print(f"\n{'x':>2} {'y':>2} {'chi2 std':>9} {'chi2 cnn':>9} {'ratio':>6}")
    for x in range(cube.shape[0]):
        for y in range(cube.shape[1]):
            print(f"{x:2d} {y:2d} {rs.chi2[x, y]:9.3f} {ra.chi2[x, y]:9.3f} {ra.chi2[x, y] / rs.chi2[x, y]:6.3f}")
    ratio = ra.chi2 / rs.chi2
    fb = ra.provenance.get("fallback", {})
    print(f"\nmedian chi2: standard {np.median(rs.chi2):.3f}, assisted {np.median(ra.chi2):.3f}; assisted <= 1.05 x "
          f"standard on {np.mean(ratio <= 1.05):.0%} of pixels; fallback flagged {fb.get('flagged')} replaced "
          f"{fb.get('replaced')}; wall: standard {t_std:.1f} s, assisted {t_ass:.1f} s ({t_std / t_ass:.2f}x, "
          f"{args.workers} workers)")
    out = {"commit": code_version()["commit"], "workers": args.workers, "ic_quiet_estimate": ic_est, "ic_hsra_file": ic,
           "chi2_standard": rs.chi2.tolist(), "chi2_assisted": ra.chi2.tolist(),
           "median_chi2": {"standard": float(np.median(rs.chi2)), "assisted": float(np.median(ra.chi2))},
           "fraction_within_5pct": float(np.mean(ratio <= 1.05)), "seconds": {"standard": t_std, "assisted": t_ass},
           "fallback": {"flagged": fb.get("flagged"), "replaced": fb.get("replaced")}, "warnings": msgs,
           "model": {"name": ra.provenance["init_info"].get("model_name"),
                     "file": Path(str(ra.provenance["init_info"].get("model"))).name}}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=2))
    print(f"-> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
