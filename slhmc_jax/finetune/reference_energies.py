"""Least-squares refit of the per-element reference energies E0 (eV).

A MACE energy is E = sum_i E0(z_i) + E_int, so with C the (n_structures, n_elements) composition
matrix (C_bk = number of atoms of element k in structure b) and r_b = E_b^target - E_int,b (the
model energy without E0), the refit solves

    min_E0 || C E0 - r ||^2.

The foundation model's E0 belong to another code and functional (PySCF's absolute energies differ
from VASP's by large per-element constants), so this comes before any training.

Rank-deficient data (fewer independent compositions than elements, e.g. a single composition, which
fixes only the combination sum_k C_k E0_k; or elements absent from the data) do not fix every E0.
Then the answer is the least-squares solution *closest to the current E0*:

    E0 = E0_old + pinv(C) (r - C E0_old),

i.e. the data fix the components of E0 in the row space of C (the fitted combinations are matched
exactly, up to the least-squares residual), and the null-space components (elements absent from the
data, or the split of a single composition's energy between its elements) keep the model's current
values. A ``UserWarning`` says so. With full column rank this is the unique least-squares solution.
"""

from __future__ import annotations

import warnings
from typing import NamedTuple

import numpy as np


class ReferenceEnergyFit(NamedTuple):
    """E0_eV: (n_elements,) refitted E0, eV; rank: rank of C; n_elements: elements present in the
    data (non-zero columns of C; absent elements keep their E0 without a warning);
    rms_residual_eV: RMS of C E0 - r, eV (per structure)."""

    E0_eV: np.ndarray
    rank: int
    n_elements: int
    rms_residual_eV: float


def fit_reference_energies(counts: np.ndarray, residual_eV: np.ndarray, current_eV: np.ndarray) -> ReferenceEnergyFit:
    """The least-squares E0 of the module docstring.

    Args:
        counts: (n_structures, n_elements) composition matrix C.
        residual_eV: (n_structures,) r = E_target - E_model_without_E0, eV.
        current_eV: (n_elements,) the current E0, eV (kept along the null space of C).
    """
    c = np.asarray(counts, dtype=np.float64)
    r = np.asarray(residual_eV, dtype=np.float64)
    e_old = np.asarray(current_eV, dtype=np.float64)
    if c.ndim != 2 or r.shape != (c.shape[0],) or e_old.shape != (c.shape[1],):
        raise ValueError(f"shapes: counts {c.shape}, residual {r.shape}, current {e_old.shape} do not match")
    if c.shape[0] == 0:
        raise ValueError("the E0 refit needs at least one structure")
    delta, _, rank, _ = np.linalg.lstsq(c, r - c @ e_old, rcond=None)
    e_new = e_old + delta
    rms = float(np.sqrt(np.mean((c @ e_new - r) ** 2)))
    return ReferenceEnergyFit(e_new, int(rank), int(np.count_nonzero(c.any(axis=0))), rms)


def composition_matrix(species_lists, n_elements: int) -> np.ndarray:
    """(n_structures, n_elements) counts from per-structure species-index arrays."""
    return np.stack([np.bincount(np.asarray(s), minlength=n_elements) for s in species_lists]).astype(np.float64)


def warn_if_rank_deficient(fit: ReferenceEnergyFit, elements, name: str = "training") -> None:
    if fit.rank < fit.n_elements:
        warnings.warn(
            f"E0 refit: the {name} compositions fix only {fit.rank} combinations of the {fit.n_elements} reference "
            f"energies of the elements present {list(elements)}; the unfixed combinations keep the model's current E0 "
            f"(least-squares solution closest to them)", UserWarning, stacklevel=3)
