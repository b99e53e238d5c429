"""The spatial point-spread function of a coupled inversion: :class:`SpatialPSF`.

The telescope degrades every monochromatic Stokes image with the same 2-D kernel K (pixels), so the
observed cube is modelled as O = P S, with (P S)_c = K ⊛ S_c for every channel c = (Stokes, λ). The map's
edges are handled by extending the image with its mirror image (half-sample symmetric extension,
``numpy.pad(mode="symmetric")``: [a b c] → [b a | a b c | c b]); the operator is therefore

    P = C E,

E the symmetric extension onto the padded grid (ny + ky − 1, nx + kx − 1) and C the 'valid' part of the
linear convolution with K. Its adjoint (van Noort 2012, A&A 548, A5, §3; de la Cruz Rodríguez 2019,
A&A 631, A153, §2 use the same operator and its transpose) is Pᵀ = Eᵀ Cᵀ: the correlation with K (the
convolution with the flipped kernel) of the zero-embedded data, folded back onto the image by Eᵀ (every
mirrored sample adds its value to the pixel it copies). Both run as real FFTs over the last two axes of
arrays (nchan, ny, nx).
"""
from __future__ import annotations

import os
from typing import Any

import numpy as np

__all__ = ["SpatialPSF", "load_spatial_psf", "DEFAULT_BORDER_ENERGY"]

#: Fraction of the kernel's energy (sum) inside the radius :meth:`SpatialPSF.effective_radius` uses by
#: default; the tiles of a coupled inversion are solved with a border at least that wide.
DEFAULT_BORDER_ENERGY = 0.98
#: Images per FFT batch in :meth:`SpatialPSF.apply` / :meth:`SpatialPSF.adjoint`
CHUNK = 64

try:  # scipy's FFT is faster (not a dependency of pyinv)
    import scipy.fft as _fft

    def _next_len(n: int) -> int:
        return int(_fft.next_fast_len(int(n), real=True))
except ImportError:  # pragma: no cover - depends on the installation
    _fft = np.fft

    def _next_len(n: int) -> int:
        m = int(n)
        while True:
            k = m
            for p in (2, 3, 5):
                while k % p == 0:
                    k //= p
            if k == 1:
                return m
            m += 1


def load_spatial_psf(psf: Any) -> np.ndarray:
    """A spatial PSF as a float64 2-D array normalised to unit sum.

    ``psf``: a 2-D array, a :class:`SpatialPSF`, or the path of a FITS file whose first image HDU holds
    the kernel (astropy). ValueError when it is not 2-D, not finite, has a negative value or a sum ≤ 0.
    """
    if isinstance(psf, SpatialPSF):
        return psf.kernel.copy()
    if isinstance(psf, (str, os.PathLike)):
        from astropy.io import fits

        with fits.open(os.fspath(psf)) as hdul:
            data = next((h.data for h in hdul if getattr(h, "data", None) is not None
                         and np.asarray(h.data).ndim >= 2), None)
        if data is None:
            raise ValueError(f"spatial PSF file {os.fspath(psf)!r} holds no image")
        psf = np.asarray(data)
    try:
        k = np.array(psf, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"the spatial PSF must be a 2-D array of numbers: {exc}") from None
    k = np.squeeze(k) if k.ndim > 2 else k
    if k.ndim != 2:
        raise ValueError(f"the spatial PSF must be a 2-D kernel (ky, kx), got shape {np.shape(psf)}")
    if k.size == 0:
        raise ValueError("the spatial PSF is empty")
    if not np.all(np.isfinite(k)):
        raise ValueError("the spatial PSF must be finite (it holds NaN or infinite values)")
    if np.any(k < 0):
        raise ValueError(f"the spatial PSF must be non-negative (minimum {k.min():g})")
    s = float(k.sum())
    if not s > 0:
        raise ValueError("the spatial PSF must have a positive sum")
    return k / s


class SpatialPSF:
    """A 2-D spatial kernel (unit sum) and the convolution operator P of a cube and its adjoint.

    Parameters
    ----------
    psf : array (ky, kx), FITS path or SpatialPSF
        The kernel in pixels of the map; normalised to unit sum here. Its centre is the sample
        (ky // 2, kx // 2) (the middle one for odd sizes).
    """

    def __init__(self, psf: Any):
        self.kernel = load_spatial_psf(psf)
        ky, kx = self.kernel.shape
        self.centre = (ky // 2, kx // 2)
        #: samples of the extension before/after the image along y and x (a convolution reaches
        #: ky − 1 − cy samples back and cy forward)
        self.pad = ((ky - 1 - self.centre[0], self.centre[0]), (kx - 1 - self.centre[1], self.centre[1]))
        self._plans: dict = {}

    # ------------------------------------------------------------------------------------------ sizes
    @property
    def shape(self) -> tuple[int, int]:
        return tuple(self.kernel.shape)  # type: ignore[return-value]

    def effective_radius(self, energy: float = DEFAULT_BORDER_ENERGY) -> int:
        """Smallest integer radius (pixels, around the centre sample) that encloses ``energy`` of the
        kernel's sum; at most the kernel's half-size."""
        if not 0.0 < energy <= 1.0:
            raise ValueError(f"energy must be in (0, 1], got {energy}")
        ky, kx = self.kernel.shape
        yy, xx = np.mgrid[0:ky, 0:kx]
        r = np.hypot(yy - self.centre[0], xx - self.centre[1])
        rmax = int(np.ceil(r.max()))
        for rad in range(rmax + 1):
            if float(self.kernel[r <= rad + 1e-9].sum()) >= energy - 1e-12:
                return rad
        return rmax

    @property
    def norm2(self) -> float:
        """Σ K² (the squared norm of the kernel)."""
        return float(np.sum(self.kernel ** 2))

    # ------------------------------------------------------------------------------------------ plans
    def _plan(self, ny: int, nx: int, squared: bool = False) -> dict:
        key = (ny, nx, squared)
        plan = self._plans.get(key)
        if plan is not None:
            return plan
        (ylo, yhi), (xlo, xhi) = self.pad
        npy, npx = ny + ylo + yhi, nx + xlo + xhi          # the extended (padded) grid
        fy, fx = _next_len(npy), _next_len(npx)            # FFT grid: no wrap-around into the valid part
        k = self.kernel ** 2 if squared else self.kernel
        kp = np.zeros((fy, fx))
        ky, kx = k.shape
        iy = (np.arange(ky) - self.centre[0]) % fy
        ix = (np.arange(kx) - self.centre[1]) % fx
        kp[np.ix_(iy, ix)] = k
        kf = _fft.rfft2(kp)
        plan = {"npy": npy, "npx": npx, "fy": fy, "fx": fx, "kf": kf, "kfc": np.conj(kf),
                "iy": _mirror_index(ny, ylo, yhi), "ix": _mirror_index(nx, xlo, xhi)}
        self._plans[key] = plan
        return plan

    # ------------------------------------------------------------------------------------------ operators
    def apply(self, cube: np.ndarray) -> np.ndarray:
        """P x: every image ``cube[..., :, :]`` (the last two axes are y, x) convolved with the kernel,
        symmetric extension at the edges; same shape as ``cube``. Images go through the FFTs
        :data:`CHUNK` at a time (bounded temporaries)."""
        def one(part, p, ny, nx, ylo, xlo):
            z = np.zeros((part.shape[0], p["fy"], p["fx"]))
            # E x on the padded grid, zeros beyond it
            z[:, :p["npy"], :p["npx"]] = np.take(np.take(part, p["iy"], axis=1), p["ix"], axis=2)
            f = _fft.rfft2(z)
            f *= p["kf"]
            return _fft.irfft2(f, s=(p["fy"], p["fx"]))[:, ylo:ylo + ny, xlo:xlo + nx]

        return self._by_chunks(cube, False, one)

    def adjoint(self, cube: np.ndarray, squared: bool = False) -> np.ndarray:
        """Pᵀ y: the correlation with the kernel (convolution with the flipped kernel) of the data
        zero-embedded in the padded grid, folded back onto the image by the adjoint of the symmetric
        extension. ``squared``: the same with the kernel K² (Σ_q K(q − p)² y_q, the preconditioner's
        weights)."""
        def one(part, p, ny, nx, ylo, xlo):
            z = np.zeros((part.shape[0], p["fy"], p["fx"]))
            z[:, ylo:ylo + ny, xlo:xlo + nx] = part
            f = _fft.rfft2(z)
            f *= p["kfc"]
            g = _fft.irfft2(f, s=(p["fy"], p["fx"]))[:, :p["npy"], :p["npx"]]
            return _fold(_fold(g, p["iy"], ny, ylo, axis=1), p["ix"], nx, xlo, axis=2)

        return self._by_chunks(cube, squared, one)

    def _by_chunks(self, cube: np.ndarray, squared: bool, one) -> np.ndarray:
        """``one(images, plan, ny, nx, ylo, xlo)`` over the images of ``cube`` (last two axes y, x),
        :data:`CHUNK` at a time; same shape as ``cube``."""
        x = np.asarray(cube, dtype=np.float64)
        ny, nx = x.shape[-2:]
        p = self._plan(ny, nx, squared)
        xs = x.reshape((-1, ny, nx))
        out = np.empty(xs.shape)
        (ylo, _), (xlo, _) = self.pad
        for s in range(0, xs.shape[0], CHUNK):
            out[s:s + CHUNK] = one(xs[s:s + CHUNK], p, ny, nx, ylo, xlo)
        return out.reshape(x.shape[:-2] + (ny, nx))

    def weights_spread(self, w: np.ndarray) -> np.ndarray:
        """Σ_q K(q − p)² w_q for every pixel p (channels on the leading axes): the data weights seen
        by one pixel through the kernel, i.e. the diagonal blocks of PᵀWP (exact away from the edges)."""
        return self.adjoint(w, squared=True)

    def __repr__(self) -> str:
        return f"SpatialPSF(shape={self.shape}, r98={self.effective_radius()})"


def _mirror_index(n: int, lo: int, hi: int) -> np.ndarray:
    """Index into the image (0..n−1) of every sample of the symmetric extension by ``lo`` samples before
    and ``hi`` after (repeated reflection where the extension is wider than the image)."""
    j = np.arange(-lo, n + hi)
    period = 2 * n
    j = np.mod(j, period)
    return np.where(j < n, j, period - 1 - j)


def _fold(g: np.ndarray, idx: np.ndarray, n: int, lo: int, axis: int) -> np.ndarray:
    """Adjoint of ``take(x, idx, axis)`` for an extension whose samples ``lo .. lo + n − 1`` are the image
    itself: every slice of ``g`` along ``axis`` added to the image slice it copies."""
    g = np.moveaxis(g, axis, 0)
    out = np.array(g[lo:lo + n], copy=True)
    for s in range(idx.size):
        if not lo <= s < lo + n:
            out[idx[s]] += g[s]
    return np.moveaxis(out, 0, axis)
