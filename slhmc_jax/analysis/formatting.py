"""How the reports write numbers and systems: JSON-safe values, chemical formulas, table cells."""

from __future__ import annotations

import math

import numpy as np


def json_safe(value):
    """``value`` as plain JSON: NaN and inf become null, NumPy scalars and arrays Python numbers and lists."""
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if isinstance(value, (np.floating, float)):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, np.ndarray):
        return json_safe(value.tolist())
    return value


def symbol(z: int) -> str:
    """The chemical symbol of atomic number ``z``."""
    from ase.data import chemical_symbols

    return chemical_symbols[int(z)]


def formula(numbers) -> str:
    """The reduced chemical formula of atomic numbers ``numbers`` (n_atoms,), metals first ("TiO2")."""
    from ase.formula import Formula

    return Formula.from_list([symbol(z) for z in numbers]).reduce()[0].format("metal")


def table_number(x, digits: int = 4) -> str:
    """A table cell: ``x`` to ``digits`` significant digits, "n/a" for None, NaN or inf."""
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "n/a"
    return f"{x:.{digits}g}"
