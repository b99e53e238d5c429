"""``init="cnn"`` of :func:`pyinv.invert`: every pixel starts from the CNN's atmosphere, the map is inverted
in one cycle, and pixels whose fit is clearly worse are re-inverted from the standard start.

What ``pyinv.invert(cube, lines, grid, config, init="cnn")`` does:

1. **Configuration.** One cycle with the nodes (and weights, S/N, ...) of the *last* cycle of ``config``
   — for the paper's reference set-up (T 1,3,5; v, B 1,3,3; the rest 1) that is the assisted set-up
   (T 5, v 3, B 3, the rest 1). ``config=None`` uses :func:`pyinv.cnn.assisted_config`. A multi-cycle
   configuration is reduced with a UserWarning saying so; ``CNNInit(..., cycles="all")`` runs all its
   cycles from the CNN start instead (also announced). The configuration actually used is the result's
   ``provenance["config_text"]``; ``provenance["init_info"]["config"]`` says what was done.
2. **Start.** The CNN's node values (numpy forward pass), interpolated to the inversion's log τ grid,
   Pe from hydrostatic equilibrium at μ. Streamed (:class:`pyinv.cnn.starts.CNNStarts`): each chunk's
   starts are made where the chunk is inverted (pool workers, dask/MPI tasks), not for the whole map in
   the calling process, which only estimates the quiet-Sun continuum before the run and clusters the
   network outputs the workers stored (``start_aux`` of the store, kept in checkpoints) after it.
   ``provenance["init_info"]`` gives the workers' inference and interpolation seconds summed over pixels.
   A subclass that changes some pixels' starts wraps ``GuessSet.stream`` (e.g.
   ``pyinv.testing.solvers.AlteredStarts``); the GuessSet's table holds only a template row.
   **The assisted cycle (issue 17)** runs invert_pixel's own rules (``rules="pyinv"``): it ends when its last
   step and the Gauss-Newton prediction both gain less than ``rtol`` (default 1e-2) of χ², or when three
   steps together gain less (stagnation), judged with an exact Jacobian — no iteration cap tuned to a
   generator (``max_iterations`` 100). λ starts at 1 and Broyden updates run up to 3 in a row, as below.
   On the five 24×24 transfer maps of ``benchmarks/bench_assisted.py`` (the new quiet-Sun/plage family
   included) it takes 3.8–4.7 iterations, χ² within 5 % of the standard run's on 99.5–100 % of the pixels,
   at 3.1–5.2× less wall time (docs/cnn.md). ``rules="sir"`` restores issue 12's cycle described next.
   **Issue 12's assisted cycle** refines that start rather than converging from scratch: its initial Marquardt λ
   is ``initial_diagonal`` (default 1.0 instead of the configuration's 1e-3, so the first steps stay near
   the CNN's atmosphere), it stops after ``max_iterations`` successful LM iterations or earlier by
   invert_pixel's ``rtol`` rule (two consecutive iterations each improving χ² by less than 2·rtol) —
   defaults 3 and 1e-3; catalogue models may carry their own (``CatalogueEntry.assisted_lm``: GRIS 4 and
   0.1) —, and the Jacobian is updated by Broyden's formula up to
   ``jacobian_reuse`` (3) times in a row. These reach :func:`pyinv.invert_pixel` through the map's solver
   (:class:`AssistedSolver`, named in ``provenance["solver"]``); the λ is in ``provenance["config_text"]``.
   Why (benchmarks/results/assisted_tuning.txt, the four transfer maps of ``benchmarks/bench_assisted.py``):
   converging fully from the CNN start (about 5 iterations with λ = 1e-3) took 2.0–2.9× less CPU than
   the standard run, and its fit wandered away from the truth — at log τ = 0, v correlated 0.916–0.960
   with the truth against 0.942–0.974 for the standard run, T on the emerging region 0.78 against 0.95,
   while the CNN alone had 0.97–0.98. With λ = 1 and 3 iterations (Broyden ×3): 4.6–5.0× less CPU, χ²
   within 5 % of the standard run's on 98–100 % of the pixels, and every correlation at least the
   standard's. The GRIS model's starts are farther off (its v correlates 0.95–0.97 with the truth, the
   Hinode model's 0.98–0.995): on 24×24 maps 3 iterations leave χ² within 5 % on 91–96 % of the pixels,
   at most 4 with rtol 0.1 (3.1–3.4 on average) on 96–98 % at 4.5–7.2× less CPU than the standard run
   (the packaged models of 2026-12-04 19:00, trained 40 epochs on 120 000 pixels each).
   ``max_iterations=100, rtol=1e-3, jacobian_reuse=1, initial_diagonal=None`` converges fully (slower,
   the χ² criterion met too). With
   ``cycles="all"`` the configuration runs as given (none of these settings).
3. **Fallback** (``fallback=True``, the default). A pixel is *clearly worse* when its χ² is more than
   ``fallback_factor`` (default 10) times the median χ² of the converged pixels of its CNN cluster (k-means
   of the CNN outputs, :func:`pyinv.cnn.cluster`; clusters with fewer than 4 converged pixels use the
   map-wide median), or when it failed (non-finite χ², solver exception, timeout, dead worker). χ² is
   noise-normalised, so the rule compares each fit with fits of physically similar pixels at the same
   noise. Those pixels are inverted again from the standard start (:func:`pyinv.models.default_guess`)
   with the full configuration (``config`` itself when it has several cycles, else
   :func:`pyinv.cnn.reference_config` with its weights and S/N), and the better of the two fits is kept.
   Why 10 (measured with a fully converged assisted cycle, before the settings of step 2; with them the
   32×32 maps had 0–2 pixels flagged, all replaced): on the four 16×16 maps of
   ``benchmarks/bench_assisted.py`` (packaged model) no assisted fit was
   worse than the standard one by more than 10 %, yet a factor of 3 flagged up to 27 pixels (intrinsically
   hard ones that the standard run fits no better; pure cost), a factor of 8 none; a start that is really
   wrong (flipped polarity, +2000 K) ends near 100 times its cluster's median.
   ``provenance["fallback"]`` records the rule, the threshold per pixel's cluster, the pixels re-inverted
   and replaced (flat indices), and their seconds; the pixels' ``seconds`` include both runs; for replaced
   pixels ``chi2_cycles[..., -1]`` holds the fallback's final χ².
"""
from __future__ import annotations

import warnings
from typing import Any

import numpy as np

from ..init.base import GuessSet, InitContext, InitStrategy
from ..physics.inversion import InvertPixelWith
from ..status import STATUS_BAD_INPUT, STATUS_FAILED, STATUS_MASKED, STATUS_TIMEOUT, STATUS_WORKER_DIED

__all__ = ["CNNInit", "AssistedSolver", "one_cycle", "flag_clearly_worse"]

#: Defaults of the assisted cycle's LM options (CNNInit; see the module docstring): iterations and stopping
#: tolerance (catalogue models may carry their own, CatalogueEntry.assisted_lm), Broyden updates in a row,
#: the initial Marquardt λ.
ASSISTED_MAX_ITERATIONS = 100
ASSISTED_RTOL = 1e-2
ASSISTED_JACOBIAN_REUSE = 3
ASSISTED_INITIAL_DIAGONAL = 1.0
#: LM rules of the assisted cycle (invert_pixel's ``rules``; issue 17: pyinv's, which end the cycle only when
#: the gain and the Gauss-Newton prediction fall below rtol, or it stagnates) and its rescue (invert_pixel's
#: ``rescue``; off: the map's fallback re-inverts clearly worse pixels from the standard start).
ASSISTED_RULES = "pyinv"
ASSISTED_RESCUE = False

_FAILED = (STATUS_FAILED, STATUS_TIMEOUT, STATUS_WORKER_DIED)
_NOT_INVERTED = (STATUS_MASKED, STATUS_BAD_INPUT)


def _writable(a: Any) -> np.ndarray:
    """``a`` itself when it is a writeable array (changed in place), else a copy."""
    return a if isinstance(a, np.ndarray) and a.flags.writeable else np.array(a)


def _describe_nodes(nodes: dict) -> str:
    return ", ".join(f"{k} {v}" for k, v in nodes.items() if v)


def one_cycle(config) -> Any:
    """``config`` reduced to one cycle with its last cycle's nodes, weights and per-cycle settings."""
    return config.single_cycle(max(1, int(config.cycles)))


def flag_clearly_worse(chi2: np.ndarray, status: np.ndarray, labels: np.ndarray | None, factor: float,
                       min_cluster: int = 4) -> tuple[np.ndarray, np.ndarray]:
    """The fallback rule (module docstring): (flag (ny, nx) bool, threshold (ny, nx) of χ²)."""
    chi2 = np.asarray(chi2, dtype=np.float64)
    st = np.asarray(status)
    inverted = ~np.isin(st, _NOT_INVERTED)
    good = inverted & (st == 0) & np.isfinite(chi2)
    lab = np.zeros(chi2.shape, int) - 1 if labels is None else np.asarray(labels).reshape(chi2.shape)
    ref_all = float(np.median(chi2[good])) if good.any() else np.inf
    thr = np.full(chi2.shape, factor * ref_all)
    for c in np.unique(lab[lab >= 0]):
        sel = lab == c
        g = good & sel
        if g.sum() >= min_cluster:
            thr[sel] = factor * float(np.median(chi2[g]))
    bad = inverted & (~np.isfinite(chi2) | np.isin(st, _FAILED) | (chi2 > thr))
    return bad, thr


class AssistedSolver(InvertPixelWith):
    """The default pixel solver (:func:`pyinv.invert_pixel`) with the LM options of the assisted cycle.

    A picklable callable with the solver interface of :class:`pyinv.maps.pixel.InversionPixels`; its ``repr``
    names the options, so a checkpoint written with other options is refused.
    """


class CNNInit(InitStrategy):
    """Initial atmospheres predicted by a CNN (Gafeira et al. 2021); see the module docstring.

    Parameters
    ----------
    guess : CNNModel, model path, catalogue name or None
        None = the packaged Hinode SP model (:func:`pyinv.cnn.pretrained`). Data it was not trained for
        are refused with a ValueError unless ``resample``.
    ic_quiet : float, optional
        Quiet-Sun continuum of the map (default: estimated from the map).
    n_clusters : int
        k-means clusters of the CNN outputs (the result's labels; the fallback's reference groups).
    resample : bool
        Interpolate a cube on a slightly different wavelength grid onto the model's (warns by how much).
    cycles : "last" or "all"
        "last" (default): one cycle with the last cycle's nodes. "all": the configuration as given.
    fallback : bool
        Re-invert clearly worse pixels from the standard start (default True).
    fallback_factor : float
        χ² threshold factor of the fallback rule (default 10; see the module docstring).
    fallback_config : InversionConfig, optional
        Configuration of the fallback runs (default: the user's multi-cycle configuration, else
        :func:`pyinv.cnn.reference_config`).
    max_iterations : int or None
        Successful LM iterations of the assisted cycle at most (module docstring, step 2). None (default):
        100 with ``rules="pyinv"``; with ``rules="sir"`` the catalogue model's (``CatalogueEntry.assisted_lm``:
        GRIS 4), else 3.
    rtol : float or None
        invert_pixel's stopping tolerance in the assisted cycle. None (default): 1e-2 with ``rules="pyinv"``;
        with ``rules="sir"`` the catalogue model's (GRIS 0.1), else 1e-3.
    rules : "pyinv" or "sir"
        invert_pixel's LM rules of the assisted cycle (default "pyinv", issue 17; "sir": issue 12's cycle).
    rescue : bool or float
        invert_pixel's rescue in the assisted cycle (default False: the fallback covers clearly worse fits).
    jacobian_reuse : int
        Broyden updates of the Jacobian in a row in the assisted cycle (default 3; invert_pixel's is 1).
    initial_diagonal : float or None
        Initial Marquardt λ of the cycle that starts from the CNN (default 1.0); None keeps the
        configuration's (1e-3 by default).

    Only the default pixel solver (:func:`pyinv.invert_pixel`) takes ``max_iterations``, ``rtol`` and
    ``jacobian_reuse``; another one (``nlte=...``) runs with its own settings. Fallback runs always use
    invert_pixel's own defaults and the configuration's λ.
    """

    name = "cnn"

    def __init__(self, guess: Any = None, *, ic_quiet: float | None = None, n_clusters: int = 5,
                 resample: bool = False, cycles: str = "last", fallback: bool = True, fallback_factor: float = 10.0,
                 fallback_config: Any = None, max_iterations: int | None = None,
                 rtol: float | None = None, jacobian_reuse: int = ASSISTED_JACOBIAN_REUSE,
                 initial_diagonal: float | None = ASSISTED_INITIAL_DIAGONAL, rules: str = ASSISTED_RULES,
                 rescue: bool | float = ASSISTED_RESCUE):
        from .predict import as_model
        if cycles not in ("last", "all"):
            raise ValueError(f"cycles must be 'last' or 'all', got {cycles!r}")
        if not fallback_factor > 1.0:
            raise ValueError(f"fallback_factor must be > 1, got {fallback_factor}")
        self.model = as_model(guess)
        from .catalogue import CATALOGUE
        entry = CATALOGUE.get(str(self.model.meta.get("name")))
        own = dict(entry.assisted_lm) if entry is not None else {}
        if rules not in ("sir", "pyinv"):
            raise ValueError(f"rules must be 'sir' or 'pyinv', got {rules!r}")
        if rules == "pyinv":
            own = {}   # the catalogue's iteration caps were tuned for SIR's rules (issue 12)
        if max_iterations is None:
            max_iterations = own.get("max_iterations", ASSISTED_MAX_ITERATIONS if rules == "pyinv" else 3)
        if rtol is None:
            rtol = own.get("rtol", ASSISTED_RTOL if rules == "pyinv" else 1e-3)
        if isinstance(max_iterations, bool) or int(max_iterations) != max_iterations or max_iterations < 1:
            raise ValueError(f"max_iterations must be an integer >= 1 or None, got {max_iterations!r}")
        if not float(rtol) >= 0.0:
            raise ValueError(f"rtol must be >= 0, got {rtol!r}")
        if isinstance(jacobian_reuse, bool) or int(jacobian_reuse) != jacobian_reuse or jacobian_reuse < 0:
            raise ValueError(f"jacobian_reuse must be an integer >= 0, got {jacobian_reuse!r}")
        if initial_diagonal is not None and not (np.isfinite(initial_diagonal) and initial_diagonal > 0):
            raise ValueError(f"initial_diagonal must be > 0 or None, got {initial_diagonal!r}")
        self.rules = rules
        self.rescue = rescue
        self.max_iterations = int(max_iterations)
        self.rtol = float(rtol)
        self.jacobian_reuse = int(jacobian_reuse)
        self.initial_diagonal = None if initial_diagonal is None else float(initial_diagonal)
        self.ic_quiet = ic_quiet
        self.n_clusters = int(n_clusters)
        self.resample = bool(resample)
        self.cycles = cycles
        self.fallback = bool(fallback)
        self.fallback_factor = float(fallback_factor)
        self.fallback_config = fallback_config
        self.last_prediction = None  # kept for compatibility: the map's starts are streamed (CNNStarts)
        self._labels = None
        self._stream = None
        self._config_note = ""
        self._full_config = None
        self._tuned = True

    def describe(self) -> str:
        p = self.model.provenance
        name = self.model.meta.get("name")
        return (f"cnn({name + ', ' if name else ''}{p.get('loaded_from', 'in-memory model')}, "
                f"trained {p.get('created', '?')}, fallback={'on' if self.fallback else 'off'})")

    # ------------------------------------------------------------------ solver
    def pixel_solver(self, solver: Any) -> Any:
        """The solver of the assisted run: :func:`pyinv.invert_pixel` with this object's ``max_iterations``,
        ``rtol`` and ``jacobian_reuse`` (:class:`AssistedSolver`). Another solver (NLTE, a user's) is kept
        as it is. The fallback runs use the solver as given, with invert_pixel's own defaults."""
        if solver != "pyinv:invert_pixel" or not self._tuned:
            return solver
        return AssistedSolver(max_iterations=self.max_iterations, rtol=self.rtol, jacobian_reuse=self.jacobian_reuse,
                              rules=self.rules, rescue=self.rescue, magnetic_start="guess")

    # ------------------------------------------------------------------ configuration
    def prepare_config(self, config: Any, mu: float | None = None) -> Any:
        """The configuration of the assisted run (module docstring, step 1) with this object's
        ``initial_diagonal`` in the cycle that starts from the CNN."""
        cfg = self._assisted_config(config, mu)
        self._tuned = int(cfg.cycles) == 1  # cycles="all" with several cycles: the configuration as given
        if self.initial_diagonal is None or not self._tuned:
            return cfg
        import dataclasses
        self._config_note += f"; initial Marquardt lambda {self.initial_diagonal:g} (CNNInit.initial_diagonal)"
        return dataclasses.replace(cfg, initial_diagonal=self.initial_diagonal)

    def _assisted_config(self, config: Any, mu: float | None) -> Any:
        from .configs import assisted_config, reference_config
        m = 1.0 if mu is None else float(mu)
        if config is None:
            cfg = assisted_config(mu=m)
            self._full_config = self.fallback_config or reference_config(mu=m)
            self._config_note = "config=None: pyinv.cnn.assisted_config() (1 cycle; T 5, vlos 3, B 3, the rest 1)"
            return cfg
        n = int(config.cycles)
        if self.fallback_config is not None:
            self._full_config = self.fallback_config
        elif n > 1:
            self._full_config = config
        else:
            w = config.weights_for(1)
            self._full_config = reference_config(weights=w, snr=float(config.value("snr", 1)), mu=config.mu)
        if n <= 1:
            self._config_note = "the given one-cycle configuration"
            return config
        if self.cycles == "all":
            self._config_note = f"all {n} cycles of the given configuration (cycles='all')"
            warnings.warn(f"init='cnn' with cycles='all': running all {n} cycles of the configuration from the CNN "
                          f"start", UserWarning, stacklevel=4)
            return config
        cfg = one_cycle(config)
        nodes = _describe_nodes(cfg.nodes_for(1))
        self._config_note = (f"one cycle with the last-cycle nodes of the given {n}-cycle configuration ({nodes})")
        warnings.warn(f"init='cnn': inverting in ONE cycle with the last-cycle nodes of your {n}-cycle configuration "
                      f"({nodes}); CNNInit(..., cycles='all') runs all cycles", UserWarning, stacklevel=4)
        return cfg

    # ------------------------------------------------------------------ guesses
    def initial_guesses(self, ctx: InitContext) -> GuessSet:
        """The map's starts as a stream (:class:`pyinv.cnn.starts.CNNStarts`): each pixel's CNN start is made
        where the pixel is inverted, chunk by chunk; here only the data are checked against the model and the
        map's quiet-Sun continuum is estimated (in blocks). The clusters of the outputs and the prediction's
        figures come after the run (:meth:`CNNStarts.collect`)."""
        from ..models import default_guess
        from .dataset import quiet_sun_continuum
        from .predict import check_mu
        from .starts import CNNStarts

        ny, nx = ctx.shape
        fb = default_guess()
        cm = self.model
        grid = self._resample_grid(ctx)
        check_mu(cm, ctx.mu)
        valid = np.asarray(ctx.valid, bool)  # finite and not masked (quiet_sun_continuum skips non-finite ones)
        if self.ic_quiet is not None:
            ic = float(self.ic_quiet)
        elif valid.any():
            stream0 = CNNStarts(cm, ic_quiet=1.0, mu=ctx.mu, log_tau=fb.log_tau, fallback=fb, grid=grid, n_clusters=0)
            ic = quiet_sun_continuum(ctx.cube, valid, transform=None if grid is None else stream0.profiles)
        else:
            ic = 1.0
        if not (np.isfinite(ic) and ic > 0):
            raise ValueError(f"the quiet-Sun continuum must be finite and > 0, got {ic}")
        stream = CNNStarts(cm, ic_quiet=ic, mu=ctx.mu, log_tau=fb.log_tau, fallback=fb, abundances=ctx.abundances,
                           grid=grid, n_clusters=self.n_clusters)
        self._stream = stream
        self._labels = None
        self.last_prediction = None
        table = np.asarray(fb.to_array(), dtype=np.float64)[None]
        header = np.array([[float(fb.macro), 1.0, 0.0]])
        return GuessSet(table, header, np.zeros((ny * nx, 1), np.int32), labels=None, stream=stream,
                        info={"init": "cnn", "model": self.model.provenance.get("loaded_from", "in-memory"),
                              "model_name": self.model.meta.get("name"), "config": self._config_note,
                              "ic_quiet": ic, "starts": "made per chunk where the pixels are inverted",
                              "assisted_lm": {"max_iterations": self.max_iterations, "rtol": self.rtol,
                                              "rules": self.rules, "rescue": self.rescue,
                                              "jacobian_reuse": self.jacobian_reuse,
                                              "initial_diagonal": self.initial_diagonal} if self._tuned else None})

    def _resample_grid(self, ctx: InitContext) -> Any:
        """Check the map against the model (as :func:`pyinv.cnn.predict`); the cube's grid when its profiles
        must be resampled onto the model's (the map's UserWarning is given here, once), else None."""
        from .predict import prepare_data

        cm = self.model
        if ctx.lines is not None:
            cm.check_compatible(None, ctx.lines, what="map")
        if not self.resample:
            prepare_data(cm, ctx.cube[:0, :0], ctx.grid, None, False)  # refuses another grid
            return None
        if ctx.grid is None:
            raise ValueError("resample=True needs the cube's wavelength grid (grid=)")
        from .resample import grid_mismatch, resample_to_model

        dev = grid_mismatch(cm, ctx.grid)
        if dev is not None and dev <= 1e-6:
            return None
        resample_to_model(ctx.cube.reshape(-1, 4, ctx.cube.shape[-1])[:1], ctx.grid, cm)  # its warning, once
        return ctx.grid

    # ------------------------------------------------------------------ fallback
    def finish(self, result: Any, rerun) -> Any:
        rule = (f"chi2 > {self.fallback_factor:g} x median chi2 of the converged pixels of the pixel's CNN cluster "
                f"(map-wide median for clusters with < 4), or failed")
        info: dict[str, Any] = {"enabled": self.fallback, "rule": rule, "factor": self.fallback_factor}
        if not self.fallback:
            result.provenance["fallback"] = info
            return result
        labels = self._labels if self._labels is not None else getattr(self._stream, "labels", None)
        flag, thr = flag_clearly_worse(result.chi2, result.status, labels, self.fallback_factor)
        info.update(flagged=int(flag.sum()), replaced=0, flagged_pixels=np.flatnonzero(flag).tolist(),
                    replaced_pixels=[], seconds=0.0,
                    config=self._full_config.to_sir_text() if self._full_config is not None else None)
        if flag.any():
            import time
            t0 = time.perf_counter()
            fb = rerun(flag, self._full_config, init="single", guess=None)
            info["seconds"] = time.perf_counter() - t0
            info["executor"] = fb.provenance.get("executor")
            better = flag & (np.asarray(fb.status) == 0) & np.isfinite(fb.chi2) & (
                ~np.isfinite(result.chi2) | (fb.chi2 < result.chi2))
            # in place where the arrays allow it (a checkpoint's result is a copy-on-write memory map: only the
            # replaced pixels' pages are copied), so that the map's arrays are not copied for a few pixels
            for name in ("atmospheres", "macro", "filling", "stray", "fits", "chi2", "chi2_reduced", "status",
                         "iterations", "errors", "errors_header", "rescue"):
                arr = _writable(getattr(result, name))
                arr[better] = np.asarray(getattr(fb, name))[better]
                setattr(result, name, arr)
            cc = _writable(result.chi2_cycles)
            cc[better, -1] = np.asarray(fb.chi2)[better]
            result.chi2_cycles = cc
            sec = _writable(result.seconds)
            sec[flag] = np.nan_to_num(sec[flag]) + np.nan_to_num(np.asarray(fb.seconds)[flag])
            result.seconds = sec
            info.update(replaced=int(better.sum()), replaced_pixels=np.flatnonzero(better).tolist())
        info["thresholds"] = {"min": float(np.nanmin(thr)) if np.isfinite(thr).any() else None,
                              "max": float(np.nanmax(thr)) if np.isfinite(thr).any() else None}
        result.provenance["fallback"] = info
        return result
