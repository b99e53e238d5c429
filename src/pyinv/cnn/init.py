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
   Pe from hydrostatic equilibrium at μ.
3. **Fallback** (``fallback=True``, the default). A pixel is *clearly worse* when its χ² is more than
   ``fallback_factor`` (default 10) times the median χ² of the converged pixels of its CNN cluster (k-means
   of the CNN outputs, :func:`pyinv.cnn.cluster`; clusters with fewer than 4 converged pixels use the
   map-wide median), or when it failed (non-finite χ², solver exception, timeout, dead worker). χ² is
   noise-normalised, so the rule compares each fit with fits of physically similar pixels at the same
   noise. Those pixels are inverted again from the standard start (:func:`pyinv.models.default_guess`)
   with the full configuration (``config`` itself when it has several cycles, else
   :func:`pyinv.cnn.reference_config` with its weights and S/N), and the better of the two fits is kept.
   Why 10: on the four 16×16 maps of ``benchmarks/bench_assisted.py`` (packaged model) no assisted fit was
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

__all__ = ["CNNInit", "one_cycle", "flag_clearly_worse"]

_FAILED = (103, 104, 105)
_NOT_INVERTED = (101, 102)


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
    """

    name = "cnn"

    def __init__(self, guess: Any = None, *, ic_quiet: float | None = None, n_clusters: int = 5,
                 resample: bool = False, cycles: str = "last", fallback: bool = True, fallback_factor: float = 10.0,
                 fallback_config: Any = None):
        from .predict import as_model
        if cycles not in ("last", "all"):
            raise ValueError(f"cycles must be 'last' or 'all', got {cycles!r}")
        if not fallback_factor > 1.0:
            raise ValueError(f"fallback_factor must be > 1, got {fallback_factor}")
        self.model = as_model(guess)
        self.ic_quiet = ic_quiet
        self.n_clusters = int(n_clusters)
        self.resample = bool(resample)
        self.cycles = cycles
        self.fallback = bool(fallback)
        self.fallback_factor = float(fallback_factor)
        self.fallback_config = fallback_config
        self.last_prediction = None
        self._labels = None
        self._config_note = ""
        self._full_config = None

    def describe(self) -> str:
        p = self.model.provenance
        name = self.model.meta.get("name")
        return (f"cnn({name + ', ' if name else ''}{p.get('loaded_from', 'in-memory model')}, "
                f"trained {p.get('created', '?')}, fallback={'on' if self.fallback else 'off'})")

    # ------------------------------------------------------------------ configuration
    def prepare_config(self, config: Any, mu: float | None = None) -> Any:
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
        from ..models import default_guess
        from .predict import cluster, predict

        ny, nx = ctx.shape
        fb = default_guess()
        pred = predict(ctx.cube, self.model, grid=ctx.grid, lines=ctx.lines, mu=ctx.mu, ic_quiet=self.ic_quiet,
                       log_tau=np.asarray(fb.log_tau), valid=ctx.valid, abundances=ctx.abundances,
                       resample=self.resample)
        self.last_prediction = pred
        table = pred.atmospheres.reshape(ny * nx, -1, 11).copy()
        header = np.zeros((ny * nx, 3))
        header[:, 0] = pred.macro.reshape(-1)
        header[:, 1] = 1.0
        bad = ~(np.isfinite(table).all(axis=(1, 2)) & np.isfinite(header).all(axis=1))
        table[bad] = fb.to_array()
        header[bad] = (float(fb.macro), 1.0, 0.0)
        labels = cluster(pred, self.n_clusters, model=self.model) if self.n_clusters > 0 else None
        self._labels = labels
        return GuessSet(table, header, np.arange(ny * nx, dtype=np.int32)[:, None], labels=labels,
                        info={"init": "cnn", "model": self.model.provenance.get("loaded_from", "in-memory"),
                              "model_name": self.model.meta.get("name"), "config": self._config_note,
                              "ic_quiet": pred.ic_quiet, "seconds_inference": pred.seconds["inference"],
                              "seconds_interpolation": pred.seconds["interpolation"],
                              "fallback_pixels": int((bad & ctx.valid.reshape(-1)).sum())})

    # ------------------------------------------------------------------ fallback
    def finish(self, result: Any, rerun) -> Any:
        rule = (f"chi2 > {self.fallback_factor:g} x median chi2 of the converged pixels of the pixel's CNN cluster "
                f"(map-wide median for clusters with < 4), or failed")
        info: dict[str, Any] = {"enabled": self.fallback, "rule": rule, "factor": self.fallback_factor}
        if not self.fallback:
            result.provenance["fallback"] = info
            return result
        flag, thr = flag_clearly_worse(result.chi2, result.status, self._labels, self.fallback_factor)
        info.update(flagged=int(flag.sum()), replaced=0, flagged_pixels=np.flatnonzero(flag).tolist(),
                    replaced_pixels=[], seconds=0.0,
                    config=self._full_config.to_sir_text() if self._full_config is not None else None)
        if flag.any():
            import time
            t0 = time.perf_counter()
            fb = rerun(flag, self._full_config, init="single", guess=None)
            info["seconds"] = time.perf_counter() - t0
            better = flag & (np.asarray(fb.status) == 0) & np.isfinite(fb.chi2) & (
                ~np.isfinite(result.chi2) | (fb.chi2 < result.chi2))
            for name in ("atmospheres", "macro", "filling", "stray", "fits", "chi2", "status", "iterations", "errors",
                         "errors_header"):
                arr = np.array(getattr(result, name))
                arr[better] = np.asarray(getattr(fb, name))[better]
                setattr(result, name, arr)
            cc = np.array(result.chi2_cycles)
            cc[better, -1] = np.asarray(fb.chi2)[better]
            result.chi2_cycles = cc
            sec = np.array(result.seconds)
            sec[flag] = np.nan_to_num(sec[flag]) + np.nan_to_num(np.asarray(fb.seconds)[flag])
            result.seconds = sec
            info.update(replaced=int(better.sum()), replaced_pixels=np.flatnonzero(better).tolist())
        info["thresholds"] = {"min": float(np.nanmin(thr)) if np.isfinite(thr).any() else None,
                              "max": float(np.nanmax(thr)) if np.isfinite(thr).any() else None}
        result.provenance["fallback"] = info
        return result
