"""The built-in initialisation strategies: single, previous, multistart, cluster."""
from __future__ import annotations

import os
from typing import Any, Sequence

import numpy as np

from ..atmosphere import Atmosphere
from .base import GuessSet, InitContext, InitStrategy, as_atmosphere

__all__ = ["Single", "Previous", "Multistart", "Cluster", "kmeans", "stokes_features", "library_prototypes"]


def _npix(ctx: InitContext) -> int:
    ny, nx = ctx.shape
    return ny * nx


class Single(InitStrategy):
    """One atmosphere for every pixel (default: :func:`pyinv.models.default_guess`, the packaged quiet-Sun
    reference of spec-data-defaults §4).

    Parameters
    ----------
    guess : Atmosphere, SIR .mod path or array (ndep, 8|11), optional
    """

    name = "single"
    profile_field_start = True

    def __init__(self, guess: Any = None):
        if guess is None:
            from ..models import default_guess
            guess = default_guess()
        self.atmosphere = as_atmosphere(guess, "init='single' guess")
        if self.atmosphere.stacked:
            raise ValueError("init='single' needs one atmosphere, got a stack (use init='multistart')")

    def initial_guesses(self, ctx: InitContext) -> GuessSet:
        return GuessSet.from_atmospheres([self.atmosphere], np.zeros((_npix(ctx), 1), np.int32),
                                         info={"init": "single"})


class Previous(InitStrategy):
    """Start every pixel from an earlier result.

    Parameters
    ----------
    guess : InversionResult, result FITS path, ndarray (ny, nx, ndep, 8|11) or stacked Atmosphere of ny·nx
        models (raster order).
    macro : float
        Macroturbulence [km/s] for array inputs (which carry none); default 0.5 (a relative parameter
        needs a nonzero start).
    fallback : Atmosphere, optional
        Model for pixels whose earlier result is missing (NaN, failed); default
        :func:`pyinv.models.default_guess`.
    """

    name = "previous"

    def __init__(self, guess: Any, macro: float = 0.5, fallback: Any = None):
        if guess is None:
            raise ValueError("init='previous' needs guess= (an InversionResult, a result FITS file or an "
                             "atmosphere cube (ny, nx, ndep, 11))")
        self.source = guess
        self.macro = float(macro)
        self.fallback = fallback

    def _arrays(self, ny: int, nx: int) -> tuple[np.ndarray, np.ndarray]:
        from ..maps.result import InversionResult

        g = self.source
        if isinstance(g, (str, os.PathLike)):
            g = InversionResult.from_fits(g)
        if isinstance(g, InversionResult):
            atm = np.asarray(g.atmospheres, dtype=np.float64)
            hdr = np.stack([g.macro, g.filling, g.stray], axis=-1)
        elif isinstance(g, Atmosphere):
            if not g.stacked or g.nmodels != ny * nx:
                raise ValueError(f"init='previous': an Atmosphere guess must be a stack of ny*nx = {ny * nx} "
                                 f"models, got {g.nmodels}")
            atm = g.to_array().reshape(ny, nx, g.ndep, 11)
            hdr = np.stack([np.broadcast_to(v, (ny * nx,)) for v in (g.macro, g.filling, g.stray)],
                           axis=-1).reshape(ny, nx, 3)
        else:
            atm = np.asarray(g, dtype=np.float64)
            if atm.ndim != 4 or atm.shape[-1] not in (8, 11):
                raise ValueError(f"init='previous': expected an atmosphere cube (ny, nx, ndep, 8|11), got shape "
                                 f"{atm.shape}")
            if atm.shape[-1] == 8:
                atm = np.concatenate([atm, np.zeros(atm.shape[:-1] + (3,))], axis=-1)
            hdr = np.empty(atm.shape[:2] + (3,))
            hdr[..., 0], hdr[..., 1], hdr[..., 2] = self.macro, 1.0, 0.0
        if atm.shape[:2] != (ny, nx):
            raise ValueError(f"init='previous': the earlier result is {atm.shape[:2]} pixels, the cube is "
                             f"{(ny, nx)}")
        return atm, hdr

    def initial_guesses(self, ctx: InitContext) -> GuessSet:
        ny, nx = ctx.shape
        atm, hdr = self._arrays(ny, nx)
        table = atm.reshape(ny * nx, atm.shape[2], 11).copy()
        header = hdr.reshape(ny * nx, 3).copy()
        bad = ~(np.isfinite(table).all(axis=(1, 2)) & np.isfinite(header).all(axis=1))
        bad |= (table[:, :, 1] <= 0).any(axis=1) | (table[:, :, 2] <= 0).any(axis=1)
        if bad.any():
            from ..models import default_guess
            fb = as_atmosphere(self.fallback if self.fallback is not None else default_guess())
            if fb.ndep != table.shape[1]:
                raise ValueError("init='previous': the fallback model has another number of depth points")
            table[bad] = fb.to_array()
            header[bad] = (float(fb.macro), float(fb.filling), float(fb.stray))
        return GuessSet(table, header, np.arange(ny * nx, dtype=np.int32)[:, None],
                        info={"init": "previous", "fallback_pixels": int(bad.sum())})


def _default_starts(n: int) -> list[Atmosphere]:
    from ..models import default_guess

    base = default_guess()
    variants = [dict(), dict(B=1000.0, gamma=120.0, phi=120.0), dict(B=150.0, gamma=90.0, phi=75.0),
                dict(B=2000.0, gamma=20.0, phi=160.0), dict(B=600.0, gamma=160.0, phi=45.0, vlos=1.0e5),
                dict(B=300.0, gamma=30.0, phi=100.0, vlos=-1.0e5)]
    out = []
    for k in range(n):
        v = variants[k % len(variants)]
        atm = base.with_columns(**v) if v else base
        if k >= len(variants):  # beyond the table: scale the field a little, deterministic
            atm = atm.with_columns(B=np.asarray(atm.B) * (1.0 + 0.25 * (k // len(variants))))
        out.append(atm)
    return out


class Multistart(InitStrategy):
    """Invert every pixel from N guesses and keep the lowest final χ².

    Parameters
    ----------
    guess : int, list of Atmosphere or stacked Atmosphere, optional
        The starts, or their number (a deterministic set of field configurations around
        :func:`pyinv.models.default_guess`); default 3.
    """

    name = "multistart"

    def __init__(self, guess: Any = 3):
        if isinstance(guess, (int, np.integer)):
            if guess < 1:
                raise ValueError("init='multistart' needs at least one start")
            self.models = _default_starts(int(guess))
        elif isinstance(guess, Atmosphere):
            self.models = list(guess) if guess.stacked else [guess]
        elif isinstance(guess, Sequence) and not isinstance(guess, (str, bytes)):
            self.models = [as_atmosphere(g, "init='multistart' guess") for g in guess]
        else:
            raise ValueError("init='multistart': guess must be a number of starts or a list of atmospheres")
        if not self.models:
            raise ValueError("init='multistart' needs at least one start")

    def describe(self) -> str:
        return f"multistart(n={len(self.models)})"

    def initial_guesses(self, ctx: InitContext) -> GuessSet:
        n = len(self.models)
        idx = np.broadcast_to(np.arange(n, dtype=np.int32), (_npix(ctx), n))
        return GuessSet.from_atmospheres(self.models, idx, info={"init": "multistart", "nstart": n})


# ----------------------------------------------------------------------------------------- clustering
def stokes_features(cube: np.ndarray) -> np.ndarray:
    """Observable features of each pixel: continuum intensity, linear and circular polarisation amplitude,
    and the polarity ``sign(Σ V · dI/dλ)``.

    Parameters
    ----------
    cube : ndarray (..., 4, nλ)

    Returns
    -------
    ndarray (..., 4): ``Ic`` (mean of the 3 brightest I samples), ``max sqrt(Q² + U²)``, ``max |V|``,
    polarity (±1, 0 without V).
    """
    c = np.asarray(cube, dtype=np.float64)
    i, q, u, v = c[..., 0, :], c[..., 1, :], c[..., 2, :], c[..., 3, :]
    k = min(3, i.shape[-1])
    ic = np.sort(i, axis=-1)[..., -k:].mean(axis=-1)
    lin = np.sqrt(q * q + u * u).max(axis=-1)
    circ = np.abs(v).max(axis=-1)
    di = np.gradient(i, axis=-1) if i.shape[-1] > 1 else np.zeros_like(i)
    pol = np.sign((v * di).sum(axis=-1))
    return np.stack([ic, lin, circ, pol], axis=-1)


#: Rows per block of :func:`kmeans_blocks` (its temporaries are (block, k, features)).
KMEANS_BLOCK = 4096


def kmeans(x: np.ndarray, k: int, *, seed: int = 0, iterations: int = 100) -> tuple[np.ndarray, np.ndarray]:
    """Plain k-means (k-means++ start, Lloyd iterations), deterministic for a given seed.

    Parameters
    ----------
    x : ndarray (n, f)
    k : int
        Number of clusters (reduced to the number of distinct points when larger).

    Returns
    -------
    labels : ndarray of int (n,), centres : ndarray (k, f)
    """
    x = np.asarray(x, dtype=np.float64)
    if x.shape[0] == 0:
        return np.zeros(0, int), np.zeros((0, x.shape[1]))
    return kmeans_blocks(lambda i, j: x[i:j], x.shape[0], k, seed=seed, iterations=iterations)


def kmeans_blocks(rows: Any, n: int, k: int, *, seed: int = 0, iterations: int = 100,
                  block: int = KMEANS_BLOCK) -> tuple[np.ndarray, np.ndarray]:
    """:func:`kmeans` of ``n`` points handed out in blocks: ``rows(i, j)`` returns points ``i:j`` as float64
    (j − i, f). The temporaries are a block's, not the points' (the points may live in a file and be
    computed per block); the result is the same, bit for bit, as that of the whole array at once (per-row
    distances do not depend on the block, the centres are sums of their points in order)."""
    if n == 0:
        raise ValueError("kmeans_blocks needs at least one point")
    blocks = [(i, min(n, i + block)) for i in range(0, n, block)]
    # k is capped at the number of distinct points (only whether there are k of them matters)
    distinct: list[np.ndarray] = []
    for i, j in blocks:
        xb = rows(i, j)
        while len(distinct) < k:
            new = np.ones(xb.shape[0], bool)
            for d in distinct:
                new &= ~(xb == d).all(axis=1)
            if not new.any():
                break
            distinct.append(np.array(xb[int(np.argmax(new))]))
        if len(distinct) >= k:
            break
    k = int(max(1, min(k, len(distinct))))

    def row(r: int) -> np.ndarray:
        return np.array(rows(r, r + 1)[0])

    rng = np.random.default_rng(seed)
    centres = [row(int(rng.integers(n)))]
    for _ in range(1, k):
        cs = np.array(centres)
        d2 = np.concatenate([np.min(((rows(i, j)[:, None, :] - cs[None]) ** 2).sum(-1), axis=1) for i, j in blocks])
        p = d2 / d2.sum() if d2.sum() > 0 else np.full(n, 1.0 / n)
        centres.append(row(int(rng.choice(n, p=p))))
    c = np.array(centres)
    labels = np.zeros(n, int)
    for it in range(iterations):
        new = np.concatenate([((rows(i, j)[:, None, :] - c[None]) ** 2).sum(-1).argmin(axis=1) for i, j in blocks])
        if it and np.array_equal(new, labels):
            break
        labels = new
        # the mean of each cluster's points, summed in order block after block (as x[sel].mean(axis=0))
        acc: list[np.ndarray | None] = [None] * k
        for i, j in blocks:
            xb = rows(i, j)
            lb = labels[i:j]
            for m in range(k):
                sel = lb == m
                if sel.any():
                    part = xb[sel] if acc[m] is None else np.concatenate([acc[m][None], xb[sel]])
                    acc[m] = np.add.reduce(part, axis=0)
        for m in range(k):
            if acc[m] is not None:
                c[m] = acc[m] / np.count_nonzero(labels == m)
    return labels, c


def library_prototypes() -> list[tuple[str, Atmosphere]]:
    """Guess models built from the packaged atmosphere library (spec-data-defaults §3), one per solar
    feature, with a typical field (positive polarity, γ < 90°), vmic = 1 km/s and macro = 0.5 km/s.
    Pe is put in hydrostatic equilibrium with pyinv's equation of state when the engine is available."""
    from .. import models

    common = dict(vmic=1.0e5, phi=30.0, vlos=0.0, macro=0.5)
    protos = [("quiet", models.default_guess()),
              ("plage", models.falh(B=1000.0, gamma=20.0, **common)),
              ("penumbra", models.penumjti(B=1500.0, gamma=70.0, **common)),
              ("umbra", models.cool(B=2500.0, gamma=15.0, **common)),
              ("umbra_maltby", models.mmaltby(B=2800.0, gamma=10.0, **common))]
    out = []
    for name, atm in protos:
        if name != "quiet":
            try:
                from ..physics.thermo import hydrostatic
                atm = hydrostatic(atm)
                atm = atm.with_columns(Pg=None, rho=None, z=None)
            except Exception:  # engine unavailable: keep the tabulated Pe
                pass
        out.append((name, atm))
    return out


class Cluster(InitStrategy):
    """Cluster pixels by observable features and start each cluster from the library model that looks
    most like it.

    Features (:func:`stokes_features`): continuum intensity, linear and circular polarisation
    amplitudes, standardised over the valid pixels; k-means groups them (or ``labels`` are given, e.g.
    from the CNN's outputs). The library prototypes (:func:`library_prototypes`: quiet Sun, plage,
    penumbra, two umbrae) are synthesised with the inversion's lines, grid and PSF; each cluster takes
    the prototype nearest to its centre in the same standardised feature space. Pixels whose polarity
    (sign of Σ V·dI/dλ) is opposite to the prototype's start from γ → 180° − γ.

    Parameters
    ----------
    guess : ndarray (ny, nx) of int, optional
        Labels to use instead of k-means (same as ``labels``).
    n_clusters : int
        Number of k-means clusters (default 5, the number of prototypes).
    labels : ndarray (ny, nx) of int, optional
    prototypes : list of (name, Atmosphere), optional
        Replaces the packaged prototypes.
    seed : int
        k-means seed.
    """

    name = "cluster"

    def __init__(self, guess: Any = None, *, n_clusters: int = 5, labels: Any = None,
                 prototypes: list[tuple[str, Atmosphere]] | None = None, seed: int = 0):
        if guess is not None and labels is not None:
            raise ValueError("init='cluster': give labels either as guess or as labels, not both")
        self.labels = guess if guess is not None else labels
        self.n_clusters = int(n_clusters)
        self.prototypes = prototypes
        self.seed = int(seed)

    def describe(self) -> str:
        return f"cluster(n_clusters={self.n_clusters}, seed={self.seed})"

    def initial_guesses(self, ctx: InitContext) -> GuessSet:
        from ..physics.synthesis import synthesize

        ny, nx = ctx.shape
        protos = self.prototypes or library_prototypes()
        names = [p[0] for p in protos]
        atms = [p[1] for p in protos]
        feat = stokes_features(ctx.cube).reshape(ny * nx, 4)
        valid = ctx.valid.reshape(-1) & np.isfinite(feat).all(axis=1)
        f3 = feat[:, :3]
        # prototype features from their synthetic profiles
        pst = np.asarray(synthesize(atms, ctx.lines, ctx.grid, mu=ctx.mu, psf=ctx.psf, abundances=ctx.abundances))
        pfeat = stokes_features(pst)
        fv = f3[valid]
        scale = np.std(np.concatenate([fv, pfeat[:, :3]]), axis=0)
        scale = np.where(scale > 1e-6, scale, 1.0)
        labels = np.full(ny * nx, -1)
        if self.labels is not None:
            lab = np.asarray(self.labels)
            if lab.shape != (ny, nx):
                raise ValueError(f"init='cluster': labels must be (ny, nx) = {(ny, nx)}, got {lab.shape}")
            labels[:] = lab.reshape(-1).astype(int)
            labels[~valid] = -1
        elif valid.any():
            labels[valid], _ = kmeans(fv / scale, self.n_clusters, seed=self.seed)
        # nearest prototype for each cluster centre
        choice: dict[int, int] = {}
        for lab in np.unique(labels[labels >= 0]):
            c = f3[labels == lab].mean(axis=0)
            d = (((pfeat[:, :3] - c) / scale) ** 2).sum(axis=1)
            choice[int(lab)] = int(np.argmin(d))
        # table: every prototype, then its flipped-polarity twin
        flipped = [a.with_columns(gamma=180.0 - np.asarray(a.gamma)) for a in atms]
        npro = len(atms)
        idx = np.zeros(ny * nx, np.int32)  # invalid pixels: prototype 0 (never inverted)
        for p in range(ny * nx):
            if labels[p] < 0:
                continue
            j = choice[int(labels[p])]
            flip = feat[p, 3] != 0 and pfeat[j, 3] != 0 and feat[p, 3] != pfeat[j, 3]
            idx[p] = j + npro if flip else j
        return GuessSet.from_atmospheres(atms + flipped, idx[:, None], labels=labels.reshape(ny, nx),
                                         info={"init": "cluster", "prototypes": names,
                                               "cluster_to_prototype": {int(k): names[v] for k, v in choice.items()}})
