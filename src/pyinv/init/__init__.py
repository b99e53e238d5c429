"""Initial-guess strategies of :func:`pyinv.invert` (``init=``): ``"single"``, ``"previous"``,
``"multistart"``, ``"cluster"`` and, when installed, ``"cnn"`` (see :mod:`pyinv.init.base` for how a
strategy plugs in)."""
from __future__ import annotations

from .base import (GuessSet, InitContext, InitStrategy, StartStream, as_atmosphere, available_inits,  # noqa: F401
                   get_init, register_init)
from .strategies import Cluster, Multistart, Previous, Single, kmeans, library_prototypes, stokes_features  # noqa: F401

register_init("single", Single)
register_init("previous", Previous)
register_init("multistart", Multistart)
register_init("cluster", Cluster)
# The CNN initialisation (issue 6) lives in pyinv.cnn and is imported on first use; that module defines
# ``CNNInit(guess)`` (guess = a model object or a path) subclassing InitStrategy.
register_init("cnn", "pyinv.cnn.init:CNNInit")

__all__ = ["GuessSet", "InitContext", "InitStrategy", "StartStream", "register_init", "get_init", "available_inits",
           "as_atmosphere", "Single", "Previous", "Multistart", "Cluster", "kmeans", "stokes_features",
           "library_prototypes"]
