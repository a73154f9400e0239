"""Energies, forces and stress of a padded batch (pure, jit- and vmap-able).

Two kinds of model, both static (hashable) so that compiled steps are shared between runs:

- :class:`GraphModel`, for every :class:`~slhmc_jax.models.FlaxPotential` (MACE included): node
  energies from ``module.apply(params, species, senders, receivers, edge_vectors, edge_mask)`` on a
  whole batch graph, summed per graph slot; atoms may be padded.
- :class:`PotentialModel`, for any other :class:`~slhmc_jax.models.Potential`: its ``energy`` per
  structure, vmapped over slots that hold exactly their structure's atoms.

Forces and stress by autodiff (as :mod:`slhmc_jax.calculator`):

    F_i = -dE/dx_i  (eV/A),     sigma_b = (1/V_b) dE_b/d eps_b at eps = 0  (eV/A^3)

with the homogeneous strain x -> x (1 + sym eps_b), cell_b -> cell_b (1 + sym eps_b) of graph b.
"""

from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from slhmc_jax import neighbours as nl
from slhmc_jax.finetune.batching import GraphBatch


class Predictions(NamedTuple):
    """energy (G,) eV; forces (N, 3) eV/A; stress (G, 3, 3) eV/A^3 (zeros when not computed)."""

    energy: jax.Array
    forces: jax.Array
    stress: jax.Array


@dataclasses.dataclass(frozen=True)
class GraphModel:
    """A FlaxPotential's module on a flat batch graph. ``module`` must be hashable (MACE's is).

    ``max_neighbours`` (K): the batch's edges are grouped by receiver into the dense per-atom
    format of :mod:`slhmc_jax.neighbours` ((N, K) slots, ``neighbours.receiver_slots``) for modules
    that read it (MACE sums messages by batched matmuls there); K must hold the largest in-degree.
    """

    module: Any
    cutoff: float
    max_neighbours: int | None = None
    exact_atoms = False

    def energies(self, params, batch: GraphBatch, positions, cells) -> jax.Array:
        """(G,) energies, eV, of the graph slots (padding atoms sit in slot G and are dropped)."""
        n_graphs, n_atoms = cells.shape[0], positions.shape[0]
        senders, receivers, shifts, edge_mask = batch.senders, batch.receivers, batch.shifts, batch.edge_mask
        if self.max_neighbours is not None:
            slot, _ = nl.receiver_slots(receivers, edge_mask, n_atoms, self.max_neighbours)
            n_edges = edge_mask.shape[0]
            pick = jnp.minimum(slot, n_edges - 1)
            edge_mask = slot < n_edges
            senders = jnp.where(edge_mask, senders[pick], 0)
            receivers = jnp.where(edge_mask, receivers[pick], 0)
            shifts = shifts[pick]
        cells_ext = jnp.concatenate([cells, jnp.eye(3, dtype=cells.dtype)[None]], axis=0)
        edge_graph = jnp.take(batch.atom_graph, senders)
        d = (jnp.take(positions, receivers, axis=0) - jnp.take(positions, senders, axis=0)
             + jnp.einsum("...k,...kl->...l", shifts.astype(positions.dtype), jnp.take(cells_ext, edge_graph, axis=0)))
        mask = edge_mask & (jnp.sum(d * d, axis=-1) < self.cutoff**2)
        far = jnp.zeros_like(d).at[..., 0].set(10.0 * self.cutoff + 1.0)
        d = jnp.where(mask[..., None], d, far)
        node = jnp.asarray(self.module.apply(params, batch.species, senders, receivers, d, mask))
        node = node.reshape(n_atoms)
        return jax.ops.segment_sum(node, batch.atom_graph, num_segments=n_graphs + 1)[:n_graphs]


@dataclasses.dataclass(frozen=True, eq=False)
class PotentialModel:
    """Any Potential, one structure per slot (no padded atoms).

    Equal (and hashed alike) for potentials of one dataclass type whose fields other than ``params``
    are equal and hashable (their energy functions are the same, so compiled steps are shared);
    by identity otherwise.
    """

    potential: Any
    exact_atoms = True

    def _key(self):
        p = self.potential
        if dataclasses.is_dataclass(p):
            key = (type(p),) + tuple((f.name, getattr(p, f.name)) for f in dataclasses.fields(p) if f.name != "params")
            try:
                hash(key)
                return key
            except TypeError:
                pass
        return (id(p),)

    def __hash__(self):
        return hash(self._key())

    def __eq__(self, other):
        return isinstance(other, PotentialModel) and self._key() == other._key()

    def energies(self, params, batch: GraphBatch, positions, cells) -> jax.Array:
        """(1,) energy, eV, of a single-structure slot."""
        if self.potential.cutoff is None:
            nbrs = None
        else:
            nbrs = nl.Neighbours(
                senders=batch.senders, receivers=batch.receivers, shifts=batch.shifts, mask=batch.edge_mask,
                n_pairs=jnp.sum(batch.edge_mask).astype(jnp.int32), max_per_atom=jnp.zeros((), jnp.int32),
                overflow=jnp.array(False), reference_positions=positions, reference_cell=cells[0])
        return self.potential.energy(params, positions, cells[0], batch.atomic_numbers, nbrs)[None]


def as_model(potential, max_neighbours: int | None = None):
    """The static model of ``potential``: a GraphModel for FlaxPotentials (edges in ``max_neighbours``
    receiver slots when given and the model prefers the dense format), else a PotentialModel."""
    from slhmc_jax.models.flax_potential import FlaxPotential

    if isinstance(potential, FlaxPotential):
        try:
            hash(potential.module)
        except TypeError:
            return PotentialModel(potential)
        k = max_neighbours if potential.prefers_dense_neighbours else None
        return GraphModel(potential.module, float(potential.cutoff), k)
    return PotentialModel(potential)


def predict(model, params, batch: GraphBatch, compute_stress: bool) -> Predictions:
    """Energies, forces and (if ``compute_stress``) stress of one flat batch."""
    dtype = batch.positions.dtype
    n_graphs = batch.cells.shape[0]

    def total(positions, eps):
        if eps is None:
            return jnp.sum(model.energies(params, batch, positions, batch.cells)), None
        sym = 0.5 * (eps + jnp.swapaxes(eps, 1, 2))
        eye = jnp.eye(3, dtype=dtype)
        deform = eye[None] + sym  # (G, 3, 3)
        deform_ext = jnp.concatenate([deform, eye[None]], axis=0)
        x = jnp.einsum("ni,nij->nj", positions, jnp.take(deform_ext, batch.atom_graph, axis=0))
        cells = jnp.einsum("gij,gjk->gik", batch.cells, deform)
        e = model.energies(params, batch, x, cells)
        return jnp.sum(e), e

    if compute_stress:
        eps0 = jnp.zeros((n_graphs, 3, 3), dtype)
        (_, energy), (g_x, g_eps) = jax.value_and_grad(total, argnums=(0, 1), has_aux=True)(batch.positions, eps0)
        volume = jnp.where(batch.periodic, jnp.abs(jnp.linalg.det(batch.cells)), 1.0)
        stress = jnp.where(batch.periodic[:, None, None], g_eps / volume[:, None, None], 0.0)
        return Predictions(energy, -g_x, stress)
    energy, vjp = jax.vjp(lambda x: model.energies(params, batch, x, batch.cells), batch.positions)
    (g_x,) = vjp(jnp.ones_like(energy))
    return Predictions(energy, -g_x, jnp.zeros((n_graphs, 3, 3), dtype))


def predict_batch(model, params, batch: GraphBatch, layout: str, compute_stress: bool) -> tuple[Predictions, GraphBatch]:
    """Predictions and the batch with the vmap slot axis merged into the atom / graph axes.

    Returns arrays shaped as a flat batch in both layouts: energy (G,), forces (N, 3), stress (G, 3, 3).
    """
    if layout == "flat":
        return predict(model, params, batch, compute_stress), batch
    pred = jax.vmap(lambda b: predict(model, params, b, compute_stress))(batch)
    slots = batch.positions.shape[0]
    n_per = batch.positions.shape[1]
    # slot k's atoms belong to graph k (its padding atoms to no graph: index `slots`)
    atom_graph = jnp.where(batch.atom_graph == 0, jnp.arange(slots)[:, None], slots)
    flat = GraphBatch(*[x.reshape((-1,) + x.shape[2:]) for x in batch])._replace(atom_graph=atom_graph.reshape(-1))
    merged = Predictions(pred.energy.reshape(-1), pred.forces.reshape(slots * n_per, 3), pred.stress.reshape(-1, 3, 3))
    return merged, flat
