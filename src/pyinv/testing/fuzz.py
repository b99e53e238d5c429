"""Fuzzing of the public API and of :mod:`pyinv.engine` (private; used by tests/test_robustness.py and
benchmarks/bench_robustness.py).

Every target has a *template*: a valid call. An input is that call with one argument replaced by a
mutation of one kind: ``random`` (random values, same shape), ``nan``, ``inf``, ``huge`` (±1e300),
``negative``, ``zero``, ``empty`` (size 0), ``shape`` (a wrong size or rank), ``type`` (None, a string, a
dict, an object, a nested list of strings) or ``dtype`` (complex, bool, strings). The outcome of a call
is ``ok``, ``ValueError`` (including :class:`pyinv.EngineError`) or the name of any other exception;
a crash (segfault, abort) ends the process and is found by the driver, which runs the inputs in a
child process and restarts it after the input that killed it.

Run ``python -m pyinv.testing.fuzz N SEED [FIRST]``: inputs FIRST..N-1 of the sequence for SEED, one JSON
line per outcome kind at the end; the index of every input is written to stderr before it runs
(``@<index>``), so a driver knows which input crashed.
"""
from __future__ import annotations

import json
import sys
import warnings
from collections import Counter
from typing import Any, Callable

import numpy as np

__all__ = ["KINDS", "targets", "make_input", "run_range", "drive"]

KINDS = ("random", "nan", "inf", "huge", "negative", "zero", "empty", "shape", "type", "dtype")


def _mutate(value: Any, kind: str, rng: np.random.Generator) -> Any:
    if kind == "type":
        return [None, "abc", {"a": 1}, object(), [["x", "y"]], b"\x00", 3j][int(rng.integers(7))]
    if isinstance(value, (bool, np.bool_)):
        return _mutate(int(value), kind, rng)
    arr = np.array(value, dtype=np.float64) if not isinstance(value, np.ndarray) else value.astype(np.float64)
    scalar = arr.ndim == 0
    out = arr.copy()
    n = out.size
    pick = (rng.random(out.shape) < 0.3) if n else np.zeros(out.shape, bool)
    if n and not pick.any():
        pick.flat[int(rng.integers(n))] = True
    if kind == "random":
        out = rng.normal(0.0, 10.0 ** rng.uniform(-3, 6), out.shape)
    elif kind == "nan":
        out[pick] = np.nan
    elif kind == "inf":
        out[pick] = np.inf if rng.random() < 0.5 else -np.inf
    elif kind == "huge":
        out[pick] = 1e300 if rng.random() < 0.5 else -1e300
    elif kind == "negative":
        out = -np.abs(out) - rng.random(out.shape)
    elif kind == "zero":
        out[...] = 0.0
    elif kind == "empty":
        out = np.zeros((0,) * max(1, arr.ndim))
    elif kind == "shape":
        if scalar:
            out = rng.normal(size=int(rng.integers(0, 4)))
        else:
            choice = int(rng.integers(3))
            if choice == 0:
                out = out.ravel()[: max(0, n - 1 - int(rng.integers(max(1, n))))]
            elif choice == 1:
                out = np.concatenate([out.ravel(), rng.normal(size=int(rng.integers(1, 5)))])
            else:
                out = out[None, ...] if out.ndim < 4 else out.ravel()
    elif kind == "dtype":
        return [arr.astype(complex) + 1j, arr.astype(bool), arr.astype(str), arr.astype(object)][int(rng.integers(4))]
    if scalar and kind not in ("empty", "shape"):
        return float(out) if out.ndim == 0 else out
    if not isinstance(value, np.ndarray) and np.ndim(value) and kind in ("random", "nan", "inf", "huge",
                                                                           "negative", "zero"):
        return out.tolist()
    return out


def _templates() -> dict[str, tuple[Callable, list, dict]]:
    """name -> (function, args, kwargs) of a valid call."""
    import pyinv
    from pyinv import engine, models

    lines = pyinv.default_lines()
    grid = models.hinode_grid(lines)
    atm = models.default_guess()
    arr = atm.to_array()
    nd = arr.shape[0]
    lt = arr[:, 0].copy()
    T = arr[:, 1].copy()
    Pe = arr[:, 2].copy()
    eps = 10.0 ** (np.asarray(pyinv.default_abundances(), dtype=np.float64) - 12.0)
    stokes = pyinv.synthesize(atm, lines, grid)
    cfg = pyinv.InversionConfig(cycles=1, nodes={"T": 1, "vlos": 1}, snr=1000.0)
    k7 = np.vstack([np.linspace(1.0, 5.0, nd)] + [np.linspace(0.0, 0.1, nd)] * 6)
    src = np.linspace(2.0, 0.5, nd)
    off = np.linspace(-300.0, 300.0, 29)
    prof = np.vstack([1 - 0.5 * np.exp(-(off / 80) ** 2)] + [0.01 * np.sin(off / 50)] * 3)
    A = np.random.default_rng(0).normal(size=(12, 5))
    b = np.random.default_rng(1).normal(size=12)
    cube = stokes[None, None].repeat(2, axis=1)

    def synthesize_array(a):
        return pyinv.synthesize(pyinv.Atmosphere.from_array(a), lines, grid)

    def invert_pixel(s, g):
        return pyinv.invert_pixel(s, pyinv.Atmosphere.from_array(g), lines, grid, cfg)

    def invert_map(c, sigma):
        return pyinv.invert(c, lines, grid, cfg, executor="serial", progress=False, sigma=sigma)

    def config(snr, weights, cycles, mu):
        return pyinv.InversionConfig(cycles=cycles, snr=snr, weights=weights, mu=mu, nodes={"T": 2})

    def hydro(a):
        return pyinv.hydrostatic(pyinv.Atmosphere.from_array(a))

    def response(a):
        return pyinv.response_functions(pyinv.Atmosphere.from_array(a), lines, grid)

    return {
        "pyinv.synthesize": (synthesize_array, [arr], {}),
        "pyinv.invert_pixel": (invert_pixel, [stokes, arr], {}),
        "pyinv.invert": (invert_map, [cube, 1e-3], {}),
        "pyinv.InversionConfig": (config, [1000.0, [1.0, 1.0, 1.0, 1.0], 1, 1.0], {}),
        "pyinv.hydrostatic": (hydro, [arr], {}),
        "pyinv.response_functions": (response, [arr], {}),
        "pyinv.voigt": (pyinv.voigt, [np.linspace(0, 1, 7), np.linspace(-5, 5, 7)], {}),
        "pyinv.planck": (pyinv.planck, [6301.5, T], {}),
        "engine.voigt_derivatives": (engine.voigt_derivatives, [np.linspace(0, 1, 7), np.linspace(-5, 5, 7)], {}),
        "engine.eos_arrays": (engine.eos_arrays, [T, Pe, eps], {}),
        "engine.pe_from_pg_arrays": (engine.pe_from_pg_arrays, [T, Pe * 1e3, eps], {}),
        "engine.kappa_arrays": (engine.kappa_arrays, [5000.0, T, Pe, eps], {}),
        "engine.kappa_deriv_arrays": (engine.kappa_deriv_arrays, [5000.0, T, Pe, eps], {}),
        "engine.hydrostatic_arrays": (engine.hydrostatic_arrays, [lt, T, float(Pe[-1]), 0, 0.0, 1.0, eps], {}),
        "engine.atomic_arrays": (engine.atomic_arrays, [26, T], {}),
        "engine.formal_solution": (engine.formal_solution, [lt, k7, src], {}),
        "engine.hsra_continuum": (engine.hsra_continuum, [np.array([5000.0, 6301.5])], {}),
        "engine.convolve_stokes": (engine.convolve_stokes, [off, prof, 30.0], {}),
        "engine.zeeman_engine": (engine.zeeman_engine, [5.0, 2.0, 2.0, 5.0, 1.0, 2.0], {}),
        "engine.inv_allowed_nodes": (engine.inv_allowed_nodes, [nd, 5], {}),
        "engine.inv_node_basis": (engine.inv_node_basis, [lt, 3], {}),
        "engine.inv_svd_solve": (engine.inv_svd_solve, [A.T @ A, A.T @ b, np.arange(1, 6), 5, 1e-4], {}),
        "engine.inv_sigma": (engine.inv_sigma, [stokes, np.ones(stokes.shape[1], np.int32), 1,
                                                np.ones(4), 1000.0], {}),
    }


_CACHE: dict[str, Any] = {}


def targets() -> dict[str, tuple[Callable, list, dict]]:
    """The fuzz targets (built once per process; those the installed engine lacks are left out)."""
    if "t" not in _CACHE:
        _CACHE["t"] = _templates()
    return _CACHE["t"]


#: Relative frequency of targets that run a whole inversion (slow).
_SLOW = {"pyinv.invert_pixel": 0.15, "pyinv.invert": 0.15, "pyinv.response_functions": 0.3}


def make_input(index: int, seed: int) -> tuple[str, str, int, tuple, dict]:
    """Input ``index`` of the sequence for ``seed``: (target, kind, argument mutated, args, kwargs)."""
    rng = np.random.default_rng([seed, index])
    names = sorted(targets())
    w = np.array([_SLOW.get(n, 1.0) for n in names])
    name = names[int(rng.choice(len(names), p=w / w.sum()))]
    fn, args, kwargs = targets()[name]
    kind = KINDS[int(rng.integers(len(KINDS)))]
    j = int(rng.integers(len(args)))
    new = list(args)
    new[j] = _mutate(args[j], kind, rng)
    if np.ndim(args[j]) == 0 and kind in ("empty", "shape"):
        kind = "type"  # an array where a number belongs: a wrongly typed input
    return name, kind, j, tuple(new), dict(kwargs)


def _outcome(exc: BaseException | None) -> str:
    if exc is None:
        return "ok"
    return "ValueError" if isinstance(exc, ValueError) else type(exc).__name__


def run_range(first: int, last: int, seed: int, echo: bool = False) -> Counter:
    """Run inputs ``first..last-1``; returns counts keyed by (target, kind, outcome)."""
    counts: Counter = Counter()
    for i in range(first, last):
        name, kind, j, args, kwargs = make_input(i, seed)
        if echo:
            sys.stderr.write(f"@{i}\n")
            sys.stderr.flush()
        fn = targets()[name][0]
        exc = None
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with np.errstate(all="ignore"):
                try:
                    fn(*args, **kwargs)
                except BaseException as e:  # noqa: BLE001 - every outcome is recorded
                    if isinstance(e, KeyboardInterrupt):
                        raise
                    exc = e
        counts[(name, kind, _outcome(exc))] += 1
    return counts


def drive(n: int, seed: int, timeout: float = 3600.0, per_input: float = 120.0) -> dict[str, Any]:
    """Run inputs 0..n-1 in child processes (``python -m pyinv.testing.fuzz``); a child that dies is counted
    as a crash of the input it was running, one still running an input after ``per_input`` seconds is
    killed and counted as a hang; a new child continues with the next input. ``timeout`` bounds the
    whole run.

    Returns
    -------
    dict with ``inputs``, ``crashes`` and ``hangs`` (lists of (index, target, kind, exit code)) and
    ``outcomes`` (list of [target, kind, outcome, count]).
    """
    import os
    import select
    import subprocess
    import time

    import pyinv

    roots = [os.path.dirname(os.path.abspath(p)) for p in pyinv.__path__]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(roots + [os.environ.get("PYTHONPATH", "")]))
    first = 0
    crashes, hangs = [], []
    total: Counter = Counter()
    end = time.monotonic() + timeout
    while first < n:
        proc = subprocess.Popen([sys.executable, "-m", "pyinv.testing.fuzz", str(n), str(seed), str(first)],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
        out, err = proc.stdout.fileno(), proc.stderr.fileno()
        obuf, ebuf = b"", b""
        current, since, hung = first, time.monotonic(), False
        open_fds = {out, err}
        while open_fds:
            r, _, _ = select.select(list(open_fds), [], [], 1.0)
            for fd in r:
                chunk = os.read(fd, 65536)
                if not chunk:
                    open_fds.discard(fd)
                elif fd == out:
                    obuf += chunk
                else:
                    ebuf += chunk
                    lines = ebuf.split(b"\n")
                    ebuf = lines[-1]
                    for ln in lines[:-1]:
                        if ln.startswith(b"@") and ln[1:].isdigit():
                            current, since = int(ln[1:]), time.monotonic()
            now = time.monotonic()
            if open_fds and (now - since > per_input or now > end):
                hung = True
                proc.kill()
        rc = proc.wait()
        for line in obuf.decode(errors="replace").splitlines():
            if line.startswith("{"):
                d = json.loads(line)
                total[(d["target"], d["kind"], d["outcome"])] += d["count"]
        if rc == 0:
            break
        name, kind, _, _, _ = make_input(current, seed)
        if hung:
            hangs.append((current, name, kind, rc))
            total[(name, kind, "HANG")] += 1
        else:
            crashes.append((current, name, kind, rc))
            total[(name, kind, "CRASH")] += 1
        if time.monotonic() > end:
            break
        first = current + 1
    return {"inputs": n, "crashes": crashes, "hangs": hangs,
            "outcomes": [[t, k, o, c] for (t, k, o), c in sorted(total.items())]}


def _main(argv: list[str]) -> int:
    n, seed = int(argv[0]), int(argv[1])
    first = int(argv[2]) if len(argv) > 2 else 0
    for i in range(first, n):  # one line per input: a crash loses none of the earlier outcomes
        for (t, k, o), m in run_range(i, i + 1, seed, echo=True).items():
            sys.stdout.write(json.dumps({"target": t, "kind": k, "outcome": o, "count": m}) + "\n")
        sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
