"""Reusable physics checks for any :class:`~slhmc_jax.models.Potential`.

Each check takes a potential, an ``ase.Atoms`` and explicit tolerances, evaluates the model
through :func:`slhmc_jax.calculator.properties` with a fresh neighbour list, and raises
``AssertionError`` with the observed error when the property does not hold. Units: eV,
Angstrom, eV/A, eV/A^3, fs, K, amu.
"""

from __future__ import annotations

import weakref

import ase
import jax
import jax.numpy as jnp
import numpy as np
from ase import units

from slhmc_jax import neighbours as nl
from slhmc_jax.calculator import properties

__all__ = [
    "evaluate",
    "random_rotation",
    "assert_invariant",
    "assert_periodic_image_invariant",
    "assert_forces_match_finite_differences",
    "assert_stress_matches_strain_derivative",
    "assert_smooth_at_cutoff",
    "assert_nve_conserves_energy",
]

_JIT_CACHE: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()
_JIT_FALLBACK: dict = {}


def _jitted(potential):
    try:
        cache = _JIT_CACHE.setdefault(potential, {})
    except TypeError:  # unhashable or not weak-referenceable
        cache = _JIT_FALLBACK.setdefault(id(potential), {})
    if "props" not in cache:
        cache["props"] = jax.jit(lambda p, x, c, z, nb: properties(potential, p, x, c, z, nb, compute_stress=True))
    return cache["props"]


def evaluate(potential, atoms: ase.Atoms, params=None, *, max_neighbours=None):
    """(energy eV, forces (n, 3) eV/A, stress (3, 3) eV/A^3 or None) of ``atoms`` as float64 numpy.

    ``max_neighbours``: the neighbour format (None: pairs; an int K or "auto": dense per-atom).
    """
    params = potential.params if params is None else params
    pbc = tuple(bool(p) for p in atoms.get_pbc())
    positions, cell, pbc = nl.validate_geometry(atoms.get_positions(), np.asarray(atoms.get_cell()), pbc)
    nbrs = None
    if potential.cutoff is not None:
        _, nbrs = nl.allocate(positions, cell, pbc, potential.cutoff, 0.0, max_neighbours=max_neighbours)
    dtype = jax.tree.leaves(params)[0].dtype if jax.tree.leaves(params) else jnp.float64
    dtype = dtype if jnp.issubdtype(dtype, jnp.floating) else jnp.float64
    out = _jitted(potential)(
        params, jnp.asarray(positions, dtype), jnp.asarray(cell, dtype), jnp.asarray(atoms.get_atomic_numbers()), nbrs
    )
    stress = np.asarray(out.stress, np.float64) if all(pbc) else None
    return float(out.energy), np.asarray(out.forces, np.float64), stress


def random_rotation(rng: np.random.Generator, proper: bool = True) -> np.ndarray:
    """A uniformly random 3x3 orthogonal matrix (det +1 if ``proper``, else det -1)."""
    q, r = np.linalg.qr(rng.normal(size=(3, 3)))
    q = q * np.sign(np.diag(r))
    if np.linalg.det(q) < 0:
        q[:, 0] *= -1
    return q if proper else -q


def _check(name: str, observed: float, tol: float, what: str):
    if not observed <= tol:
        raise AssertionError(f"{name}: {what} = {observed:.3e} exceeds the tolerance {tol:.3e}")


def assert_invariant(
    potential,
    atoms: ase.Atoms,
    params=None,
    *,
    energy_atol: float = 1e-9,
    forces_atol: float = 1e-8,
    include_reflection: bool = True,
    seed: int = 0,
):
    """E invariant and F equivariant under rotation (and reflection), translation, permutation.

    Rotation Q acts on positions and cell rows: x -> x Q^T, cell -> cell Q^T, and
    F(x Q^T) = F(x) Q^T. Translation by a random vector; permutation by a random order.
    """
    rng = np.random.default_rng(seed)
    e0, f0, _ = evaluate(potential, atoms, params)
    ops = [("rotation", random_rotation(rng, True))]
    if include_reflection:
        ops.append(("improper rotation", random_rotation(rng, False)))
    for name, q in ops:
        moved = atoms.copy()
        moved.set_cell(np.asarray(atoms.get_cell()) @ q.T, scale_atoms=False)
        moved.set_positions(atoms.get_positions() @ q.T)
        e, f, _ = evaluate(potential, moved, params)
        _check(f"{name} invariance", abs(e - e0), energy_atol, "|E(Qx) - E(x)| (eV)")
        _check(f"{name} equivariance", np.max(np.abs(f - f0 @ q.T)), forces_atol, "max |F(Qx) - F(x) Q^T| (eV/A)")
    moved = atoms.copy()
    moved.translate(rng.normal(size=3) * 1.7)
    e, f, _ = evaluate(potential, moved, params)
    _check("translation invariance", abs(e - e0), energy_atol, "|E(x + t) - E(x)| (eV)")
    _check("translation invariance", np.max(np.abs(f - f0)), forces_atol, "max |F(x + t) - F(x)| (eV/A)")
    perm = rng.permutation(len(atoms))
    e, f, _ = evaluate(potential, atoms[perm], params)
    _check("permutation invariance", abs(e - e0), energy_atol, "|E(Px) - E(x)| (eV)")
    _check("permutation equivariance", np.max(np.abs(f - f0[perm])), forces_atol, "max |F(Px) - P F(x)| (eV/A)")


def assert_periodic_image_invariant(potential, atoms: ase.Atoms, params=None, *, energy_atol: float = 1e-8, forces_atol: float = 1e-8, seed: int = 0):
    """E(2x1x1 supercell) = 2 E(cell), forces repeat, and shifting atoms by lattice vectors changes nothing."""
    if not all(atoms.get_pbc()):
        raise ValueError("assert_periodic_image_invariant needs a fully periodic structure")
    rng = np.random.default_rng(seed)
    e0, f0, _ = evaluate(potential, atoms, params)
    for reps in ((2, 1, 1), (1, 1, 2)):
        sc = atoms.repeat(reps)
        e, f, _ = evaluate(potential, sc, params)
        _check(f"supercell {reps}", abs(e - 2 * e0), 2 * energy_atol, "|E(supercell) - 2 E(cell)| (eV)")
        _check(f"supercell {reps}", np.max(np.abs(f - np.concatenate([f0, f0]))), forces_atol, "max force difference (eV/A)")
    shifted = atoms.copy()
    lattice_shift = rng.integers(-2, 3, size=(len(atoms), 3)) @ np.asarray(atoms.get_cell())
    shifted.set_positions(atoms.get_positions() + lattice_shift)
    e, f, _ = evaluate(potential, shifted, params)
    _check("lattice-vector shift", abs(e - e0), energy_atol, "|E(x + n.cell) - E(x)| (eV)")
    _check("lattice-vector shift", np.max(np.abs(f - f0)), forces_atol, "max force difference (eV/A)")


def assert_forces_match_finite_differences(
    potential, atoms: ase.Atoms, params=None, *, delta: float = 1e-4, atol: float = 1e-6, max_components: int = 24, seed: int = 0
):
    """F_ia = -(E(x + delta e_ia) - E(x - delta e_ia)) / (2 delta) on up to ``max_components`` components."""
    rng = np.random.default_rng(seed)
    _, f0, _ = evaluate(potential, atoms, params)
    comps = [(i, a) for i in range(len(atoms)) for a in range(3)]
    if len(comps) > max_components:
        comps = [comps[k] for k in rng.choice(len(comps), max_components, replace=False)]
    worst = 0.0
    for i, a in comps:
        energies = []
        for sign in (1, -1):
            moved = atoms.copy()
            pos = moved.get_positions()
            pos[i, a] += sign * delta
            moved.set_positions(pos)
            energies.append(evaluate(potential, moved, params)[0])
        fd = -(energies[0] - energies[1]) / (2 * delta)
        worst = max(worst, abs(fd - f0[i, a]))
    _check("forces vs finite differences", worst, atol, "max |F - F_fd| (eV/A)")


def assert_stress_matches_strain_derivative(potential, atoms: ase.Atoms, params=None, *, delta: float = 1e-5, atol: float = 1e-7):
    """sigma_ab = (1/V) dE/d eps_ab for the homogeneous symmetric strain x -> x (1 + eps), cell -> cell (1 + eps).

    Central differences on all 6 independent components; eV/A^3.
    """
    if not all(atoms.get_pbc()):
        raise ValueError("assert_stress_matches_strain_derivative needs a fully periodic structure")
    _, _, s0 = evaluate(potential, atoms, params)
    volume = atoms.get_volume()
    worst = 0.0
    for a, b in ((0, 0), (1, 1), (2, 2), (1, 2), (0, 2), (0, 1)):
        energies = []
        for sign in (1, -1):
            eps = np.zeros((3, 3))
            eps[a, b] += 0.5 * sign * delta
            eps[b, a] += 0.5 * sign * delta
            deform = np.eye(3) + eps
            moved = atoms.copy()
            moved.set_cell(np.asarray(atoms.get_cell()) @ deform, scale_atoms=False)
            moved.set_positions(atoms.get_positions() @ deform)
            energies.append(evaluate(potential, moved, params)[0])
        fd = (energies[0] - energies[1]) / (2 * delta * volume)
        worst = max(worst, abs(fd - s0[a, b]))
    _check("stress vs strain derivative", worst, atol, "max |sigma - sigma_fd| (eV/A^3)")


def assert_smooth_at_cutoff(
    potential, atoms: ase.Atoms, params=None, *, width: float = 1e-3, n_points: int = 5, energy_atol: float = 1e-8, forces_atol: float = 1e-6
):
    """Energy and forces continuous as a pair of the first two species crosses the cutoff.

    A dimer (elements of ``atoms[0]`` and ``atoms[1]``) in vacuum at distances r_c +- width:
    every energy must equal the separated-atoms energy E(r > r_c) within ``energy_atol`` and the
    forces must go to zero within ``forces_atol``.
    """
    rc = potential.cutoff
    if rc is None:
        raise ValueError("assert_smooth_at_cutoff needs a potential with a cutoff")
    numbers = atoms.get_atomic_numbers()[:2]
    distances = np.concatenate([np.linspace(rc - width, rc - width / n_points, n_points), [rc + width]])
    results = []
    for r in distances:
        dimer = ase.Atoms(numbers=numbers, positions=[[0, 0, 0], [r, 0, 0]], cell=np.eye(3) * (3 * rc + 10), pbc=False)
        results.append(evaluate(potential, dimer, params))
    e_far = results[-1][0]
    _check("energy continuity at the cutoff", max(abs(e - e_far) for e, _, _ in results), energy_atol, "max |E(r_c - dr) - E(r > r_c)| (eV)")
    _check("forces continuity at the cutoff", max(np.max(np.abs(f)) for _, f, _ in results), forces_atol, "max |F| near r_c (eV/A)")


def assert_nve_conserves_energy(
    potential,
    atoms: ase.Atoms,
    params=None,
    *,
    timestep_fs: float = 0.5,
    n_steps: int = 200,
    temperature_K: float = 300.0,
    max_drift_eV_per_atom: float = 1e-4,
    skin: float = 1.0,
    seed: int = 0,
    max_neighbours=None,
):
    """Velocity-Verlet NVE run; max |E_tot(t) - E_tot(0)| / n_atoms must stay below the tolerance.

    ``max_neighbours``: the neighbour format (None: pairs; "auto" or K: dense per-atom).

    x(t+dt) = x + v dt + F dt^2/(2m);  v(t+dt) = v + (F(t) + F(t+dt)) dt/(2m)   (ASE units:
    eV, A, amu). Initial velocities: Maxwell-Boltzmann at ``temperature_K`` with zero total momentum.
    """
    params = potential.params if params is None else params
    pbc = tuple(bool(p) for p in atoms.get_pbc())
    positions, cell, pbc = nl.validate_geometry(atoms.get_positions(), np.asarray(atoms.get_cell()), pbc)
    z = jnp.asarray(atoms.get_atomic_numbers())
    masses = jnp.asarray(atoms.get_masses())[:, None]
    rng = np.random.default_rng(seed)
    v = rng.normal(size=positions.shape) * np.sqrt(units.kB * temperature_K / np.asarray(masses))
    v -= np.sum(np.asarray(masses) * v, axis=0) / np.sum(np.asarray(masses))
    dt = timestep_fs * units.fs
    cell_j = jnp.asarray(cell)
    if potential.cutoff is not None:
        layout, nbrs = nl.allocate(positions, cell, pbc, potential.cutoff, skin, max_neighbours=max_neighbours)
    else:
        layout, nbrs = None, None

    def force(x, nb):
        return properties(potential, params, x, cell_j, z, nb, compute_stress=False)

    def step(carry, _):
        x, v, f, nb = carry
        x = x + v * dt + 0.5 * f / masses * dt**2
        if layout is not None:
            nb = nl.update(layout, x, cell_j, nb)
        out = force(x, nb)
        v = v + 0.5 * (f + out.forces) / masses * dt
        e_tot = out.energy + 0.5 * jnp.sum(masses * v * v)
        overflow = nb.overflow if nb is not None else jnp.array(False)
        return (x, v, out.forces, nb), (e_tot, overflow)

    @jax.jit
    def run(x, v, nb):
        out = force(x, nb)
        e0 = out.energy + 0.5 * jnp.sum(masses * v * v)
        _, (e_tot, overflow) = jax.lax.scan(step, (x, v, out.forces, nb), None, length=n_steps)
        return e0, e_tot, jnp.any(overflow)

    e0, e_tot, overflow = run(jnp.asarray(positions), jnp.asarray(v), nbrs)
    if bool(overflow):
        raise AssertionError("NVE check: the neighbour list overflowed during the run (raise skin or shorten the run)")
    e_tot = np.asarray(e_tot)
    if not np.all(np.isfinite(e_tot)):
        raise AssertionError("NVE check: total energy became non-finite")
    drift = float(np.max(np.abs(e_tot - float(e0)))) / len(atoms)
    _check("NVE energy conservation", drift, max_drift_eV_per_atom, "max |E_tot(t) - E_tot(0)| / N (eV/atom)")
