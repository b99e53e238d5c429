"""Seeded recipes that make the catalogue's CNN models (:mod:`pyinv.cnn.catalogue`).

A recipe fixes everything a model depends on: the instrument's wavelength sampling and spectral PSF, the
training set (how many pixels, from which generator families, the ranges of μ and noise, the seed), and
the training settings. ``pyinv cnn train --recipe NAME`` runs it; the same recipe and code give the same
training set shard by shard (every shard is seeded by ``(recipe.seed, shard number)``), so a set can be
grown or resumed across sessions.

Training-set families (:mod:`pyinv.cnn.trainingdata`), targets from the generator's truth:

* ``"pixels"``: independent random atmospheres (:func:`pyinv.cnn.random_atmospheres`): quiet Sun,
  plage, penumbra and umbra temperature stratifications (mixed with each other), 0–4 kG in every
  orientation (both polarities), flows with gradients, vmic, macro;
* ``"sunspot"``: spatially structured maps of :func:`pyinv.synthetic.generate_map` (umbra, penumbra with
  Evershed flow, plage of both polarities, quiet Sun);

each shard with one μ drawn uniformly from ``mu_range`` and one noise σ drawn log-uniformly from
``noise_range`` (in units of the quiet-Sun continuum). The bipolar emerging-region generator
(:func:`pyinv.synthetic.generate_emerging_region`) is never used by a recipe: it is kept for transfer tests.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["Recipe", "RECIPES", "get_recipe"]


@dataclass(frozen=True)
class Recipe:
    """How a catalogue model is made.

    Attributes
    ----------
    name, instrument : str
    regions : tuple of (indices, start mÅ, step mÅ, end mÅ)
        The wavelength grid (:meth:`pyinv.WavelengthGrid.from_regions`, packaged line list indices).
    psf_fwhm_mA : float or None
        Gaussian spectral PSF FWHM [mÅ] (None = none).
    pixels : int
        Training pixels (rounded up to whole shards).
    shard_pixels : int
        Pixels per ``"pixels"`` shard (a ``"sunspot"`` shard holds one map of ``map_size``²).
    sunspot_fraction : float
        Fraction of shards from the sunspot-map generator; the rest are random pixels.
    map_size : int
    mu_range, noise_range : (float, float)
    seed : int
    epochs, batch_size, learning_rate, patience, validation :
        Training settings (AdaMax).
    filters : three ints
    mu_input : bool
        μ as a network input (one model for the whole μ range).
    """

    name: str
    instrument: str
    regions: tuple
    psf_fwhm_mA: float | None
    seed: int
    pixels: int = 120_000
    shard_pixels: int = 1024
    sunspot_fraction: float = 0.25
    map_size: int = 24
    mu_range: tuple = (0.3, 1.0)
    noise_range: tuple = (3e-4, 3e-3)
    epochs: int = 200
    batch_size: int = 64
    learning_rate: float = 2e-3
    patience: int = 20
    validation: float = 0.1
    filters: tuple = (32, 32, 16)
    mu_input: bool = True

    def lines(self):
        from ..defaults import default_lines
        return default_lines()

    def grid(self, lines=None):
        """The recipe's :class:`pyinv.WavelengthGrid`."""
        from ..lines import WavelengthGrid
        return WavelengthGrid.from_regions(list(self.regions), self.lines() if lines is None else lines)

    def psf(self) -> np.ndarray | None:
        """The spectral PSF as (2, n) (offset mÅ, response), or None."""
        if self.psf_fwhm_mA is None:
            return None
        from ..synthetic import hinode_psf
        return hinode_psf(float(self.psf_fwhm_mA))

    def data_fingerprint(self) -> dict:
        """The fields the training set depends on (a resumed set must match them)."""
        d = dataclasses.asdict(self)
        keep = ("name", "regions", "psf_fwhm_mA", "seed", "shard_pixels", "sunspot_fraction", "map_size",
                "mu_range", "noise_range")
        return {k: _plain(d[k]) for k in keep}

    def with_(self, **changes: Any) -> "Recipe":
        """A copy with some fields changed (e.g. fewer pixels for a quick run)."""
        return dataclasses.replace(self, **changes)


def _plain(v):
    if isinstance(v, tuple):
        return [_plain(x) for x in v]
    return v


RECIPES: dict[str, Recipe] = {
    "hinode-sp-fe6301": Recipe(
        name="hinode-sp-fe6301", instrument="Hinode SP",
        regions=(("1,2", -615.9, 21.549, -615.9 + 111 * 21.549),), psf_fwhm_mA=25.2, seed=6301),
    "gris-fe15648": Recipe(
        name="gris-fe15648", instrument="GREGOR/GRIS",
        regions=(("3", -1000.0, 40.0, 1000.0), ("4", -1000.0, 40.0, 1000.0)), psf_fwhm_mA=None, seed=15648),
}


def get_recipe(name: str) -> Recipe:
    """The recipe called ``name`` (ValueError listing the known ones otherwise)."""
    if name not in RECIPES:
        raise ValueError(f"unknown recipe {name!r}; known: {', '.join(RECIPES)}")
    return RECIPES[name]
