"""Structural observables of sampled frames: RDFs, nearest-neighbour distances, cell metrics.

Distances between their distributions and the other statistics live in
:mod:`slhmc_jax.analysis.statistics` (re-imported here: ``slhmc_jax.observables.wasserstein``,
``rdf_distance``, ``importance_ess``, ``block_length`` and ``block_variance_ratio`` are public
names of this module too); MCMC diagnostics (acceptance, ESS, IAT, R-hat) live in
:mod:`slhmc_jax.analysis.diagnostics`.

Frames are a list of ``ase.Atoms``, one ``ase.Atoms``, a :class:`Frames`, or a tuple
``(positions (F, N, 3) A, cells (F, 3, 3) or (3, 3) A, numbers (N,), pbc)``. All frames share
the atom count, the atomic numbers (atom by atom) and the periodicity.

Periodic images are exact for any cell, also cells thinner than the search radius R: along a
periodic lattice direction k with plane spacing w_k (:func:`slhmc_jax.neighbours.plane_widths`)
a displacement d = (f + s) @ cell of length < R has |f_k + s_k| < R / w_k, so after reducing the
fractional difference f_k to [-1/2, 1/2] the images s_k = ceil(-R / w_k - f_k) + j,
j = 0 .. floor(2 R / w_k), hold every image within R. That window is per pair, its size static,
so the frames are vmapped and jitted in fixed-size chunks. (The project's pair list,
``neighbours.allocate(batch=True)`` + ``build``, measured about 60 ms per 72-atom frame for the
host-side layout and 17 ms for the build at 6 A, against about 0.1 ms per frame here: a
10^4-frame trajectory needs this dedicated kernel, which computes only the a-b distances and
never stores a pair list.)
"""

from __future__ import annotations

import functools
import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from slhmc_jax import precision  # noqa: F401  (float64)
from slhmc_jax import neighbours as _nl
from slhmc_jax.analysis.statistics import (  # noqa: F401  (public here too, see the module docstring)
    block_length,
    block_variance_ratio,
    importance_ess,
    rdf_distance,
    wasserstein,
)

_CHUNK_ELEMENTS = 1 << 22  # pair-image distances evaluated per compiled call
_MAX_CHUNK_FRAMES = 256


class Frames(NamedTuple):
    """Frames of one system (host arrays).

    Attributes:
        positions: (F, N, 3) float64, Angstrom.
        cells: (F, 3, 3) float64, Angstrom (rows are lattice vectors).
        numbers: (N,) int atomic numbers, the same in every frame.
        pbc: three bools, the same in every frame.
    """

    positions: np.ndarray
    cells: np.ndarray
    numbers: np.ndarray
    pbc: tuple[bool, bool, bool]

    @property
    def n_frames(self) -> int:
        return int(self.positions.shape[0])

    @property
    def n_atoms(self) -> int:
        return int(self.positions.shape[1])


def as_frames(frames) -> Frames:
    """Validate ``frames`` (see the module docstring) into :class:`Frames`; ValueError names the problem."""
    if isinstance(frames, Frames):
        return frames
    try:
        from ase import Atoms
    except ImportError:  # pragma: no cover - ase is a dependency
        Atoms = ()
    if isinstance(frames, Atoms):
        frames = [frames]
    if isinstance(frames, tuple) and len(frames) == 4 and not isinstance(frames[0], Atoms):
        positions, cells, numbers, pbc = frames
        positions = np.asarray(positions, np.float64)
        if positions.ndim == 2:
            positions = positions[None]
        if positions.ndim != 3 or positions.shape[-1] != 3:
            raise ValueError(f"positions must have shape (n_frames, n_atoms, 3); got {positions.shape}")
        cells = np.asarray(cells, np.float64)
        if cells.shape == (3, 3):
            cells = np.broadcast_to(cells, (positions.shape[0], 3, 3))
        if cells.shape != (positions.shape[0], 3, 3):
            raise ValueError(f"cells must have shape (3, 3) or (n_frames, 3, 3) = {(positions.shape[0], 3, 3)}; got {cells.shape}")
        numbers = np.asarray(numbers).astype(np.int64).reshape(-1)
        if numbers.shape[0] != positions.shape[1]:
            raise ValueError(
                f"numbers has {numbers.shape[0]} entries but the frames have {positions.shape[1]} atoms"
            )
        pbc = tuple(bool(p) for p in np.broadcast_to(np.asarray(pbc, bool), (3,)))
    else:
        atoms_list = list(frames)
        if not atoms_list:
            raise ValueError("no frames given")
        for i, a in enumerate(atoms_list):
            if not isinstance(a, Atoms):
                raise ValueError(f"frame {i} is a {type(a).__name__}, not an ase.Atoms")
        n0 = len(atoms_list[0])
        counts = np.array([len(a) for a in atoms_list])
        if np.any(counts != n0):
            bad = int(np.nonzero(counts != n0)[0][0])
            raise ValueError(
                f"frames must have the same number of atoms: frame 0 has {n0}, frame {bad} has {counts[bad]}"
            )
        numbers = atoms_list[0].numbers.astype(np.int64)
        pbc = tuple(bool(p) for p in atoms_list[0].pbc)
        for i, a in enumerate(atoms_list):
            if not np.array_equal(a.numbers, numbers):
                raise ValueError(
                    f"frame {i} has other atomic numbers (or another atom order) than frame 0; "
                    "the observables pair atoms by index, so every frame must list the same elements in the same order"
                )
            if tuple(bool(p) for p in a.pbc) != pbc:
                raise ValueError(f"frame {i} has pbc={a.pbc.tolist()}, frame 0 has {list(pbc)}")
        positions = np.stack([a.positions for a in atoms_list]).astype(np.float64)
        cells = np.stack([np.asarray(a.cell) for a in atoms_list]).astype(np.float64)
    if positions.shape[0] == 0:
        raise ValueError("no frames given")
    if positions.shape[1] == 0:
        raise ValueError("frames have no atoms")
    if not np.all(np.isfinite(positions)):
        bad = int(np.nonzero(~np.isfinite(positions).all(axis=(1, 2)))[0][0])
        raise ValueError(f"frame {bad} has non-finite positions (NaN or inf)")
    if not np.all(np.isfinite(cells)):
        bad = int(np.nonzero(~np.isfinite(cells).all(axis=(1, 2)))[0][0])
        raise ValueError(f"frame {bad} has a non-finite cell")
    return Frames(np.ascontiguousarray(positions), np.ascontiguousarray(cells), numbers, pbc)


def _species(frames: Frames, symbol) -> np.ndarray:
    """Indices of the atoms of element ``symbol`` (a symbol or an atomic number)."""
    from ase.data import atomic_numbers, chemical_symbols

    if isinstance(symbol, (int, np.integer)):
        z = int(symbol)
    elif symbol in atomic_numbers:
        z = atomic_numbers[symbol]
    else:
        raise ValueError(f"{symbol!r} is not a chemical symbol")
    idx = np.nonzero(frames.numbers == z)[0]
    if idx.size == 0:
        present = ", ".join(chemical_symbols[int(n)] for n in np.unique(frames.numbers))
        raise ValueError(f"element {chemical_symbols[z]!r} is not in the frames (elements present: {present})")
    return idx


# ----------------------------------------------------------------------------------------
# geometry on the host: completed cells, plane widths, image windows


class _Geometry(NamedTuple):
    full: np.ndarray  # (F, 3, 3) cell with non-periodic rows completed (invertible)
    inverse: np.ndarray  # (F, 3, 3)
    widths: np.ndarray  # (F, 3) lattice-plane spacings of the completed cell, A
    volume: np.ndarray  # (F,) |det cell|, A^3


def _completed_cells(cells: np.ndarray, pbc) -> np.ndarray:
    """Cells whose non-periodic rows are unit vectors normal to the periodic rows (no images there)."""
    periodic = [k for k in range(3) if pbc[k]]
    full = cells.copy()
    if len(periodic) == 3:
        return full
    if not periodic:
        return np.broadcast_to(np.eye(3), cells.shape).copy()
    if len(periodic) == 2:
        (free,) = [k for k in range(3) if not pbc[k]]
        n = np.cross(cells[:, periodic[0]], cells[:, periodic[1]])
        full[:, free] = n / np.linalg.norm(n, axis=-1, keepdims=True)
        return full
    a = cells[:, periodic[0]]
    ahat = a / np.linalg.norm(a, axis=-1, keepdims=True)
    trial = np.eye(3)[np.argmin(np.abs(ahat), axis=-1)]
    u = np.cross(ahat, trial)
    u /= np.linalg.norm(u, axis=-1, keepdims=True)
    free = [k for k in range(3) if not pbc[k]]
    full[:, free[0]], full[:, free[1]] = u, np.cross(ahat, u)
    return full


def _geometry(frames: Frames) -> _Geometry:
    volume = np.abs(np.linalg.det(frames.cells))
    periodic = [k for k in range(3) if frames.pbc[k]]
    if periodic:
        rows = frames.cells[:, periodic]
        gram = np.linalg.det(rows @ np.swapaxes(rows, 1, 2))
        scale = np.prod(np.sum(rows * rows, axis=-1), axis=-1)
        bad = ~(gram > 1e-20 * np.maximum(scale, 1e-300))
        if bad.any():
            f = int(np.nonzero(bad)[0][0])
            raise ValueError(
                f"frame {f}: the cell {frames.cells[f].tolist()} has zero volume along its periodic directions "
                f"(pbc={list(frames.pbc)})"
            )
    full = _completed_cells(frames.cells, frames.pbc)
    widths = np.asarray(jax.vmap(_nl.plane_widths)(jnp.asarray(full)))
    return _Geometry(full, np.linalg.inv(full), widths, volume)


def _window(frames: Frames, geometry: _Geometry, radius_A: float):
    """Per-frame reach R / w_k (0 along non-periodic k) and the static (M, 3) image offsets."""
    periodic = np.asarray(frames.pbc)
    reach = np.where(periodic, radius_A / geometry.widths + 1e-9, 0.0)
    m = np.where(periodic, np.floor(2.0 * reach.max(axis=0)).astype(int) + 1, 1)
    offsets = np.array(np.meshgrid(*[np.arange(k) for k in m], indexing="ij")).reshape(3, -1).T
    return reach, offsets.astype(np.float64)


def _chunk_size(n_frames: int, per_frame: int) -> int:
    """Frames per compiled call: a power of two, at least 64 where the chunk budget allows (frame
    sets of different lengths share one compiled shape; padded frames cost little), at most
    _MAX_CHUNK_FRAMES."""
    limit = max(1, min(_MAX_CHUNK_FRAMES, _CHUNK_ELEMENTS // max(1, per_frame)))
    limit = 1 << (limit.bit_length() - 1)
    want = 1 << (max(64, n_frames) - 1).bit_length()
    return min(limit, want)


def _chunks(n_frames: int, size: int):
    for start in range(0, n_frames, size):
        idx = np.arange(start, start + size)
        valid = idx < n_frames
        yield start, np.where(valid, idx, 0), valid


def _rows_times(v, h):
    """v @ h for (..., 3) v and a (3, 3) h, written out (XLA fuses it; a batched 3x3 dot does not)."""
    return v[..., 0:1] * h[0] + v[..., 1:2] * h[1] + v[..., 2:3] * h[2]


def _image_distances2(x, h, hinv, reach, ia, ib, offsets, periodic):
    """Squared distances (n_a, n_b, M) of every a-b pair over its image window (one frame).

    d = (f - round(f) + s) @ h with s = ceil(-reach - f) + offset along periodic directions.
    """
    d0 = x[ib][None, :, :] - x[ia][:, None, :]
    f = _rows_times(d0, hinv)
    per = jnp.asarray(periodic)
    f = jnp.where(per, f - jnp.round(f), f)
    start = jnp.where(per, jnp.ceil(-reach - f), 0.0)
    base = _rows_times(f + start, h)
    d = base[:, :, None, :] + _rows_times(offsets, h)[None, None]
    return d[..., 0] * d[..., 0] + d[..., 1] * d[..., 1] + d[..., 2] * d[..., 2]


@functools.partial(jax.jit, static_argnames=("n_bins", "periodic"))
def _rdf_counts(positions, full, inverse, reach, valid, ia, ib, same, offsets, r_max, *, n_bins, periodic):
    """(C, n_bins) a-b pair counts per bin of width r_max / n_bins (every image, no self pair)."""

    def one(x, h, hinv, reach_f):
        r2 = _image_distances2(x, h, hinv, reach_f, ia, ib, offsets, periodic)
        keep = (r2 < r_max * r_max) & ~(same[:, :, None] & (r2 < 1e-20))
        k = jnp.minimum(jnp.floor(jnp.sqrt(r2) * (n_bins / r_max)).astype(jnp.int32), n_bins - 1)
        return jnp.where(keep, k, n_bins)

    bins = jax.vmap(one)(positions, full, inverse, reach)
    c = positions.shape[0]
    flat = bins + (jnp.arange(c, dtype=jnp.int32) * n_bins)[:, None, None, None]
    flat = jnp.where((bins < n_bins) & valid[:, None, None, None], flat, c * n_bins)  # out of range: dropped
    # the barrier keeps the distance arithmetic out of the scatter's (serial) loop: 2.5x faster here
    flat = jax.lax.optimization_barrier(flat)
    counts = jnp.zeros((c * n_bins,), jnp.int32).at[flat.reshape(-1)].add(1, mode="drop")
    return counts.reshape(c, n_bins)


def _check_radius(name: str, value) -> float:
    value = float(value)
    if not (np.isfinite(value) and value > 0):
        raise ValueError(f"{name} must be a positive finite distance in Angstrom; got {value}")
    return value


def largest_interatomic_distance(frames) -> np.ndarray:
    """(F,) largest distance between two atoms of each frame, without periodic images, A.

    For a system without periodic directions this is the range of distances its data hold
    (the upper limit of :func:`rdf`'s ``r_max_A`` there).
    """
    frames = as_frames(frames)
    n = frames.n_atoms
    out = np.empty(frames.n_frames)
    step = max(1, 4_000_000 // max(1, n * n))
    for s in range(0, frames.n_frames, step):
        x = frames.positions[s : s + step]
        d = x[:, None, :, :] - x[:, :, None, :]
        out[s : s + step] = np.sqrt(np.max(np.sum(d * d, axis=-1), axis=(1, 2)))
    return out


def rdf_frames(frames, pair=("Ti", "O"), r_max_A: float = 6.0, n_bins: int = 200):
    """Partial radial distribution function g_ab(r) of every frame.

    For frame f with N_a atoms of element a, N_b of element b and volume V_f,

        g_ab,f(r_k) = n_ab,f(k) / (N_a (N_b / V_f) (4 pi / 3) (r_{k+1}^3 - r_k^3)),

    where n_ab,f(k) counts the ordered pairs (i in a, j in b, every periodic image) with
    r_k <= |x_j - x_i + S @ cell| < r_{k+1} on equal-width bins r_k = k r_max / n_bins of
    [0, r_max), excluding only an atom paired with itself without a shift. The denominator is
    the ideal-gas count at the frame's own density (NPT frames differ), so g -> 1 at large r
    in a periodic fluid (the periodic images of i count among the b atoms, hence N_b, not
    N_b - 1, also for a = b).

    V_f = |det cell_f| for a periodic or partly periodic system (a slab's box). A system with no
    periodic direction (a molecule, a cluster) has no density of its own: there
    V_f = (4 pi / 3) r_max^3, the sphere the histogram covers (g = 1 where the b atoms would be
    spread uniformly within r_max of each a atom), and r_max must not exceed the largest
    interatomic distance of the frames (beyond it the data hold no pairs).

    Args:
        frames: see the module docstring.
        pair: element symbols (a, b).
        r_max_A: upper end of the histogram, Angstrom (any value for periodic frames).
        n_bins: number of bins.

    Returns:
        (r_A (n_bins,) bin centres in Angstrom, g (F, n_bins)).
    """
    frames = as_frames(frames)
    r_max = _check_radius("r_max_A", r_max_A)
    if int(n_bins) != n_bins or n_bins < 1:
        raise ValueError(f"n_bins must be a positive integer; got {n_bins}")
    n_bins = int(n_bins)
    if len(pair) != 2:
        raise ValueError(f"pair must name two elements, e.g. ('Ti', 'O'); got {pair!r}")
    ia, ib = _species(frames, pair[0]), _species(frames, pair[1])
    geometry = _geometry(frames)
    if not any(frames.pbc):
        largest = float(largest_interatomic_distance(frames).max())
        if r_max > largest:
            raise ValueError(
                f"r_max_A={r_max} is larger than the data support: these frames are not periodic and no two "
                f"atoms are further apart than {largest:.4f} A; choose r_max_A <= {largest:.4f}"
            )
        volume = np.full(frames.n_frames, 4.0 / 3.0 * math.pi * r_max**3)
    else:
        volume = geometry.volume
        if not np.all(volume > 0):
            f = int(np.nonzero(~(volume > 0))[0][0])
            raise ValueError(
                f"frame {f} has a cell without volume (pbc={list(frames.pbc)}): a partly periodic system needs "
                "a 3-D box, whose volume sets the ideal-gas density of g(r)"
            )
    reach, offsets = _window(frames, geometry, r_max)
    same = ia[:, None] == ib[None, :]
    size = _chunk_size(frames.n_frames, ia.size * ib.size * offsets.shape[0])
    counts = np.empty((frames.n_frames, n_bins))
    args = (jnp.asarray(ia), jnp.asarray(ib), jnp.asarray(same), jnp.asarray(offsets), r_max)
    for start, idx, valid in _chunks(frames.n_frames, size):
        out = _rdf_counts(
            jnp.asarray(frames.positions[idx]),
            jnp.asarray(geometry.full[idx]),
            jnp.asarray(geometry.inverse[idx]),
            jnp.asarray(reach[idx]),
            jnp.asarray(valid),
            *args,
            n_bins=n_bins,
            periodic=frames.pbc,
        )
        stop = min(start + size, frames.n_frames)
        counts[start:stop] = np.asarray(out)[: stop - start]
    edges = np.linspace(0.0, r_max, n_bins + 1)
    shell = 4.0 / 3.0 * math.pi * (edges[1:] ** 3 - edges[:-1] ** 3)
    g = counts * (volume / (ia.size * ib.size))[:, None] / shell[None, :]
    return 0.5 * (edges[1:] + edges[:-1]), g


def rdf(frames, pair=("Ti", "O"), r_max_A: float = 6.0, n_bins: int = 200):
    """Partial radial distribution function g_ab(r) averaged over frames.

    g_ab(r_k) = (1/F) sum_f g_ab,f(r_k), each frame normalised by its own volume
    (:func:`rdf_frames` states the equation and the non-periodic convention).

    Returns:
        (r_A (n_bins,) bin centres in Angstrom, g (n_bins,)).
    """
    r, g = rdf_frames(frames, pair, r_max_A, n_bins)
    return r, g.mean(axis=0)


@functools.partial(jax.jit, static_argnames=("k", "periodic"))
def _nearest(positions, full, inverse, reach, ia, ib, same, offsets, radius, *, k, periodic):
    """(C, n_a, k) smallest a-b distances within ``radius`` (inf where fewer exist)."""

    def one(x, h, hinv, reach_f):
        r2 = _image_distances2(x, h, hinv, reach_f, ia, ib, offsets, periodic)
        bad = (r2 >= radius * radius) | (same[:, :, None] & (r2 < 1e-20))
        r = jnp.where(bad, jnp.inf, jnp.sqrt(jnp.where(bad, 1.0, r2)))
        neg, _ = jax.lax.top_k(-r.reshape(r.shape[0], -1), k)
        return -neg

    return jax.vmap(one)(positions, full, inverse, reach)


def nearest_neighbour_distances(frames, a="Ti", b="O", k: int = 6) -> np.ndarray:
    """The k nearest b atoms of every a atom (every periodic image), Angstrom.

    For atom i of element a, the k smallest |x_j - x_i + S @ cell| over atoms j of element b
    and lattice translations S (S = 0 only where the system is not periodic; j = i with S = 0
    excluded), sorted ascending. For rutile TiO2 and k = 6 these are the TiO6 octahedron's
    four equatorial and two apical Ti-O bonds.

    The search radius starts from the density (the sphere holding about 2 k b atoms) and
    doubles until every atom has k neighbours inside it, so the result is exact.

    Args:
        frames: see the module docstring.
        a, b: element symbols.
        k: neighbours per atom (>= 1; at most the number of b atoms, less one if a = b, for a
            system without periodic directions).

    Returns:
        (F, n_a, k) float64 array.
    """
    frames = as_frames(frames)
    if int(k) != k or k < 1:
        raise ValueError(f"k must be a positive integer; got {k}")
    k = int(k)
    ia, ib = _species(frames, a), _species(frames, b)
    same = ia[:, None] == ib[None, :]
    geometry = _geometry(frames)
    available = ib.size - (1 if a == b or np.array_equal(ia, ib) else 0)
    if not any(frames.pbc):
        if k > available:
            raise ValueError(
                f"k={k} but each {a} atom has only {available} {b} neighbours in these non-periodic frames"
            )
        radius = float(largest_interatomic_distance(frames).max()) * 2.0 + 1.0
    else:
        volume = float(np.max(geometry.volume)) if np.all(geometry.volume > 0) else float(np.prod(geometry.widths.max(axis=0)))
        radius = (3.0 * 2.0 * (k + 1) * volume / (4.0 * math.pi * ib.size)) ** (1.0 / 3.0)
    for _ in range(12):
        reach, offsets = _window(frames, geometry, radius)
        size = _chunk_size(frames.n_frames, ia.size * ib.size * offsets.shape[0])
        out = np.empty((frames.n_frames, ia.size, k))
        args = (jnp.asarray(ia), jnp.asarray(ib), jnp.asarray(same), jnp.asarray(offsets), radius)
        for start, idx, _valid in _chunks(frames.n_frames, size):
            d = _nearest(
                jnp.asarray(frames.positions[idx]),
                jnp.asarray(geometry.full[idx]),
                jnp.asarray(geometry.inverse[idx]),
                jnp.asarray(reach[idx]),
                *args,
                k=k,
                periodic=frames.pbc,
            )
            stop = min(start + size, frames.n_frames)
            out[start:stop] = np.asarray(d)[: stop - start]
        if np.all(np.isfinite(out)):
            return out
        radius *= 2.0
    raise RuntimeError(f"found fewer than k={k} {b} neighbours of some {a} atom within {radius} A")


def cell_metrics(frames) -> dict:
    """Lattice parameters of every frame.

    a, b, c = |a_1|, |a_2|, |a_3|; alpha = angle(a_2, a_3), beta = angle(a_1, a_3),
    gamma = angle(a_1, a_2); V = |det(cell)|; c/a = |a_3| / |a_1|.

    Returns:
        dict of (F,) float64 arrays: ``a_A``, ``b_A``, ``c_A`` (Angstrom), ``alpha_deg``,
        ``beta_deg``, ``gamma_deg`` (degrees), ``volume_A3`` (A^3), ``c_over_a``.
    """
    frames = as_frames(frames)
    cells = frames.cells
    lengths = np.linalg.norm(cells, axis=-1)
    volume = np.abs(np.linalg.det(cells))
    if not np.all(volume > 0):
        f = int(np.nonzero(~(volume > 0))[0][0])
        raise ValueError(f"frame {f} has a cell without volume ({cells[f].tolist()}): no lattice parameters")

    def angle(i, j):
        cos = np.sum(cells[:, i] * cells[:, j], axis=-1) / (lengths[:, i] * lengths[:, j])
        return np.degrees(np.arccos(np.clip(cos, -1.0, 1.0)))

    return {
        "a_A": lengths[:, 0],
        "b_A": lengths[:, 1],
        "c_A": lengths[:, 2],
        "alpha_deg": angle(1, 2),
        "beta_deg": angle(0, 2),
        "gamma_deg": angle(0, 1),
        "volume_A3": volume,
        "c_over_a": lengths[:, 2] / lengths[:, 0],
    }


__all__ = [
    "Frames",
    "as_frames",
    "block_length",
    "block_variance_ratio",
    "cell_metrics",
    "importance_ess",
    "largest_interatomic_distance",
    "nearest_neighbour_distances",
    "rdf",
    "rdf_distance",
    "rdf_frames",
    "wasserstein",
]
