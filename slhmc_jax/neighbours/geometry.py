"""Cell geometry of the neighbour search: the completed cell of a partly periodic system, lattice
plane widths, wrapping, pair displacement vectors (pure), and the host-side check of a geometry.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from slhmc_jax.neighbours.types import Neighbours


def completed_cell(cell: jax.Array, pbc: tuple[bool, bool, bool]) -> jax.Array:
    """Cell with every non-periodic row replaced by a unit vector normal to the periodic rows.

    Positions are only wrapped and imaged along periodic rows, so the non-periodic rows may be
    anything that keeps the matrix invertible (ASE allows them to be zero).
    """
    periodic = [k for k in range(3) if pbc[k]]
    rows = [cell[k] for k in range(3)]
    if len(periodic) == 3:
        return cell
    eye = jnp.eye(3, dtype=cell.dtype)
    if len(periodic) == 0:
        return eye
    if len(periodic) == 2:
        a, b = rows[periodic[0]], rows[periodic[1]]
        n = jnp.cross(a, b)
        n = n / jnp.linalg.norm(n)
        (k,) = [k for k in range(3) if not pbc[k]]
        rows[k] = n
        return jnp.stack(rows)
    # one periodic direction: two unit vectors orthogonal to it and to each other
    a = rows[periodic[0]]
    ahat = a / jnp.linalg.norm(a)
    # pick the coordinate axis least parallel to a
    trial = eye[jnp.argmin(jnp.abs(ahat))]
    u = jnp.cross(ahat, trial)
    u = u / jnp.linalg.norm(u)
    v = jnp.cross(ahat, u)
    free = [k for k in range(3) if not pbc[k]]
    rows[free[0]], rows[free[1]] = u, v
    return jnp.stack(rows)

def plane_widths(cell: jax.Array) -> jax.Array:
    """(3,) distances between lattice planes, w_k = V / |a_l x a_m|, Angstrom."""
    volume = jnp.abs(jnp.linalg.det(cell))
    cross = jnp.stack(
        [jnp.cross(cell[1], cell[2]), jnp.cross(cell[2], cell[0]), jnp.cross(cell[0], cell[1])]
    )
    return volume / jnp.linalg.norm(cross, axis=1)

def wrap(positions, full_cell, periodic):
    """Wrap positions into the cell along periodic directions.

    Args:
        full_cell: (3, 3) invertible cell (:func:`completed_cell`).
        periodic: (3,) bool array.

    Returns:
        wrapped: (n, 3) positions - W @ cell.
        fractional: (n, 3) fractional coordinates of the wrapped positions (periodic ones in [0, 1)).
        W: (n, 3) int32 lattice translation removed from each atom.
    """
    frac = jnp.linalg.solve(full_cell.T, positions.T).T
    W = jnp.where(periodic, jnp.floor(frac), 0.0)
    frac = frac - W
    wrapped = positions - W @ full_cell
    return wrapped, frac, W.astype(jnp.int32)

def edge_vectors(positions: jax.Array, cell: jax.Array, neighbours: Neighbours, fill: float = 1e3):
    """Pair displacement vectors d_k = x[j] - x[i] + S_k @ cell, Angstrom.

    Args:
        positions: (n_atoms, 3) Angstrom.
        cell: (3, 3) Angstrom.
        neighbours: the pair list.
        fill: length of the vector put on padded entries (far beyond any cutoff, so smooth
            cutoff functions vanish there and gradients stay finite).

    Returns:
        (capacity, 3) displacement vectors (dense format: (n_atoms, K, 3)) in the dtype of
        ``positions``.
    """
    n = positions.shape[0]
    i = jnp.minimum(neighbours.senders, n - 1)
    j = jnp.minimum(neighbours.receivers, n - 1)
    d = positions[j] - positions[i] + neighbours.shifts.astype(positions.dtype) @ cell
    far = jnp.zeros_like(d).at[..., 0].set(fill)
    return jnp.where(neighbours.mask[..., None], d, far)

def validate_geometry(positions, cell, pbc, cutoff: float | None = None) -> tuple[np.ndarray, np.ndarray, tuple]:
    """Check positions, cell and cutoff; raise ValueError naming the problem.

    Returns:
        positions (n, 3) float64 array, cell (3, 3) float64 array, pbc as a tuple of 3 bools.
    """
    positions = np.asarray(positions, dtype=np.float64)
    cell = np.asarray(cell, dtype=np.float64)
    pbc_arr = np.broadcast_to(np.asarray(pbc, dtype=bool), (3,))
    pbc = tuple(bool(p) for p in pbc_arr)
    if positions.ndim != 2 or positions.shape[-1] != 3:
        raise ValueError(f"positions must have shape (n_atoms, 3); got {positions.shape}")
    if cell.shape != (3, 3):
        raise ValueError(f"cell must have shape (3, 3); got {cell.shape}")
    if not np.all(np.isfinite(positions)):
        bad = np.unique(np.nonzero(~np.isfinite(positions))[0])
        raise ValueError(f"positions contain non-finite values (NaN or inf) for atom(s) {bad[:10].tolist()}")
    if not np.all(np.isfinite(cell)):
        raise ValueError(f"cell contains non-finite values: {cell.tolist()}")
    if cutoff is not None:
        if not np.isfinite(cutoff) or cutoff < 0:
            raise ValueError(f"cutoff must be a finite non-negative distance in Angstrom; got {cutoff}")
    periodic = [k for k in range(3) if pbc[k]]
    if periodic:
        rows = cell[periodic]
        # Gram determinant: volume (area, length) spanned by the periodic lattice vectors
        gram = np.linalg.det(rows @ rows.T)
        scale = np.prod(np.sum(rows * rows, axis=1))
        if not gram > 1e-20 * max(scale, 1e-300):
            raise ValueError(
                "cell has zero volume along its periodic directions "
                f"(pbc={pbc}, cell={cell.tolist()}): lattice vectors are zero or linearly dependent"
            )
    return positions, cell, pbc
