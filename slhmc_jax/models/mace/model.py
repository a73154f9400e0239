"""ScaleShiftMACE (Batatia et al., NeurIPS 2022; MACE-MP-0) as a pure JAX function of a parameter pytree.

    E = sum_i [ E0(z_i) + scale * sum_t readout_t(h_i^(t)) + shift ]          (eV)

with, for each interaction t: radial weights R(|r_ij|) from a Bessel basis times a polynomial
envelope fed through an MLP, messages from the tensor product of neighbour features with the
spherical harmonics Y(r_ij), a linear map divided by avg_num_neighbors, an element-dependent skip
map, the symmetric contraction to correlation order nu, and a linear update (plus the residual).
Every block follows mace-torch 0.3's ``ScaleShiftMACE`` with ``RealAgnostic(Residual)InteractionBlock``,
``use_reduced_cg=False``, single head, so that mace-torch weights load unchanged.
"""

from __future__ import annotations

import dataclasses
import functools
import json
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from slhmc_jax.models.mace import blocks
from slhmc_jax.models.mace import irreps as ir
from slhmc_jax.models.flax_potential import FlaxPotential, SpeciesTable

PyTree = Any

RESIDUAL = "RealAgnosticResidualInteractionBlock"
NON_RESIDUAL = "RealAgnosticInteractionBlock"
INTERACTION_BLOCKS = (RESIDUAL, NON_RESIDUAL)

# Elements of the MPtrj training set of MACE-MP-0: Z = 1-83 and 89-94 (89 elements).
MP0_ATOMIC_NUMBERS = tuple(range(1, 84)) + tuple(range(89, 95))


@dataclasses.dataclass(frozen=True)
class MACEHyperparameters:
    """Everything that fixes the architecture (not the trained weights).

    Attributes:
        atomic_numbers: species table, e.g. (8, 22).
        atomic_energies_eV: E0 per element of the table, eV.
        r_max: cutoff radius, A.
        num_bessel: radial Bessel functions.
        num_polynomial_cutoff: p of the polynomial envelope.
        max_ell: highest spherical-harmonic degree.
        num_interactions: message-passing layers.
        hidden_irreps: node features, e.g. "128x0e" or "128x0e+128x1o" (equal multiplicities).
        MLP_irreps: hidden irreps of the last (non-linear) readout, e.g. "16x0e".
        correlation: body order of the symmetric contraction (int, or one per interaction).
        radial_MLP: hidden widths of the radial MLP.
        avg_num_neighbors: message normalisation.
        atomic_inter_scale, atomic_inter_shift: node interaction energy scale (eV) and shift (eV).
        interaction_first, interaction: interaction block classes (see INTERACTION_BLOCKS).
        gate: non-linearity of the readout MLP (only "silu").
        silu_normalization: the normalize2mom constant e3nn uses for silu.
    """

    atomic_numbers: tuple[int, ...]
    atomic_energies_eV: tuple[float, ...]
    r_max: float = 6.0
    num_bessel: int = 10
    num_polynomial_cutoff: int = 5
    max_ell: int = 3
    num_interactions: int = 2
    hidden_irreps: str = "128x0e"
    MLP_irreps: str = "16x0e"
    correlation: int | tuple[int, ...] = 3
    radial_MLP: tuple[int, ...] = (64, 64, 64)
    avg_num_neighbors: float = 1.0
    atomic_inter_scale: float = 1.0
    atomic_inter_shift: float = 0.0
    interaction_first: str = RESIDUAL
    interaction: str = RESIDUAL
    gate: str = "silu"
    silu_normalization: float = blocks.SILU_NORMALIZATION

    def __post_init__(self):
        z = SpeciesTable(tuple(int(v) for v in self.atomic_numbers)).atomic_numbers
        object.__setattr__(self, "atomic_numbers", z)
        e0 = tuple(float(v) for v in np.ravel(self.atomic_energies_eV))
        if len(e0) != len(z):
            raise ValueError(f"atomic_energies_eV has {len(e0)} entries for {len(z)} elements {z}")
        object.__setattr__(self, "atomic_energies_eV", e0)
        object.__setattr__(self, "hidden_irreps", ir.to_string(ir.parse(self.hidden_irreps)))
        object.__setattr__(self, "MLP_irreps", ir.to_string(ir.parse(self.MLP_irreps)))
        object.__setattr__(self, "radial_MLP", tuple(int(v) for v in self.radial_MLP))
        corr = self.correlation
        corr = tuple(int(c) for c in corr) if isinstance(corr, (tuple, list)) else int(corr)
        object.__setattr__(self, "correlation", corr)
        for name in ("r_max", "avg_num_neighbors", "atomic_inter_scale", "atomic_inter_shift", "silu_normalization"):
            object.__setattr__(self, name, float(getattr(self, name)))
        problems = []
        if not self.r_max > 0:
            problems.append(f"r_max must be > 0 A (got {self.r_max})")
        if self.num_interactions < 1:
            problems.append(f"num_interactions must be >= 1 (got {self.num_interactions})")
        if not 0 <= self.max_ell <= 5:
            problems.append(f"max_ell must be in 0..5 (got {self.max_ell})")
        for c in self.correlations:
            if not 1 <= c <= 4:
                problems.append(f"correlation must be in 1..4 (got {c})")
        if isinstance(corr, tuple) and len(corr) != self.num_interactions:
            problems.append(f"correlation has {len(corr)} entries for {self.num_interactions} interactions")
        hidden = ir.parse(self.hidden_irreps)
        channels = ir.count(hidden, (0, 1))
        if channels == 0 or any(m.mul != channels for m in hidden):
            problems.append(f"hidden_irreps must contain 0e and equal multiplicities (got {self.hidden_irreps})")
        if any(m.ir != (0, 1) for m in ir.parse(self.MLP_irreps)):
            problems.append(f"MLP_irreps must be scalars 'Nx0e' (got {self.MLP_irreps})")
        for name in ("interaction_first", "interaction"):
            if getattr(self, name) not in INTERACTION_BLOCKS:
                problems.append(f"{name} must be one of {INTERACTION_BLOCKS} (got {getattr(self, name)!r})")
        if self.gate != "silu":
            problems.append(f"gate must be 'silu' (got {self.gate!r})")
        if self.num_bessel < 1 or self.num_polynomial_cutoff < 1 or not self.radial_MLP:
            problems.append("num_bessel, num_polynomial_cutoff and radial_MLP must be positive")
        if problems:
            raise ValueError("bad MACE hyperparameters: " + "; ".join(problems))

    @property
    def correlations(self) -> tuple[int, ...]:
        c = self.correlation
        return c if isinstance(c, tuple) else (c,) * self.num_interactions

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self))

    @classmethod
    def from_json(cls, text: str) -> "MACEHyperparameters":
        d = json.loads(text)
        for k in ("atomic_numbers", "atomic_energies_eV", "radial_MLP"):
            d[k] = tuple(d[k])
        if isinstance(d["correlation"], list):
            d["correlation"] = tuple(d["correlation"])
        return cls(**d)


def mp0_hyperparameters(size: str = "small", atomic_numbers=MP0_ATOMIC_NUMBERS, **overrides) -> MACEHyperparameters:
    """The MACE-MP-0 architecture (Batatia et al. 2023): 2 residual interactions, correlation 3,
    max_ell 3, r_max 6 A, 10 Bessel functions, p = 5, MLP 16x0e, radial MLP [64, 64, 64];
    hidden 128x0e ("small"), 128x0e+128x1o ("medium") or 128x0e+128x1o+128x2e ("large").

    E0s default to 0 eV, scale 1 and shift 0, avg_num_neighbors to 61.96 (about MPtrj's mean
    neighbour count at 6 A); load the released checkpoint with :func:`slhmc_jax.models.mace.load`
    to get the trained values.
    """
    hidden = {"small": "128x0e", "medium": "128x0e+128x1o", "large": "128x0e+128x1o+128x2e"}
    if size not in hidden:
        raise ValueError(f"unknown MACE-MP-0 size {size!r}; choose from {sorted(hidden)}")
    z = tuple(int(v) for v in atomic_numbers)
    kwargs = dict(
        atomic_numbers=z,
        atomic_energies_eV=(0.0,) * len(z),
        r_max=6.0,
        num_bessel=10,
        num_polynomial_cutoff=5,
        max_ell=3,
        num_interactions=2,
        hidden_irreps=hidden[size],
        MLP_irreps="16x0e",
        correlation=3,
        radial_MLP=(64, 64, 64),
        avg_num_neighbors=61.96,
        interaction_first=RESIDUAL,
        interaction=RESIDUAL,
    )
    kwargs.update(overrides)
    if "atomic_numbers" in overrides and "atomic_energies_eV" not in overrides:
        kwargs["atomic_energies_eV"] = (0.0,) * len(tuple(overrides["atomic_numbers"]))
    return MACEHyperparameters(**kwargs)


# ----------------------------------------------------------------------------------------
# static structure


class LayerPlan(NamedTuple):
    node_irreps: tuple  # input node features
    target_irreps: tuple  # message irreps after the linear map (= product-basis input)
    hidden_out: tuple  # output node features
    residual: bool
    conv: blocks.ConvPlan
    linear_up: blocks.LinearPlan
    linear: blocks.LinearPlan
    product_linear: blocks.LinearPlan
    coupling: tuple  # (l, p) of the product-basis feature axis
    correlation: int
    use_sc: bool
    readout: str  # "linear" or "nonlinear"


@functools.lru_cache(maxsize=None)
def plan(h: MACEHyperparameters) -> tuple[LayerPlan, ...]:
    """Per-interaction irreps and instructions, exactly as mace-torch's MACE.__init__ lays them out."""
    hidden = ir.parse(h.hidden_irreps)
    channels = ir.count(hidden, (0, 1))
    sh = ir.spherical_harmonics_irreps(h.max_ell)
    if ir.count(hidden, (0, -1)) > 0:
        sh_inter = tuple(ir.MulIrrep(1, l, p) for l in range(h.max_ell + 1) for p in (1, -1))
    else:
        sh_inter = sh

    def times(irreps):
        return ir.simplify(ir.sort(tuple(ir.MulIrrep(channels, m.l, m.p) for m in irreps))[0])

    layers = []
    n = h.num_interactions
    for t in range(n):
        node = (ir.MulIrrep(channels, 0, 1),) if t == 0 else hidden
        target = times(sh) if t == 0 else times(sh_inter)
        if n == 1 or t == n - 1:
            out = (hidden[0],)
        else:
            out = hidden
        cls = h.interaction_first if t == 0 else h.interaction
        residual = cls == RESIDUAL
        if any(m.mul != channels for m in target):
            raise ValueError("interaction irreps must have equal multiplicities")
        layers.append(
            LayerPlan(
                node_irreps=node,
                target_irreps=target,
                hidden_out=out,
                residual=residual,
                conv=blocks.conv_plan(node, sh, target),
                linear_up=blocks.linear_plan(node, node),
                linear=blocks.linear_plan(blocks.conv_plan(node, sh, target).irreps_mid, target),
                product_linear=blocks.linear_plan(out, out),
                coupling=tuple(m.ir for m in target),
                correlation=h.correlations[t],
                use_sc=residual if t == 0 else True,
                readout="nonlinear" if (t == n - 1 and n > 1) else "linear",
            )
        )
    return tuple(layers)


# ----------------------------------------------------------------------------------------
# parameters


def init_params(h: MACEHyperparameters, key, dtype=jnp.float64) -> PyTree:
    """Random parameters with mace-torch's initialisation (unit normals; product weights N(0,1)/K).

    ``key=None`` gives zeros of the right shapes (a template for loading).
    """
    n_species = len(h.atomic_numbers)
    channels = ir.count(ir.parse(h.hidden_irreps), (0, 1))
    # NumPy draws seeded from the key: one compiled jax.random call per weight shape costs seconds
    rng = None if key is None else np.random.default_rng(np.asarray(jax.random.key_data(key)).astype(np.uint32).ravel().tolist())

    def normal(shape, scale=1.0):
        if rng is None:
            return jnp.zeros(shape, dtype)
        return jnp.asarray(rng.standard_normal(shape) * scale, dtype)

    params: dict[str, Any] = {
        "node_embedding": normal((n_species, channels)),
        "atomic_energies": jnp.asarray(h.atomic_energies_eV, dtype),
        "scale": jnp.asarray(h.atomic_inter_scale, dtype),
        "shift": jnp.asarray(h.atomic_inter_shift, dtype),
        "interactions": [],
        "products": [],
        "readouts": [],
    }
    for layer in plan(h):
        widths = (h.num_bessel,) + h.radial_MLP + (layer.conv.weight_numel,)
        skip_in = layer.node_irreps if layer.residual else layer.target_irreps
        skip_out = layer.hidden_out if layer.residual else layer.target_irreps
        params["interactions"].append(
            {
                "linear_up": [normal(s) for s in layer.linear_up.weight_shapes],
                "radial_mlp": [normal((a, b)) for a, b in zip(widths[:-1], widths[1:])],
                "linear": [normal(s) for s in layer.linear.weight_shapes],
                "skip": [normal(s) for s in blocks.species_linear_shapes(skip_in, skip_out, n_species)],
            }
        )
        contraction = []
        for o in layer.hidden_out:
            ws = []
            for nu in range(1, layer.correlation + 1):
                idx, u = ir.symmetric_monomials(layer.coupling, o.ir, nu)
                k = u.shape[-1]
                nonzero = bool(np.any(ir.coupling_tensor(layer.coupling, o.ir, nu)))
                ws.append(normal((n_species, k, channels), 1.0 / k) if nonzero else jnp.zeros((n_species, k, channels), dtype))
            contraction.append(ws)
        params["products"].append(
            {"contraction": contraction, "linear": [normal(s) for s in layer.product_linear.weight_shapes]}
        )
        if layer.readout == "linear":
            params["readouts"].append({"linear": [normal(s) for s in blocks.linear_plan(layer.hidden_out, "1x0e").weight_shapes]})
        else:
            params["readouts"].append(
                {
                    "linear_1": [normal(s) for s in blocks.linear_plan(layer.hidden_out, h.MLP_irreps).weight_shapes],
                    "linear_2": [normal(s) for s in blocks.linear_plan(h.MLP_irreps, "1x0e").weight_shapes],
                }
            )
    return params


# ----------------------------------------------------------------------------------------
# forward


def _spherical_harmonics(vectors, max_ell: int) -> list[jax.Array]:
    """Per degree l = 0..max_ell, (E, 2l+1) real spherical harmonics of the unit vectors, component
    normalisation (|Y_l|^2 = 2l + 1), e3nn basis."""
    import e3nn_jax

    irreps = "+".join(f"{l}{'e' if l % 2 == 0 else 'o'}" for l in range(max_ell + 1))
    y = e3nn_jax.spherical_harmonics(irreps, vectors, normalize=True, normalization="component").array
    out, start = [], 0
    for l in range(max_ell + 1):
        out.append(y[:, start:start + 2 * l + 1])
        start += 2 * l + 1
    return out


BACKENDS = ("auto", "e3nn", "cuequivariance")


def resolve_backend(backend: str) -> str:
    """"auto" -> "cuequivariance" where its CUDA kernels run (GPU), "e3nn" otherwise."""
    from slhmc_jax.models.mace import cue_ops

    if backend not in BACKENDS:
        raise ValueError(f"MACE backend must be one of {BACKENDS}; got {backend!r}")
    if backend == "auto":
        return "cuequivariance" if cue_ops.cuda_kernels_available() else "e3nn"
    if backend == "cuequivariance" and not cue_ops.available():
        raise ImportError("MACE backend 'cuequivariance' needs `pip install cuequivariance-jax`")
    return backend


def node_energies(h: MACEHyperparameters, params, species, senders, receivers, edge_vectors, edge_mask,
                  backend: str = "e3nn"):
    """(n,) per-atom energies in eV (E0 included), in the dtype of ``edge_vectors``.

    Edges come as a flat list (E,) or in the dense per-atom format (n, K) of
    :mod:`slhmc_jax.neighbours` (row a holds the edges received by atom a): there messages are
    summed by batched matrix products (several times faster on CPU, same result).

    ``backend="cuequivariance"`` evaluates the edge tensor product (gather, product and
    scatter-sum fused) and the symmetric contraction with cuequivariance's segmented polynomials
    (:mod:`slhmc_jax.models.mace.cue_ops`; CUDA kernels on a GPU), on the flat edge list (a dense
    table is read as one); ``"auto"`` picks it where its CUDA kernels run. Same function, same weights.

    Args:
        species: (n,) int32 index into ``h.atomic_numbers``.
        senders, receivers: (E,) or (n, K) int32; the message of edge e goes from senders[e] to
            receivers[e] (valid atom indices also where masked).
        edge_vectors: (E, 3) or (n, K, 3) A, r_receiver - r_sender (+ lattice shift).
        edge_mask: (E,) or (n, K) bool; masked edges must have |r| >= r_max (they then carry no weight).
    """
    dtype = edge_vectors.dtype
    n = species.shape[0]
    n_species = len(h.atomic_numbers)
    use_cue = resolve_backend(backend) == "cuequivariance"
    if use_cue:
        from slhmc_jax.models.mace import cue_ops
    dense = senders.ndim == 2 and not use_cue
    slot_senders = senders if dense else None
    senders, receivers = senders.reshape(-1), receivers.reshape(-1)
    edge_vectors, edge_mask = edge_vectors.reshape(-1, 3), edge_mask.reshape(-1)
    r = jnp.linalg.norm(jnp.where(edge_mask[:, None], edge_vectors, 2.0 * h.r_max), axis=-1)
    safe = jnp.where(edge_mask[:, None], edge_vectors, jnp.ones_like(edge_vectors))
    sh = _spherical_harmonics(safe, h.max_ell)
    radial = blocks.bessel_basis(r, h.r_max, h.num_bessel) * blocks.polynomial_cutoff(r, h.r_max, h.num_polynomial_cutoff)[:, None]
    radial = jnp.where(edge_mask[:, None], radial, 0.0)
    if dense:
        sh = [jnp.where(edge_mask[:, None], y, 0.0).reshape(n, -1, y.shape[-1]) for y in sh]

    emb = jnp.take(params["node_embedding"].astype(dtype), species, axis=0) / float(np.sqrt(n_species))
    feats = [emb[:, :, None]]
    node_energy = jnp.zeros((n,), dtype)
    for layer, p_int, p_prod, p_read in zip(plan(h), params["interactions"], params["products"], params["readouts"]):
        sc = None
        if layer.residual:
            sc = blocks.species_linear(layer.node_irreps, layer.hidden_out, p_int["skip"], feats, species, n_species)
        up = blocks.linear(layer.linear_up, p_int["linear_up"], feats)
        edge_weights = blocks.radial_mlp(p_int["radial_mlp"], radial, h.silu_normalization)
        if use_cue:
            msgs = cue_ops.conv_messages(layer.conv, up, sh, edge_weights, senders, receivers, n)
        elif not dense:
            msgs = blocks.conv_messages(layer.conv, up, sh, edge_weights, senders, receivers, n)
        else:
            msgs = blocks.conv_messages_dense(layer.conv, up, sh, edge_weights.reshape(n, -1, edge_weights.shape[-1]),
                                              slot_senders)
        msgs = [m / h.avg_num_neighbors for m in blocks.linear(layer.linear, p_int["linear"], msgs)]
        if not layer.residual:
            msgs = blocks.species_linear(layer.target_irreps, layer.target_irreps, p_int["skip"], msgs, species, n_species)
        x = jnp.concatenate(msgs, axis=-1)  # (n, channels, D)
        correlations = [layer.correlation] * len(layer.hidden_out)
        contract = cue_ops.symmetric_contraction if use_cue else blocks.symmetric_contraction
        prod = contract(layer.coupling, layer.hidden_out, correlations, p_prod["contraction"], x, species)
        feats = blocks.linear(layer.product_linear, p_prod["linear"], prod)
        if layer.use_sc and sc is not None:
            feats = [a + b for a, b in zip(feats, sc)]
        if layer.readout == "linear":
            e = blocks.linear(blocks.linear_plan(layer.hidden_out, "1x0e"), p_read["linear"], feats)[0]
        else:
            hid = blocks.linear(blocks.linear_plan(layer.hidden_out, h.MLP_irreps), p_read["linear_1"], feats)
            hid = [blocks.normalized_silu(c, h.silu_normalization) for c in hid]
            e = blocks.linear(blocks.linear_plan(h.MLP_irreps, "1x0e"), p_read["linear_2"], hid)[0]
        node_energy = node_energy + e[:, 0, 0]
    scale = params["scale"].astype(dtype)
    shift = params["shift"].astype(dtype)
    e0 = jnp.take(params["atomic_energies"].astype(dtype), species)
    return e0 + scale * node_energy + shift


# ----------------------------------------------------------------------------------------
# the Potential


@dataclasses.dataclass(frozen=True)
class _MACEModule:
    """Adapter giving :class:`FlaxPotential` the ``apply(params, species, senders, receivers, d, mask)`` it calls."""

    hyperparameters: MACEHyperparameters
    backend: str = "auto"

    @property
    def reads_dense_neighbours(self) -> bool:
        """The dense per-atom format pays on the e3nn path (batched matmuls); cuequivariance's
        fused kernels read the flat list."""
        return resolve_backend(self.backend) == "e3nn"

    def apply(self, params, species, senders, receivers, edge_vectors, edge_mask):
        return node_energies(self.hyperparameters, params, species, senders, receivers, edge_vectors, edge_mask,
                             self.backend)


@dataclasses.dataclass(frozen=True, eq=False)
class MACEPotential(FlaxPotential):
    """A MACE model: hyperparameters + parameter pytree, E = sum_i node energy_i (eV).

    Positions and cell are cast to the parameters' dtype (float32 or float64) before evaluation;
    forces and stress come from :mod:`slhmc_jax.calculator` by autodiff.
    """

    hyperparameters: MACEHyperparameters | None = None

    @property
    def dtype(self):
        return jnp.asarray(self.params["node_embedding"]).dtype

    def graph(self, positions, cell, atomic_numbers, neighbours):
        positions = jnp.asarray(positions).astype(self.dtype)
        cell = jnp.asarray(cell).astype(self.dtype)
        return super().graph(positions, cell, atomic_numbers, neighbours)

    def astype(self, dtype) -> "MACEPotential":
        """The same model with floating-point parameters cast to ``dtype``."""
        params = jax.tree.map(lambda p: jnp.asarray(p).astype(dtype) if jnp.issubdtype(jnp.asarray(p).dtype, jnp.floating) else p, self.params)
        return dataclasses.replace(self, params=params)

    def with_params(self, params) -> "MACEPotential":
        return dataclasses.replace(self, params=params)

    @property
    def backend(self) -> str:
        """The requested kernel backend ("auto", "e3nn" or "cuequivariance"; see :func:`node_energies`)."""
        return self.module.backend

    def with_backend(self, backend: str) -> "MACEPotential":
        """The same model evaluated with another kernel backend ("auto", "e3nn", "cuequivariance")."""
        resolve_backend(backend)  # validates the name and the installation now, not at trace time
        return dataclasses.replace(self, module=dataclasses.replace(self.module, backend=backend))

    def check_species(self, atomic_numbers) -> np.ndarray:
        """Host-side check that every element is in the species table (ValueError naming the others)."""
        return self.species_table.check(np.asarray(atomic_numbers))


def potential_from_params(h: MACEHyperparameters, params) -> MACEPotential:
    return MACEPotential(_MACEModule(h), params, h.r_max, h.atomic_numbers, h)


def build(hyperparameters: MACEHyperparameters, *, key=None, dtype=jnp.float64) -> MACEPotential:
    """A randomly initialised MACE with the given hyperparameters (PRNGKey(0) by default)."""
    if not isinstance(hyperparameters, MACEHyperparameters):
        raise TypeError(f"build() needs MACEHyperparameters; got {type(hyperparameters).__name__}")
    key = jax.random.PRNGKey(0) if key is None else key
    return potential_from_params(hyperparameters, init_params(hyperparameters, key, dtype))
