"""Initial-guess strategies for map inversions: the common types and the registry.

A strategy turns the observed map into a :class:`GuessSet`: a small *table* of guess atmospheres plus,
for every pixel, the rows of that table to start from. One row per pixel is an ordinary inversion;
several rows per pixel (``"multistart"``) make the map inversion (:mod:`pyinv.maps`) invert the pixel from each of them and
keep the lowest χ². The table form keeps ``"single"`` (one row for the whole map) and ``"cluster"``
(a few rows) cheap and lets ``"previous"`` / ``"cnn"`` give one row per pixel.

Adding a strategy (this is how ``"cnn"`` plugs in)::

    from pyinv.init import InitStrategy, GuessSet, register_init

    class MyInit(InitStrategy):
        name = "mine"
        def __init__(self, guess=None, **options): ...
        def initial_guesses(self, ctx):          # ctx: InitContext
            ...
            return GuessSet.from_atmospheres(list_of_atmospheres, index)

    register_init("mine", MyInit)               # or a lazy "module:attribute" string

``pyinv.invert(..., init="mine", guess=obj)`` then calls ``MyInit(obj)`` (``MyInit()`` when ``guess`` is
None) and its :meth:`InitStrategy.initial_guesses`.

**Streamed starts.** A strategy whose per-pixel starts are expensive to make (``"cnn"``: a network, a node
interpolation and a hydrostatic equilibrium per pixel) need not make them for the whole map in the calling
process: its GuessSet carries a :class:`StartStream` (``GuessSet(..., stream=...)``, the table then holds
one template row), and the pixels' starts are made chunk by chunk where the pixels are inverted — in the
pool workers from the cube they memory-map, in the tasks of other executors, chunk by chunk with
``executor="serial"``. The calling process's memory then does not grow with the map.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np

from ..atmosphere import Atmosphere

__all__ = ["GuessSet", "InitContext", "InitStrategy", "StartStream", "register_init", "get_init",
           "available_inits", "as_atmosphere"]


@dataclass
class InitContext:
    """What a strategy may look at.

    Attributes
    ----------
    cube : ndarray (ny, nx, 4, nλ)
        Observed Stokes profiles (canonical axis order), normalised to the HSRA continuum.
    valid : ndarray of bool (ny, nx)
        Pixels that will be inverted (finite and not masked). Strategies may ignore the others.
    lines, grid, config :
        The inversion's LineList, WavelengthGrid and InversionConfig.
    mu, psf, abundances :
        As given to :func:`pyinv.invert` (``mu`` already resolved from the config when None).
    """

    cube: np.ndarray
    valid: np.ndarray
    lines: Any
    grid: Any
    config: Any
    mu: float = 1.0
    psf: Any = None
    abundances: Any = None

    @property
    def shape(self) -> tuple[int, int]:
        return int(self.cube.shape[0]), int(self.cube.shape[1])


class StartStream:
    """Per-pixel start models made where the pixels are inverted, one chunk at a time (module docstring).

    A subclass must be picklable (it travels to every worker, and with every task of a dask or MPI
    executor), and its starts of a pixel must depend on that pixel (its profiles, its raster index) and on
    the object alone — not on which other pixels share its chunk: a resumed run and a run with another
    chunking must start every pixel from the same model. To change some pixels' starts, wrap the stream
    (e.g. ``gs.stream = MyStream(gs.stream)``) rather than the table, which holds only the template row.
    """

    #: float32 values per pixel kept in the result store beside the pixel's result (e.g. the CNN's raw
    #: outputs, for clustering the map afterwards); they survive in a checkpoint like the results.
    naux: int = 0

    def starts(self, stokes: np.ndarray, pixels: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """Starts of the pixels whose profiles are ``stokes`` (n, 4, nλ) and raster indices ``pixels`` (n,)
        (``y * nx + x``): their models (n, ndep, 11), the
        headers (n, 3) (macroturbulence [km/s], filling factor, stray light [%]) and the auxiliary values
        (n, ``naux``) float32 (None when ``naux`` is 0)."""
        raise NotImplementedError  # pragma: no cover - abstract

    def fingerprint(self) -> Any:
        """What the starts depend on besides the pixels' profiles (hashed into a checkpoint's fingerprint:
        a resume with another model or other options is refused)."""
        raise NotImplementedError  # pragma: no cover - abstract

    def collect(self, aux: np.ndarray | None, valid: np.ndarray) -> dict:
        """Called in the calling process once every pixel is done, with the store's auxiliary values (npix,
        ``naux``) (a memory map: read it in blocks) and the inverted pixels ``valid`` (ny, nx). Returns a dict
        with optional ``labels`` (ny, nx) and ``info`` (merged into the GuessSet's info)."""
        return {}


@dataclass
class GuessSet:
    """Initial atmospheres of a map as a table plus per-pixel row indices.

    Attributes
    ----------
    table : ndarray (nmod, ndep, 11)
        Guess models in SIR's column order (:data:`pyinv.atmosphere.COLUMNS`), SIR units.
    header : ndarray (nmod, 3)
        macroturbulence [km/s], filling factor, stray light [%] of each model.
    index : ndarray of int32 (ny*nx, nstart)
        Rows of ``table`` each pixel (raster order) starts from; ``nstart`` > 1 = multistart. A
        negative entry means "no start" (allowed for trailing starts of a pixel).
    labels : ndarray (ny, nx) or None
        Optional per-pixel labels (e.g. cluster numbers), kept in the result's provenance.
    info : dict
        Free-form description (recorded in the result's provenance).
    stream : StartStream or None
        Starts made chunk by chunk where the pixels are inverted (module docstring). ``table`` and ``header``
        then hold one template row (its log τ grid and header are what the map's checks see; every pixel
        starts from its streamed model instead) and ``index`` is all zeros with one start per pixel.
    """

    table: np.ndarray
    header: np.ndarray
    index: np.ndarray
    labels: np.ndarray | None = None
    info: dict = field(default_factory=dict)
    stream: Any = None

    def __post_init__(self) -> None:
        self.table = np.ascontiguousarray(self.table, dtype=np.float64)
        self.header = np.ascontiguousarray(self.header, dtype=np.float64)
        idx = np.asarray(self.index)
        if idx.ndim == 1:
            idx = idx[:, None]
        self.index = np.ascontiguousarray(idx, dtype=np.int32)
        if self.table.ndim != 3 or self.table.shape[-1] != 11:
            raise ValueError(f"GuessSet.table must be (nmod, ndep, 11), got {self.table.shape}")
        if self.header.shape != (self.table.shape[0], 3):
            raise ValueError(f"GuessSet.header must be ({self.table.shape[0]}, 3), got {self.header.shape}")
        if self.index.ndim != 2 or self.index.shape[1] < 1:
            raise ValueError(f"GuessSet.index must be (npix, nstart), got {self.index.shape}")
        if self.index.size and (self.index.max() >= self.table.shape[0]):
            raise ValueError("GuessSet.index refers to a row beyond the table")
        if self.index.size and (self.index[:, 0] < 0).any():
            raise ValueError("GuessSet.index: every pixel needs a first start (column 0 >= 0)")
        if self.stream is not None and (self.index.shape[1] != 1 or self.table.shape[0] != 1):
            raise ValueError("GuessSet with a stream: one template row and one start per pixel")

    @property
    def nmodels(self) -> int:
        return int(self.table.shape[0])

    @property
    def ndep(self) -> int:
        return int(self.table.shape[1])

    @property
    def nstart(self) -> int:
        return int(self.index.shape[1])

    @classmethod
    def from_atmospheres(cls, models: Sequence[Atmosphere] | Atmosphere, index: Any,
                         labels: np.ndarray | None = None, info: dict | None = None) -> "GuessSet":
        """Build from a list (or stack) of :class:`Atmosphere` models and per-pixel row indices."""
        models = list(models) if not isinstance(models, Atmosphere) or models.stacked else [models]
        if not models:
            raise ValueError("at least one guess model is needed")
        nd = {m.ndep for m in models}
        if len(nd) != 1:
            raise ValueError(f"all guess models must have the same number of depth points, got {sorted(nd)}")
        table = np.stack([m.to_array() for m in models])
        header = np.array([[float(m.macro), float(m.filling), float(m.stray)] for m in models])
        return cls(table, header, index, labels=labels, info=dict(info or {}))

    def model(self, row: int) -> Atmosphere:
        """Row ``row`` of the table as an Atmosphere."""
        m, f, s = self.header[row]
        return Atmosphere.from_array(self.table[row], macro=m, filling=f, stray=s)


class InitStrategy:
    """Base class of initialisation strategies (see the module docstring)."""

    #: Registry name (informational).
    name: str = "custom"
    #: Whether :func:`pyinv.invert` may replace the start's B, γ, φ by the field read off each pixel's profiles
    #: (``invert_pixel(magnetic_start=...)``, issue 17). Only :class:`pyinv.init.Single` does; starts that are
    #: data-driven or deliberately varied (previous, multistart, cluster, cnn) are used as given.
    profile_field_start: bool = False

    def initial_guesses(self, ctx: InitContext) -> GuessSet:  # pragma: no cover - abstract
        raise NotImplementedError

    def describe(self) -> str:
        """One line recorded in the result's provenance."""
        return self.name

    def prepare_config(self, config: Any, mu: float | None = None) -> Any:
        """The configuration the map is inverted with (called by :func:`pyinv.invert` before the guesses;
        default: ``config`` unchanged; None is refused). A strategy may adapt it (``init="cnn"`` runs one
        cycle with the last cycle's nodes) and must then say so in its guesses' ``info``."""
        if config is None:
            raise ValueError(f"init={self.name!r} needs an InversionConfig (config=None is only allowed with "
                             f"init='cnn', which then uses pyinv.cnn.assisted_config())")
        return config

    def finish(self, result: Any, rerun: Callable[..., Any]) -> Any:
        """Post-process the map's result (default: unchanged). ``rerun(mask, config, init=..., guess=...)``
        inverts the pixels where ``mask`` is True again with the same data and executor and returns their
        :class:`pyinv.InversionResult` (``init="cnn"`` uses it for its fallback)."""
        return result


def as_atmosphere(obj: Any, what: str = "guess") -> Atmosphere:
    """An :class:`Atmosphere` from an Atmosphere, a SIR .mod path or an array (ndep, 8|11)."""
    import os

    if isinstance(obj, Atmosphere):
        return obj
    if isinstance(obj, (str, os.PathLike)):
        from ..io.sir import read_sir_model
        return read_sir_model(obj)
    a = np.asarray(obj, dtype=np.float64)
    if a.ndim == 2 and a.shape[-1] in (8, 11):
        return Atmosphere.from_array(a)
    raise ValueError(f"{what}: expected an Atmosphere, a SIR .mod path or an array (ndep, 8|11), "
                     f"got {type(obj).__name__}")


# ---------------------------------------------------------------------------------------------- registry
_REGISTRY: dict[str, Callable[..., InitStrategy] | str] = {}


def register_init(name: str, factory: Callable[..., InitStrategy] | str, *, replace: bool = False) -> None:
    """Register an initialisation strategy under ``name``.

    Parameters
    ----------
    name : str
        What users pass as ``init=``.
    factory : callable or "module:attribute"
        Called as ``factory()`` or ``factory(guess)`` (when ``pyinv.invert`` got a ``guess``); returns an
        :class:`InitStrategy`. A string is imported on first use (keeps optional dependencies such as
        torch out of ``import pyinv``).
    replace : bool
        Allow overriding an existing name.
    """
    key = name.lower()
    if key in _REGISTRY and not replace:
        raise ValueError(f"init strategy {name!r} is already registered")
    _REGISTRY[key] = factory


def available_inits() -> list[str]:
    """Registered strategy names."""
    return sorted(_REGISTRY)


def _load_factory(key: str) -> Callable[..., InitStrategy]:
    fac = _REGISTRY[key]
    if isinstance(fac, str):
        mod, _, attr = fac.partition(":")
        try:
            fac = getattr(importlib.import_module(mod), attr)
        except (ImportError, AttributeError) as exc:
            raise ValueError(f"init={key!r} is not available in this installation ({fac}: {exc})") from exc
        _REGISTRY[key] = fac
    return fac


def get_init(init: Any = "single", guess: Any = None) -> InitStrategy:
    """Resolve ``pyinv.invert``'s ``init``/``guess`` pair to a strategy object.

    ``init`` is a registered name (``"single"``, ``"previous"``, ``"multistart"``, ``"cluster"``,
    ``"cnn"``, ...) or an :class:`InitStrategy` instance (then ``guess`` must be None).
    """
    if isinstance(init, InitStrategy) or hasattr(init, "initial_guesses"):
        if guess is not None:
            raise ValueError("give guess= only with an init strategy name; an InitStrategy object carries "
                             "its own guesses")
        return init
    if not isinstance(init, str):
        raise ValueError(f"init must be a strategy name ({', '.join(available_inits())}) or an InitStrategy, "
                         f"got {type(init).__name__}")
    key = init.lower()
    if key not in _REGISTRY:
        raise ValueError(f"unknown init strategy {init!r}; available: {', '.join(available_inits())}")
    fac = _load_factory(key)
    return fac() if guess is None else fac(guess)
