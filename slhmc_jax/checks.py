"""Settings checks: the one mechanism every settings dataclass validates its fields with.

A frozen dataclass calls ``FieldCheck(self, ...)`` in ``__post_init__`` and asks for each field
what it must be; a bad value raises ``ValueError("<field> must be <what>; got <value>")`` naming
the field as the user wrote it (``label``: e.g. "[sampler] n_chains" for a config key), and a good
one is normalised in place (NumPy integers to int, integers to float where a number is asked for).
"""

from __future__ import annotations

import math
from typing import Any, Callable, Iterable

import numpy as np


class FieldCheck:
    """Checks the fields of one frozen dataclass instance.

    Args:
        obj: the instance (its fields are read and, normalised, written back).
        label: how a field is named in an error (default: the field name).
        error: the exception class raised (a ValueError subclass).
    """

    def __init__(self, obj: Any, label: Callable[[str], str] | None = None, error: type = ValueError):
        self.obj = obj
        self.label = label or (lambda name: name)
        self.error = error

    def fail(self, name: str, expected: str, value: Any = None) -> None:
        """Raise: ``<label> must be <expected>; got <value>`` (value: the field's by default)."""
        value = getattr(self.obj, name) if value is None else value
        raise self.error(f"{self.label(name)} must be {expected}; got {value!r}")

    def _set(self, name: str, value: Any) -> None:
        object.__setattr__(self.obj, name, value)

    def integer(self, name: str, minimum: int | None = None, *, optional: bool = False, expected: str | None = None
                ) -> None:
        """An int (not a bool) >= ``minimum``; NumPy integers become int."""
        v = getattr(self.obj, name)
        if optional and v is None:
            return
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or (minimum is not None and v < minimum):
            what = expected or ("an integer" + (f" >= {minimum}" if minimum is not None else ""))
            self.fail(name, what + (" or None" if optional and expected is None else ""))
        self._set(name, int(v))

    def number(self, name: str, lo: float | None = None, hi: float | None = None, *, lo_open: bool = False,
               hi_open: bool = False, optional: bool = False, expected: str | None = None) -> None:
        """A finite real number in the interval; ints become float."""
        v = getattr(self.obj, name)
        if optional and v is None:
            return
        ok = isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool) and math.isfinite(v)
        if ok and lo is not None:
            ok = v > lo if lo_open else v >= lo
        if ok and hi is not None:
            ok = v < hi if hi_open else v <= hi
        if not ok:
            self.fail(name, expected or (_interval("a finite number", lo, hi, lo_open, hi_open)
                                         + (" or None" if optional else "")))
        self._set(name, float(v))

    def choice(self, name: str, allowed: Iterable, *, optional: bool = False, expected: str | None = None) -> None:
        """One of ``allowed``."""
        v = getattr(self.obj, name)
        if optional and v is None:
            return
        allowed = tuple(allowed)
        if v not in allowed:
            self.fail(name, expected or (f"one of {allowed}" + (" or None" if optional else "")))

    def flag(self, name: str) -> None:
        """True or False (not 0 / 1)."""
        if not isinstance(getattr(self.obj, name), bool):
            self.fail(name, "True or False")

    def require(self, condition: bool, name: str, expected: str) -> None:
        """A rule of its own (between fields, say): fail with ``expected`` unless ``condition``."""
        if not condition:
            self.fail(name, expected)


def _interval(what: str, lo, hi, lo_open: bool, hi_open: bool) -> str:
    if lo is not None and hi is not None:
        return f"{what} in {'(' if lo_open else '['}{lo}, {hi}{')' if hi_open else ']'}"
    if lo is not None:
        return f"{what} {'>' if lo_open else '>='} {lo}"
    if hi is not None:
        return f"{what} {'<' if hi_open else '<='} {hi}"
    return what
