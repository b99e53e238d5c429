"""pyinv's exception for bad input: one type for every wrong value *or* wrong type handed to the public
API (issue 10: bad input gives a ValueError, never a stray TypeError from deep inside a conversion)."""
from __future__ import annotations

import functools
from typing import Callable, TypeVar

__all__ = ["InputError", "input_errors"]

F = TypeVar("F", bound=Callable)


class InputError(ValueError, TypeError):
    """Bad input to pyinv: a ValueError (what pyinv documents) that is also a TypeError (what Python raises
    for a wrongly typed argument, so that code catching either keeps working)."""


def input_errors(fn: F) -> F:
    """Decorator: a TypeError or OverflowError escaping ``fn`` (a wrongly typed or out-of-range argument met
    by a conversion, e.g. ``float(None)``, ``int(1e300)``) is re-raised as :class:`InputError` naming the
    function; ValueErrors and everything else pass unchanged."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except InputError:
            raise
        except (TypeError, OverflowError) as exc:
            raise InputError(f"{fn.__qualname__}: bad argument ({type(exc).__name__}: {exc})") from exc
    return wrapper  # type: ignore[return-value]
