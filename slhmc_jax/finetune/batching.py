"""Static-shape batches: structures -> neighbour graphs -> padded batches in a few shape buckets.

Host side (NumPy). Each structure's neighbour list is built once (training positions do not move)
with :func:`slhmc_jax.neighbours.neighbour_pairs` (exact, multi-image). A batch of B structures is

- ``layout="flat"``: one graph of N atoms and E edges (the B structures side by side, block-diagonal
  edges), padded to the smallest bucket (N_k, E_k) that holds it, with B graph slots;
- ``layout="vmap"``: B slots of one structure each, every slot padded to the bucket (n_k, e_k) of the
  largest structure in the batch; the model is vmapped over the slots.

Bucket levels are the quantiles of the sizes of the run's own training batches (the batch order is
seeded, so all of them are known before training), ``n_buckets`` levels with atoms and edges tied
to one level index, so a run compiles the train step at most ``n_buckets`` times whatever the batch
composition; evaluation batches share one (top) level. Padding atoms belong to graph slot B (dropped),
padding edges are masked (far edge vectors: they carry no weight and no gradient), padding graphs
have ``graph_mask = False``.
"""

from __future__ import annotations

import dataclasses
from typing import NamedTuple, Sequence

import numpy as np

from slhmc_jax.finetune.data import LabelledStructure


@dataclasses.dataclass(frozen=True, eq=False)
class StructureGraph:
    """One structure ready to batch.

    Attributes:
        structure: the labelled structure.
        species: (n,) int32 species-table index.
        senders, receivers: (E,) int32 edge endpoints (edge vector r_receiver - r_sender + S @ cell).
        shifts: (E, 3) int32 lattice shifts S.
        is_target: True for target data (counted in training metrics), False for replay data.
    """

    structure: LabelledStructure
    species: np.ndarray
    senders: np.ndarray
    receivers: np.ndarray
    shifts: np.ndarray
    is_target: bool = True

    @property
    def n_atoms(self) -> int:
        return self.structure.n_atoms

    @property
    def n_edges(self) -> int:
        return int(self.senders.shape[0])

    def max_in_degree(self) -> int:
        return int(np.bincount(self.receivers, minlength=1).max()) if self.n_edges else 0


def build_graphs(structures: Sequence[LabelledStructure], species_lookup: np.ndarray | None, cutoff: float | None,
                 *, is_target: bool = True) -> list[StructureGraph]:
    """Neighbour graphs (pairs with |d| < cutoff, A) of every structure; ``cutoff=None``: no edges."""
    import ase

    from slhmc_jax.neighbours import neighbour_pairs

    out = []
    for s in structures:
        if cutoff is None:
            i = j = np.zeros((0,), np.int64)
            S = np.zeros((0, 3), np.int64)
        else:
            atoms = ase.Atoms(numbers=s.numbers, positions=s.positions, cell=s.cell, pbc=s.pbc)
            i, j, S = neighbour_pairs(atoms, cutoff)
        species = np.zeros(s.n_atoms, np.int32) if species_lookup is None else species_lookup[s.numbers].astype(np.int32)
        out.append(StructureGraph(s, species, i.astype(np.int32), j.astype(np.int32), S.astype(np.int32), is_target))
    return out


class GraphBatch(NamedTuple):
    """A padded batch (flat layout; the vmap layout adds a leading slot axis to every leaf).

    Shapes: N atoms, E edges, G graph slots (all static per bucket).

    Attributes:
        positions: (N, 3) A.          cells: (G, 3, 3) A.
        species: (N,) int32.          atomic_numbers: (N,) int32.
        atom_graph: (N,) int32 graph slot of each atom (G for padding atoms).
        senders, receivers: (E,) int32.   shifts: (E, 3) int32.   edge_mask: (E,) bool.
        graph_mask: (G,) bool real graphs.  is_target: (G,) bool graphs counted in training metrics.
        n_atoms: (G,) float atoms per graph (1 for padding graphs).
        periodic: (G,) bool (stress is defined).
        energy: (G,) eV.  forces: (N, 3) eV/A.  stress: (G, 3, 3) eV/A^3.
        has_forces, has_stress: (G,) bool, the graph carries force / stress labels.
    """

    positions: np.ndarray
    cells: np.ndarray
    species: np.ndarray
    atomic_numbers: np.ndarray
    atom_graph: np.ndarray
    senders: np.ndarray
    receivers: np.ndarray
    shifts: np.ndarray
    edge_mask: np.ndarray
    graph_mask: np.ndarray
    is_target: np.ndarray
    n_atoms: np.ndarray
    periodic: np.ndarray
    energy: np.ndarray
    forces: np.ndarray
    stress: np.ndarray
    has_forces: np.ndarray
    has_stress: np.ndarray


@dataclasses.dataclass(frozen=True)
class Buckets:
    """The static shapes of one run.

    Attributes:
        layout: "flat" or "vmap".
        batch_size: graph slots per batch (B).
        atoms: per level, atoms per batch (flat) or per slot (vmap).
        edges: per level, edges per batch (flat) or per slot (vmap).
        exact_atoms: slots hold exactly their structure's atoms (potentials that cannot pad atoms);
            then ``atoms`` lists the distinct atom counts and batches never mix them.
    """

    layout: str
    batch_size: int
    atoms: tuple[int, ...]
    edges: tuple[int, ...]
    exact_atoms: bool = False

    def level(self, n_atoms: int, n_edges: int) -> int:
        """Smallest level holding ``n_atoms`` and ``n_edges``."""
        if self.exact_atoms:
            k = self.atoms.index(n_atoms)
            if n_edges > self.edges[k]:
                raise ValueError(f"batch has {n_edges} edges, bucket {k} holds {self.edges[k]}")
            return k
        for k, (a, e) in enumerate(zip(self.atoms, self.edges)):
            if n_atoms <= a and n_edges <= e:
                return k
        raise ValueError(f"batch of {n_atoms} atoms / {n_edges} edges exceeds the largest bucket "
                         f"({self.atoms[-1]}, {self.edges[-1]})")


def _ladder(lo: int, hi: int, n: int) -> list[int]:
    lo, hi = max(1, int(lo)), max(1, int(hi))
    if n <= 1 or hi <= lo:
        return [hi] * max(n, 1)
    return [int(np.ceil(v)) for v in np.geomspace(lo, hi, n)]


def batch_size_of(graphs: Sequence[StructureGraph], layout: str) -> tuple[int, int]:
    """(atoms, edges) a batch needs: totals (flat) or the largest structure (vmap)."""
    if layout == "flat":
        return sum(g.n_atoms for g in graphs), sum(g.n_edges for g in graphs)
    return max(g.n_atoms for g in graphs), max(g.n_edges for g in graphs)


MERGE_FRACTION = 0.9  # a level within 10% of the next one up (atoms and edges) is merged into it


def _quantile_levels(sizes, n: int) -> list[tuple[int, int]]:
    """The k/n quantiles (k = 1..n) of atoms and edges; a level that would save less than 10% of the
    next level's atoms and edges is dropped (its compilation would cost more than its padding)."""
    atoms = np.sort([a for a, _ in sizes])
    edges = np.sort([max(e, 1) for _, e in sizes])
    m = len(atoms)
    picks = sorted({int(np.ceil((k + 1) / n * m)) - 1 for k in range(n)})
    levels = sorted({(int(atoms[i]), int(edges[i])) for i in picks})
    kept = [levels[-1]]
    for a, e in reversed(levels[:-1]):
        if a <= MERGE_FRACTION * kept[-1][0] or e <= MERGE_FRACTION * kept[-1][1]:
            kept.append((a, e))
    return kept[::-1]


def plan_buckets(graphs: Sequence[StructureGraph], batch_size: int, n_buckets: int, layout: str,
                 exact_atoms: bool = False, train_batches=None, eval_batches=None) -> Buckets:
    """The static shapes of a run.

    With ``train_batches`` (every training batch of the run, as graph lists; the batch order is
    seeded, so it is known in advance) the levels are the 1/n, 2/n, ..., n/n quantiles of their
    atom and edge counts: every batch fits, each level is used, the train step compiles at most
    ``n_buckets`` times, and padding is small where sizes cluster. ``eval_batches`` all run in one
    extra top level if they need more. Without them: a geometric ladder between the smallest and
    largest batch ``graphs`` can form.
    """
    atoms = np.array([g.n_atoms for g in graphs])
    edges = np.array([g.n_edges for g in graphs])
    b = min(batch_size, len(graphs))
    if exact_atoms:
        counts = sorted(set(atoms.tolist()))
        max_e = [int(edges[atoms == n].max()) for n in counts]
        return Buckets(layout, batch_size, tuple(counts), tuple(max(e, 1) for e in max_e), True)
    if train_batches:
        levels = _quantile_levels([batch_size_of(g, layout) for g in train_batches], n_buckets)
        if eval_batches:
            need = [batch_size_of(g, layout) for g in eval_batches]
            top_a, top_e = max(a for a, _ in need), max(e for _, e in need)
            if top_a > levels[-1][0] or top_e > levels[-1][1]:
                levels.append((max(top_a, levels[-1][0]), max(top_e, levels[-1][1])))
        return Buckets(layout, batch_size, tuple(a for a, _ in levels), tuple(e for _, e in levels), False)
    if layout == "flat":
        # full batches lie between the sums of the b smallest and the b largest structures (a short
        # last batch fits some level at or below the top one)
        hi_a, hi_e = int(np.sort(atoms)[-b:].sum()), int(np.sort(edges)[-b:].sum())
        lo_a, lo_e = int(np.sort(atoms)[:b].sum()), int(np.sort(edges)[:b].sum())
    else:
        hi_a, hi_e = int(atoms.max()), int(edges.max())
        lo_a, lo_e = int(atoms.min()), int(edges.min())
    la, le = _ladder(lo_a, hi_a, n_buckets), _ladder(max(lo_e, 1), max(hi_e, 1), n_buckets)
    # one level per distinct (atoms, edges) pair, both non-decreasing
    levels = sorted(set(zip(la, le)))
    return Buckets(layout, batch_size, tuple(a for a, _ in levels), tuple(e for _, e in levels), False)


def _empty_flat(n_atoms: int, n_edges: int, n_graphs: int) -> dict:
    return dict(
        positions=np.zeros((n_atoms, 3)), cells=np.tile(np.eye(3), (n_graphs, 1, 1)),
        species=np.zeros(n_atoms, np.int32), atomic_numbers=np.zeros(n_atoms, np.int32),
        atom_graph=np.full(n_atoms, n_graphs, np.int32),
        senders=np.zeros(n_edges, np.int32), receivers=np.zeros(n_edges, np.int32),
        shifts=np.zeros((n_edges, 3), np.int32), edge_mask=np.zeros(n_edges, bool),
        graph_mask=np.zeros(n_graphs, bool), is_target=np.zeros(n_graphs, bool),
        n_atoms=np.ones(n_graphs), periodic=np.zeros(n_graphs, bool),
        energy=np.zeros(n_graphs), forces=np.zeros((n_atoms, 3)), stress=np.zeros((n_graphs, 3, 3)),
        has_forces=np.zeros(n_graphs, bool), has_stress=np.zeros(n_graphs, bool),
    )


def _fill(d: dict, graphs: Sequence[StructureGraph], pad_edge_index: int) -> None:
    a0 = e0 = 0
    for g_idx, g in enumerate(graphs):
        s = g.structure
        n, e = g.n_atoms, g.n_edges
        d["positions"][a0:a0 + n] = s.positions
        d["cells"][g_idx] = s.cell
        d["species"][a0:a0 + n] = g.species
        d["atomic_numbers"][a0:a0 + n] = s.numbers
        d["atom_graph"][a0:a0 + n] = g_idx
        d["senders"][e0:e0 + e] = g.senders + a0
        d["receivers"][e0:e0 + e] = g.receivers + a0
        d["shifts"][e0:e0 + e] = g.shifts
        d["edge_mask"][e0:e0 + e] = True
        d["graph_mask"][g_idx] = True
        d["is_target"][g_idx] = g.is_target
        d["n_atoms"][g_idx] = n
        d["periodic"][g_idx] = s.periodic
        d["energy"][g_idx] = 0.0 if s.energy_eV is None else s.energy_eV
        if s.forces_eV_A is not None:
            d["forces"][a0:a0 + n] = s.forces_eV_A
            d["has_forces"][g_idx] = True
        if s.stress_eV_A3 is not None and s.periodic:
            d["stress"][g_idx] = s.stress_eV_A3
            d["has_stress"][g_idx] = True
        a0 += n
        e0 += e
    if pad_edge_index is not None:
        d["senders"][e0:] = pad_edge_index
        d["receivers"][e0:] = pad_edge_index


def assemble(graphs: Sequence[StructureGraph], buckets: Buckets, dtype=np.float64, level: int | None = None) -> tuple[int, GraphBatch]:
    """(bucket level, padded batch) of up to ``buckets.batch_size`` graphs, floats in ``dtype``.

    ``level``: None picks the smallest level that holds the batch; -1 the largest (one shape for
    every batch; ignored where atoms cannot be padded).
    """
    b = buckets.batch_size
    if not 1 <= len(graphs) <= b:
        raise ValueError(f"a batch holds 1..{b} structures; got {len(graphs)}")
    top = len(buckets.atoms) - 1
    if buckets.layout == "flat":
        needed = buckets.level(sum(g.n_atoms for g in graphs), sum(g.n_edges for g in graphs))
        level = needed if level is None else (top if level == -1 else max(level, needed))
        d = _empty_flat(buckets.atoms[level], buckets.edges[level], b)
        _fill(d, graphs, 0)
    else:
        sizes = [(g.n_atoms, g.n_edges) for g in graphs]
        if buckets.exact_atoms:
            if len({n for n, _ in sizes}) != 1:
                raise ValueError("this potential cannot pad atoms: a batch must hold structures of one atom count")
            level = buckets.level(sizes[0][0], max(e for _, e in sizes))
        else:
            needed = buckets.level(max(n for n, _ in sizes), max(e for _, e in sizes))
            level = needed if level is None else (top if level == -1 else max(level, needed))
        n_pad, e_pad = buckets.atoms[level], buckets.edges[level]
        slots = []
        for k in range(len(graphs)):
            d = _empty_flat(n_pad, e_pad, 1)
            # padded edges point at atom n (the Neighbours convention) where atoms are not padded
            _fill(d, graphs[k:k + 1], n_pad if buckets.exact_atoms else 0)
            slots.append(d)
        for _ in range(len(graphs), b):
            # empty slots repeat slot 0, masked out (a real geometry keeps every model finite there)
            d = {key: v.copy() for key, v in slots[0].items()}
            d["graph_mask"][:] = False
            d["is_target"][:] = False
            d["has_forces"][:] = False
            d["has_stress"][:] = False
            slots.append(d)
        d = {key: np.stack([s[key] for s in slots]) for key in slots[0]}
    floats = ("positions", "cells", "n_atoms", "energy", "forces", "stress")
    return level, GraphBatch(**{k: (v.astype(dtype) if k in floats else v) for k, v in d.items()})


def epoch_batches(n_train: int, batch_size: int, seed: int, epoch: int, *, n_replay: int = 0, replay_per_batch: int = 0,
                  groups: np.ndarray | None = None) -> list[tuple[np.ndarray, np.ndarray]]:
    """The epoch's batches as (train indices, replay indices), from a generator seeded by (seed, epoch).

    Every training structure appears once per epoch, ``batch_size - replay_per_batch`` per batch
    (the last batch may be smaller); each batch adds ``replay_per_batch`` distinct replay structures
    drawn at random. ``groups`` (per-structure atom counts) keeps batches within one group.
    """
    rng = np.random.default_rng([int(seed), int(epoch)])
    per = batch_size - replay_per_batch
    order = rng.permutation(n_train)
    chunks: list[np.ndarray] = []
    if groups is None:
        chunks = [order[k:k + per] for k in range(0, n_train, per)]
    else:
        for gval in sorted(set(groups.tolist())):
            members = order[groups[order] == gval]
            chunks += [members[k:k + per] for k in range(0, len(members), per)]
        chunks = [chunks[k] for k in rng.permutation(len(chunks))]
    out = []
    for c in chunks:
        r = rng.choice(n_replay, size=min(replay_per_batch, n_replay), replace=False) if replay_per_batch else np.zeros(0, int)
        out.append((c, r))
    return out
