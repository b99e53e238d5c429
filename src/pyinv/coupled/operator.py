"""The linearised coupled problem of one tile and its matrix-free solution by preconditioned conjugate
gradients.

Notation (one tile of ny × nx pixels p, m node parameters per pixel, channels c = (Stokes, λ) with a
nonzero weight somewhere in the tile):

* B = blockdiag(J_p), J_p (nchan, m) the node Jacobian of pixel p: B v puts J_p v_p into pixel p of a
  data cube (nchan, ny, nx);
* P the spatial convolution of every channel (:class:`pyinv.coupled.psf.SpatialPSF`);
* W = diag(w_{c,p}) the data weights (1/σ², zero where masked);
* the Jacobian of the coupled model P S(θ) is J = P B (van Noort 2012, A&A 548, A5, eq. 6–9;
  de la Cruz Rodríguez 2019, A&A 631, A153, §2.2: the per-pixel response functions, degraded by the
  telescope PSF).

The Levenberg–Marquardt step solves (Jᵀ W J + λ D) δ = Jᵀ W r, r = O − P S, never forming Jᵀ W J:
A v = Bᵀ Pᵀ W P B v costs one forward and one adjoint convolution of the cube. D is the diagonal of
the pixel blocks H_p = J_pᵀ diag(k_p) J_p, k_{c,p} = Σ_q K(q − p)² w_{c,q}: H_p is exactly the (p, p) block
of Jᵀ W J away from the tile's edges (the block couples the m parameters of one pixel through every data
point its kernel reaches). The preconditioner is M = blockdiag(H_p + λ D_p), inverted pixel by pixel
(symmetric eigen-decomposition, null directions left out).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .psf import SpatialPSF

__all__ = ["CoupledOperator", "pcg", "CGInfo", "block_inverse"]


class CoupledOperator:
    """J = P B and the normal operator of one tile.

    Parameters
    ----------
    jac : ndarray (npix, nchan, m)
        Per-pixel Jacobians (pixels in row-major order of the tile, channels as the data cube's first
        axis); float32 or float64 (products accumulate in float64).
    weights : ndarray (nchan, ny, nx)
        Data weights (≥ 0).
    psf : SpatialPSF
    """

    def __init__(self, jac: np.ndarray, weights: np.ndarray, psf: SpatialPSF):
        self.jac = jac
        self.w = np.asarray(weights, dtype=np.float64)
        self.psf = psf
        self.nchan, self.ny, self.nx = self.w.shape
        self.npix, nchan, self.m = jac.shape
        if nchan != self.nchan or self.npix != self.ny * self.nx:
            raise ValueError(f"Jacobians {jac.shape} do not match the weights {self.w.shape}")
        self._spread = None

    # ------------------------------------------------------------------------------------------ blocks
    def spread_weights(self) -> np.ndarray:
        """k_{c,p} = Σ_q K(q − p)² w_{c,q} (nchan, ny, nx), cached."""
        if self._spread is None:
            self._spread = np.maximum(self.psf.weights_spread(self.w), 0.0)
        return self._spread

    def pixel_blocks(self, chunk: int = 512) -> np.ndarray:
        """H_p = J_pᵀ diag(k_p) J_p for every pixel: (npix, m, m) (in the Jacobians' precision, pixels in
        chunks: no copy of the whole Jacobian block)."""
        k = self.spread_weights().reshape(self.nchan, self.npix).T          # (npix, nchan)
        out = np.empty((self.npix, self.m, self.m))
        for s in range(0, self.npix, chunk):
            jj = self.jac[s:s + chunk]
            jw = jj * k[s:s + chunk, :, None].astype(self.jac.dtype)
            out[s:s + chunk] = np.matmul(jw.transpose(0, 2, 1), jj)
        return out

    # ------------------------------------------------------------------------------------------ products
    def expand(self, v: np.ndarray) -> np.ndarray:
        """B v: (npix, m) → data cube (nchan, ny, nx) (products in the Jacobians' precision)."""
        v = np.asarray(v).reshape(self.npix, self.m, 1).astype(self.jac.dtype, copy=False)
        out = np.matmul(self.jac, v)[:, :, 0].T.astype(np.float64)
        return out.reshape(self.nchan, self.ny, self.nx)

    def reduce(self, g: np.ndarray) -> np.ndarray:
        """Bᵀ g: data cube → (npix, m)."""
        g = np.ascontiguousarray(np.asarray(g).reshape(self.nchan, self.npix).T, dtype=self.jac.dtype)
        return np.matmul(g[:, None, :], self.jac)[:, 0, :].astype(np.float64)

    def apply_j(self, v: np.ndarray) -> np.ndarray:
        """J v = P B v (nchan, ny, nx)."""
        return self.psf.apply(self.expand(v))

    def apply_jt(self, y: np.ndarray) -> np.ndarray:
        """Jᵀ y = Bᵀ Pᵀ y (npix, m)."""
        return self.reduce(self.psf.adjoint(y))

    def gradient(self, residual: np.ndarray) -> np.ndarray:
        """Jᵀ W r (npix, m) of a residual cube r = O − P S."""
        return self.apply_jt(self.w * residual)

    def normal(self, v: np.ndarray) -> np.ndarray:
        """Jᵀ W J v (npix, m)."""
        return self.apply_jt(self.w * self.apply_j(v))

    def quadratic(self, v: np.ndarray) -> float:
        """vᵀ Jᵀ W J v = ‖W^½ J v‖²."""
        q = self.apply_j(v)
        return float(np.sum(self.w * q * q))

    # ------------------------------------------------------------------------------------------ explicit
    def explicit_jacobian(self) -> np.ndarray:
        """The dense J (nchan·ny·nx, npix·m), column by column (tests and tiny tiles only)."""
        n = self.npix * self.m
        out = np.zeros((self.nchan * self.npix, n))
        e = np.zeros(n)
        for j in range(n):
            e[j] = 1.0
            out[:, j] = self.apply_j(e).ravel()
            e[j] = 0.0
        return out

    def explicit_normal(self) -> np.ndarray:
        """The dense Jᵀ W J (npix·m, npix·m) (tests and tiny tiles only)."""
        jd = self.explicit_jacobian()
        return jd.T @ (self.w.ravel()[:, None] * jd)


def block_inverse(blocks: np.ndarray, rcond: float = 1e-12) -> np.ndarray:
    """Pseudo-inverses of symmetric positive semi-definite blocks (npix, m, m): eigenvalues below
    ``rcond`` × the block's largest are dropped."""
    w, v = np.linalg.eigh(blocks)
    top = np.max(w, axis=1, keepdims=True)
    keep = w > rcond * np.maximum(top, 1e-300)
    inv = np.where(keep, 1.0 / np.where(keep, w, 1.0), 0.0)
    return np.einsum("pij,pj,pkj->pik", v, inv, v, optimize=True)


@dataclass
class CGInfo:
    """Diagnostics of one :func:`pcg` solve: iterations, the final relative residual ‖r‖_M⁻¹ / ‖b‖_M⁻¹,
    and whether the tolerance was reached."""

    iterations: int
    residual: float
    converged: bool


def pcg(op: CoupledOperator, b: np.ndarray, damping: np.ndarray, precond: np.ndarray, *, tol: float = 0.1,
        maxiter: int = 40) -> tuple[np.ndarray, CGInfo]:
    """Solve (Jᵀ W J + diag(damping)) δ = b by conjugate gradients preconditioned with the block inverses
    ``precond (npix, m, m)`` (of H_p + diag(damping_p)), from δ = 0.

    The iteration stops when ‖r_k‖_{M⁻¹} ≤ ``tol`` ‖b‖_{M⁻¹} (an inexact Newton step: the LM outer loop
    re-linearises anyway, and truncated CG damps the poorly constrained high spatial frequencies) or
    after ``maxiter`` iterations, or on a direction of non-positive curvature (round-off only: the
    operator is positive semi-definite)."""
    b = np.asarray(b, dtype=np.float64).reshape(op.npix, op.m)
    dmp = np.asarray(damping, dtype=np.float64).reshape(op.npix, op.m)
    x = np.zeros_like(b)
    r = b.copy()
    z = np.einsum("pij,pj->pi", precond, r)
    rz = float(np.sum(r * z))
    if not rz > 0:
        return x, CGInfo(0, 0.0, True)
    rz0 = rz
    p = z.copy()
    k = 0
    rel = 1.0
    while k < maxiter:
        q = op.normal(p) + dmp * p
        pq = float(np.sum(p * q))
        if not pq > 0:
            break
        alpha = rz / pq
        x += alpha * p
        r -= alpha * q
        k += 1
        z = np.einsum("pij,pj->pi", precond, r)
        rz_new = float(np.sum(r * z))
        rel = float(np.sqrt(max(rz_new, 0.0) / rz0))
        if rel <= tol:
            return x, CGInfo(k, rel, True)
        p = z + (rz_new / rz) * p
        rz = rz_new
    return x, CGInfo(k, rel, rel <= tol)
