"""Worker process of the side-by-side benchmarks (bench_inversion.py, bench_synthesis.py; started by
``_common.Worker``).

Runs one pyinv installation — whatever ``pyinv`` this interpreter imports (set PYTHONPATH to a build
of another commit to time that engine) — on requests read line by line from stdin, and answers each
with one JSON line on stdout. Only pyinv's public API is used, so engines of different versions
answer the same requests. Requests (JSON):

* ``{"op": "load_inversion", "reference": DIR}`` — the invert_hinode.npz problem;
* ``{"op": "invert", "pixel": i}`` — invert_pixel with the file's configuration; answers the wall and
  CPU seconds, the neutral χ²ₙ of the fit, the iterations, syntheses and status;
* ``{"op": "load_synthesis", "reference": DIR}`` — the Hinode synthesis case of bench_synthesis.py;
* ``{"op": "synthesize", "repeat": n}`` — n syntheses, the minimum and median seconds;
* ``{"op": "quit"}``.
"""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from _common import load_sir_problem, pin_threads

pin_threads()
import numpy as np  # noqa: E402


def assisted_control(trol: str) -> str:
    """SIR's control text of the assisted configuration: one cycle with the last-cycle nodes of the
    reference configuration (the file's ``assisted_nodes``)."""
    out = []
    for line in trol.splitlines():
        key, sep, val = line.partition(":")
        if sep and "Number of cycles" in key:
            val = "1"
        elif sep and ("Nodes for" in key or "Invert macroturbulence" in key) and "," in val:
            val = val.split(",")[-1]
        out.append(key + sep + val)
    return "\n".join(out) + "\n"


def main() -> int:
    import pyinv
    from pyinv.atmosphere import Atmosphere
    from pyinv.config import InversionConfig

    st: dict = {}
    for line in sys.stdin:
        req = json.loads(line)
        op = req["op"]
        out: dict = {"op": op}
        if op == "quit":
            break
        if op == "load_inversion":
            st.update(load_sir_problem(Path(req["reference"])))
            d = st["d"]
            st["cfg_assisted"] = InversionConfig.from_sir_text(assisted_control(str(d["sir_trol"])))
            # warm-up: imports and first-call overheads
            pyinv.invert_pixel(d["observed"][0], st["guess"], st["lines"], st["grid"],
                               InversionConfig(cycles=1, nodes={"T": 1}), abundances=st["ab"])
            out["engine"] = getattr(pyinv.engine, "isa", lambda: "baseline")()
        elif op == "invert":
            d, i = st["d"], int(req["pixel"])
            kw = dict(req.get("kwargs", {}))
            if req.get("assisted"):
                guess = Atmosphere.from_array(d["sir_assisted_start_models"][i],
                                              macro=float(d["sir_assisted_start_macro"][i]))
                cfg = st["cfg_assisted"]
            else:
                guess, cfg = st["guess"], st["cfg"]
            obs = d["observed"][i]
            t0, c0 = time.perf_counter(), time.process_time()
            r = pyinv.invert_pixel(obs, guess, st["lines"], st["grid"], cfg, abundances=st["ab"], **kw)
            out["wall"], out["cpu"] = time.perf_counter() - t0, time.process_time() - c0
            out["chi2n"] = float(np.mean(st["w"][:, None] * (obs - r.fit) ** 2) / st["noise"] ** 2)
            out["iterations"] = [int(k) for k in r.iterations]
            out["syntheses"] = int(r.syntheses)
            out["status"] = int(r.status)
        elif op == "load_synthesis":
            ref = Path(req["reference"])
            d = np.load(ref / "synth_hinode.npz")
            st["slines"] = pyinv.LineList.read_sir(ref / "LINES_REF")
            st["sab"] = pyinv.read_abundances(ref / "THEVENIN")
            st["satm"] = pyinv.Atmosphere.from_array(d["models"][0], macro=float(d["macro"][0]))
            st["sgrid"] = pyinv.WavelengthGrid.from_regions([("1,2", -615.9, 21.549, 1776.0)], st["slines"])
            pyinv.synthesize(st["satm"], st["slines"], st["sgrid"], abundances=st["sab"])
            out["npoints"] = int(st["satm"].ndep * st["sgrid"].nwav)
            out["engine"] = getattr(pyinv.engine, "isa", lambda: "baseline")()
        elif op == "synthesize":
            times = []
            for _ in range(int(req["repeat"])):
                t0 = time.perf_counter()
                pyinv.synthesize(st["satm"], st["slines"], st["sgrid"], abundances=st["sab"])
                times.append(time.perf_counter() - t0)
            out["min"], out["median"] = float(np.min(times)), float(np.median(times))
        else:
            out["error"] = f"unknown op {op!r}"
        sys.stdout.write(json.dumps(out) + "\n")
        sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
