"""The catalogue of pretrained CNN models: one entry per instrument and line pair, each made by a
committed, seeded recipe (:mod:`pyinv.cnn.recipes`) and stored as a compact ``.npz`` with its metadata.

=====================  ===================================================  =============================
name                   data                                                 file
=====================  ===================================================  =============================
``hinode-sp-fe6301``   Hinode SP Fe I 6301.5/6302.5 Å, 112 points of        packaged
                       21.549 mÅ, 25.2 mÅ Gaussian spectral PSF
``gris-fe15648``       GREGOR/GRIS Fe I 15648.5/15652.9 Å, ±1 Å windows     packaged
                       around each line at 40 mÅ (2 × 51 points), no
                       spectral PSF
=====================  ===================================================  =============================

:func:`pretrained` looks for ``<name>.npz`` in, in this order: the folder named by the environment
variable ``PYINV_CNN_DIR``, the package's data (models shipped with pyinv), and the user folder
``~/.cache/pyinv/cnn`` (where ``pyinv cnn train --recipe NAME`` writes by default).
"""
from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from .model import CNNModel

__all__ = ["CATALOGUE", "CatalogueEntry", "pretrained", "model_path", "catalogue_names", "user_dir", "describe"]


@dataclass(frozen=True)
class CatalogueEntry:
    """One catalogue model: its name, instrument, lines, the packaged file name (if shipped) and the recipe
    that makes it (:func:`pyinv.cnn.recipes.get_recipe`)."""

    name: str
    instrument: str
    lines: str
    packaged: str | None
    recipe: str
    description: str
    #: This model's defaults of the assisted cycle's ``max_iterations`` / ``rtol`` (:class:`pyinv.cnn.CNNInit`
    #: given None), where they differ from CNNInit's: how far its starts are from a converged fit, measured
    #: with benchmarks/tune_assisted.py (benchmarks/results/assisted_tuning.txt).
    assisted_lm: Mapping[str, float] = field(default_factory=dict)


CATALOGUE: dict[str, CatalogueEntry] = {
    "hinode-sp-fe6301": CatalogueEntry(
        "hinode-sp-fe6301", "Hinode SP", "Fe I 6301.5 / 6302.5 A (112 points of 21.549 mA)",
        "cnn_hinode_fe6301.npz", "hinode-sp-fe6301",
        "Hinode SP spectropolarimeter, both Fe I lines in one 112-point region, 25.2 mA Gaussian spectral PSF"),
    "gris-fe15648": CatalogueEntry(
        "gris-fe15648", "GREGOR/GRIS", "Fe I 15648.5 / 15652.9 A (+-1 A at 40 mA, 2 x 51 points)",
        "cnn_gris_fe15648.npz", "gris-fe15648",
        "GREGOR Infrared Spectrograph, Gafeira et al. (2021) Table A.1 sampling, no spectral PSF",
        assisted_lm={"max_iterations": 4, "rtol": 0.1}),
}

#: Default model of ``init="cnn"`` and :func:`pyinv.cnn.predict`.
DEFAULT = "hinode-sp-fe6301"


def catalogue_names() -> list[str]:
    """Names of the catalogue's models."""
    return list(CATALOGUE)


def user_dir() -> Path:
    """Folder of user-trained catalogue models (``~/.cache/pyinv/cnn``)."""
    return Path.home() / ".cache" / "pyinv" / "cnn"


def _entry(name: str | None) -> CatalogueEntry:
    key = DEFAULT if name is None else str(name)
    if key not in CATALOGUE:
        raise ValueError(f"unknown CNN model {name!r}; the catalogue has {', '.join(CATALOGUE)}")
    return CATALOGUE[key]


def _candidates(e: CatalogueEntry) -> list[tuple[str, Path]]:
    out = []
    env = os.environ.get("PYINV_CNN_DIR")
    if env:
        out.append(("PYINV_CNN_DIR", Path(env) / f"{e.name}.npz"))
    if e.packaged:
        from ..defaults import data_path
        try:
            out.append(("packaged", Path(data_path(e.packaged))))
        except FileNotFoundError:
            pass
    out.append(("user", user_dir() / f"{e.name}.npz"))
    return out


def model_path(name: str | None = None) -> Path:
    """The file of catalogue model ``name`` (default ``hinode-sp-fe6301``).

    Raises
    ------
    FileNotFoundError
        The model is neither packaged nor trained yet (the message gives the command that makes it).
    """
    e = _entry(name)
    for _, p in _candidates(e):
        if p.is_file():
            return p
    raise FileNotFoundError(f"CNN model {e.name!r} ({e.instrument}, {e.lines}) is not installed; make it with "
                            f"`pyinv cnn train --recipe {e.recipe}` (writes {user_dir() / (e.name + '.npz')})")


def pretrained(name: str | None = None, *, grid=None, lines=None):
    """A catalogue model as :class:`~pyinv.cnn.CNNModel` (numpy only; no torch needed).

    Parameters
    ----------
    name : str, optional
        Catalogue name (:func:`catalogue_names`); default ``"hinode-sp-fe6301"``.
    grid, lines : optional
        Checked against the model (ValueError when the data do not fit).
    """
    m = CNNModel.load(model_path(name), grid=grid, lines=lines)
    m.meta.setdefault("name", _entry(name).name)
    return m


def describe() -> list[dict]:
    """One dict per catalogue model: name, instrument, lines, recipe, where it is found (or None), and for
    an installed model its μ handling and training pixels."""
    rows = []
    for e in CATALOGUE.values():
        row = {"name": e.name, "instrument": e.instrument, "lines": e.lines, "recipe": e.recipe, "file": None,
               "source": None}
        for src, p in _candidates(e):
            if p.is_file():
                row["file"], row["source"] = str(p), src
                try:
                    m = CNNModel.load(p)
                    prov = m.provenance
                    row.update(mu_input=m.mu_input, mu_range=m.meta.get("mu_range"),
                               training_pixels=prov.get("training_pixels"), recipe_used=prov.get("recipe"))
                except (ValueError, OSError) as exc:
                    row["error"] = str(exc)
                break
        rows.append(row)
    return rows
