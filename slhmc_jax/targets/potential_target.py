"""A machine-learning Potential as a Target: a model judging configurations (its own Boltzmann
distribution sampled exactly by HMC, the source distribution of a relabelling control, the
evaluation of a fine-tuned model).

Batches are evaluated in one compiled, vmapped call (energies, forces and, for periodic cells,
stress by autodiff, as :mod:`slhmc_jax.calculator`). The neighbour layout is allocated on the
first batch and regrown whenever a build overflows, so no pair is ever lost.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from ase.stress import full_3x3_to_voigt_6_stress

from slhmc_jax import neighbours as nb
from slhmc_jax.calculator import check_species, properties
from slhmc_jax.targets.base import TargetResult, default_chains, energies_eV


class PotentialTarget:
    """Energies (eV), forces (eV/A) and stress (eV/A^3, periodic cells) of a Potential.

    Args:
        potential: a :class:`slhmc_jax.models.Potential`.
        compute_forces: results carry forces (they cost nothing extra here).
        skin_A: neighbour-list skin (the layout is reused while it fits).
    """

    def __init__(self, potential, compute_forces: bool = True, skin_A: float = 0.5):
        from slhmc_jax.sampler.driver import proposal_hash

        self.potential = potential
        self.compute_forces = bool(compute_forces)
        self.skin_A = float(skin_A)
        self._hash = proposal_hash(potential.params)
        self._layouts: dict = {}
        self._fn = jax.jit(jax.vmap(
            lambda params, x, c, z, nbrs: properties(potential, params, x, c, z, nbrs, compute_stress=True),
            in_axes=(None, 0, 0, None, 0)))

    @property
    def atomic_numbers(self):
        """The potential's species table (None: any element); see ``targets.base.declared_species``."""
        return getattr(self.potential, "atomic_numbers", None)

    def settings(self) -> dict:
        return {"method": "potential", "type": type(self.potential).__name__, "params_sha256": self._hash,
                "cutoff": self.potential.cutoff}

    def with_forces(self) -> "PotentialTarget":
        return self

    def _neighbours(self, positions, cells, pbc):
        if self.potential.cutoff is None:
            return None
        key = (positions.shape, pbc)
        layout = self._layouts.get(key)
        if layout is None:
            dense = "auto" if getattr(self.potential, "prefers_dense_neighbours", False) else None
            layout, nbrs = nb.allocate(positions, cells, pbc, float(self.potential.cutoff), self.skin_A, batch=True,
                                       max_neighbours=dense)
        else:
            layout, nbrs = nb.reallocate(layout, positions, cells, batch=True)
        self._layouts[key] = layout
        return nbrs

    def evaluate(self, atoms_list, chains=None) -> list[TargetResult]:
        default_chains(atoms_list, chains)
        out: list[TargetResult | None] = [None] * len(atoms_list)
        groups: dict = {}
        for j, a in enumerate(atoms_list):  # one compiled batch per composition and periodicity
            groups.setdefault((tuple(a.numbers), tuple(bool(p) for p in a.pbc)), []).append(j)
        for (numbers, pbc), idx in groups.items():
            z = check_species(self.potential, np.asarray(numbers))
            positions = np.stack([atoms_list[j].positions for j in idx])
            cells = np.stack([atoms_list[j].cell.array for j in idx])
            nbrs = self._neighbours(positions, cells, pbc)
            res = self._fn(self.potential.params, jnp.asarray(positions), jnp.asarray(cells), jnp.asarray(z), nbrs)
            energies, forces, stress = (np.asarray(v, np.float64) for v in res)
            for m, j in enumerate(idx):
                out[j] = TargetResult(float(energies[m]), forces[m] if self.compute_forces else None,
                                      full_3x3_to_voigt_6_stress(stress[m]) if all(pbc) else None)
        return out  # type: ignore[return-value]

    def __call__(self, atoms_list) -> np.ndarray:
        """(n,) energies in eV."""
        return energies_eV(self.evaluate(atoms_list))
