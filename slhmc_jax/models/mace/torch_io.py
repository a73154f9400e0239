"""Conversion between mace-torch ``ScaleShiftMACE`` modules and :class:`MACEPotential` (torch optional).

The weights keep their basis: e3nn-jax and e3nn 0.4 share the real spherical-harmonic basis, and
the 3j sign differences are folded into :func:`irreps.wigner_3j`, so a conversion is a reshaping
of the flat e3nn weight vectors into per-instruction matrices (and back).
"""

from __future__ import annotations

import numpy as np

from slhmc_jax.models.mace import blocks
from slhmc_jax.models.mace import irreps as ir
from slhmc_jax.models.mace.model import (
    NON_RESIDUAL,
    RESIDUAL,
    MACEHyperparameters,
    MACEPotential,
    plan,
    potential_from_params,
)


def _import_torch():
    try:
        import mace  # noqa: F401  (mace must come before e3nn: it sets the torch.load flag e3nn needs)
        import torch
    except ImportError as err:  # pragma: no cover - exercised only without the extra
        raise ImportError(
            "mace-torch conversion needs torch and mace-torch: pip install 'slhmc-jax[torch]'"
        ) from err
    return torch


def _split(flat: np.ndarray, shapes) -> list[np.ndarray]:
    flat = np.asarray(flat)
    expected = sum(int(np.prod(s)) for s in shapes)
    if flat.size != expected:
        raise ValueError(f"weight vector has {flat.size} entries; the architecture expects {expected}")
    out, start = [], 0
    for s in shapes:
        k = int(np.prod(s))
        out.append(flat[start:start + k].reshape(s))
        start += k
    return out


def _flat(arrays) -> np.ndarray:
    return np.concatenate([np.asarray(a).reshape(-1) for a in arrays]) if arrays else np.zeros(0)


_UNSUPPORTED = {
    "pair_repulsion": False,
    "distance_transform": "None",
    "radial_type": "bessel",
    "use_agnostic_product": False,
    "use_last_readout_only": False,
    "use_embedding_readout": False,
    "use_so3": False,
    "edge_irreps": None,
    "embedding_specs": None,
    "keep_last_layer_irreps": False,
}


def hyperparameters_from_torch(module) -> MACEHyperparameters:
    """Read the architecture of a mace-torch ``ScaleShiftMACE`` (raises on variants not implemented)."""
    _import_torch()
    from mace.tools.scripts_utils import extract_config_mace_model

    if type(module).__name__ != "ScaleShiftMACE":
        raise ValueError(f"only ScaleShiftMACE models are supported; got {type(module).__name__}")
    cfg = extract_config_mace_model(module)
    if "error" in cfg:
        raise ValueError(f"cannot read the mace-torch model's configuration: {cfg['error']}")
    heads = list(cfg.get("heads") or ["Default"])
    if len(heads) != 1:
        raise ValueError(f"multi-head MACE models are not supported (heads {heads}); select one head in mace-torch first")
    problems = []
    for key, ok in _UNSUPPORTED.items():
        value = cfg.get(key, ok)
        if key == "distance_transform" and value in (None, "None"):
            continue
        if value not in (ok, None) and not (ok is False and not value):
            problems.append(f"{key}={value!r}")
    if hasattr(module, "pair_repulsion"):
        problems.append("pair_repulsion=True")
    names = {cls.__name__ for cls in (type(module.interactions[0]),)} | {type(m).__name__ for m in module.interactions[1:]}
    for name in names:
        if name not in (RESIDUAL, NON_RESIDUAL):
            problems.append(f"interaction block {name}")
    if problems:
        raise ValueError("mace-torch model uses features slhmc_jax does not implement: " + ", ".join(problems))
    gate = cfg.get("gate")
    gate_name = getattr(gate, "__name__", str(gate))
    if gate_name != "silu" and len(module.interactions) > 1:  # one interaction: no non-linear readout
        raise ValueError(f"readout gate {gate_name!r} is not supported (only silu)")
    energies = np.asarray(cfg["atomic_energies"], np.float64)
    if energies.ndim == 2:
        energies = energies[0] if energies.shape[0] == 1 else energies[:, 0]
    # per-interaction correlation orders, read from the modules (the config may report only the first)
    corr = tuple(int(p.symmetric_contractions.contractions[0].correlation) for p in module.products)
    if len(set(corr)) == 1:
        corr = corr[0]
    cst = float(module.interactions[0].conv_tp_weights[0].act.cst)
    scale = np.ravel(module.scale_shift.scale.detach().cpu().numpy())
    shift = np.ravel(module.scale_shift.shift.detach().cpu().numpy())
    return MACEHyperparameters(
        atomic_numbers=tuple(int(z) for z in cfg["atomic_numbers"]),
        atomic_energies_eV=tuple(float(e) for e in energies),
        r_max=float(cfg["r_max"]),
        num_bessel=int(cfg["num_bessel"]),
        num_polynomial_cutoff=int(cfg["num_polynomial_cutoff"]),
        max_ell=int(cfg["max_ell"]),
        num_interactions=int(cfg["num_interactions"]),
        hidden_irreps=str(cfg["hidden_irreps"]),
        MLP_irreps=str(cfg["MLP_irreps"]),
        correlation=corr,
        radial_MLP=tuple(int(v) for v in cfg.get("radial_MLP") or (64, 64, 64)),
        avg_num_neighbors=float(cfg["avg_num_neighbors"]),
        atomic_inter_scale=float(scale[0]),
        atomic_inter_shift=float(shift[0]),
        interaction_first=cfg["interaction_cls_first"].__name__,
        interaction=cfg["interaction_cls"].__name__,
        gate="silu",
        silu_normalization=cst,
    )


def _check_product_basis(sd, prefix: str, layer, o: int) -> None:
    """The module's stored U matrices must be this package's coupling tensors (e3nn basis).

    mace-torch stores them as buffers when the model is built; a model built with
    ``use_reduced_cg=True`` while cuequivariance was installed has another basis, in which its
    weights mean something else.
    """
    ir_out = layer.hidden_out[o].ir
    for nu in range(1, layer.correlation + 1):
        stored = sd.get(prefix + f"U_matrix_{nu}")
        if stored is None:
            continue
        ours = ir.coupling_tensor(layer.coupling, ir_out, nu)
        if stored.shape != ours.shape or not np.allclose(stored, ours, atol=1e-6):
            raise ValueError(
                f"mace-torch model uses features slhmc_jax does not implement: a symmetric-contraction basis "
                f"({prefix}U_matrix_{nu}) other than e3nn's (a model built with use_reduced_cg=True while "
                f"cuequivariance was installed)")


def from_torch(module, dtype=None) -> MACEPotential:
    """A :class:`MACEPotential` with the weights of a mace-torch ``ScaleShiftMACE`` module.

    Args:
        module: the torch module (e.g. ``torch.load(path, weights_only=False)``).
        dtype: parameter dtype (default: the module's, float32 or float64).
    """
    torch = _import_torch()
    import jax.numpy as jnp

    h = hyperparameters_from_torch(module)
    sd = {k: v.detach().cpu().to(torch.float64).numpy() for k, v in module.state_dict().items() if v.is_floating_point()}
    if dtype is None:
        dtype = jnp.float32 if next(module.parameters()).dtype == torch.float32 else jnp.float64
    n_species = len(h.atomic_numbers)
    channels = ir.count(ir.parse(h.hidden_irreps), (0, 1))
    params = {
        "node_embedding": sd["node_embedding.linear.weight"].reshape(n_species, channels),
        "atomic_energies": np.asarray(h.atomic_energies_eV),
        "scale": np.asarray(h.atomic_inter_scale),
        "shift": np.asarray(h.atomic_inter_shift),
        "interactions": [],
        "products": [],
        "readouts": [],
    }
    for t, layer in enumerate(plan(h)):
        pre = f"interactions.{t}."
        n_layers = len(h.radial_MLP) + 1
        skip_in = layer.node_irreps if layer.residual else layer.target_irreps
        skip_out = layer.hidden_out if layer.residual else layer.target_irreps
        params["interactions"].append(
            {
                "linear_up": _split(sd[pre + "linear_up.weight"], layer.linear_up.weight_shapes),
                "radial_mlp": [sd[pre + f"conv_tp_weights.layer{k}.weight"] for k in range(n_layers)],
                "linear": _split(sd[pre + "linear.weight"], layer.linear.weight_shapes),
                "skip": _split(sd[pre + "skip_tp.weight"], blocks.species_linear_shapes(skip_in, skip_out, n_species)),
            }
        )
        contraction = []
        for o in range(len(layer.hidden_out)):
            cpre = f"products.{t}.symmetric_contractions.contractions.{o}."
            _check_product_basis(sd, cpre, layer, o)
            lower = [sd[cpre + f"weights.{j}"] for j in range(layer.correlation - 1)]
            contraction.append(lower[::-1] + [sd[cpre + "weights_max"]])
        params["products"].append(
            {"contraction": contraction, "linear": _split(sd[f"products.{t}.linear.weight"], layer.product_linear.weight_shapes)}
        )
        rpre = f"readouts.{t}."
        if layer.readout == "linear":
            params["readouts"].append({"linear": _split(sd[rpre + "linear.weight"], blocks.linear_plan(layer.hidden_out, "1x0e").weight_shapes)})
        else:
            params["readouts"].append(
                {
                    "linear_1": _split(sd[rpre + "linear_1.weight"], blocks.linear_plan(layer.hidden_out, h.MLP_irreps).weight_shapes),
                    "linear_2": _split(sd[rpre + "linear_2.weight"], blocks.linear_plan(h.MLP_irreps, "1x0e").weight_shapes),
                }
            )
    import jax

    params = jax.tree.map(lambda a: jnp.asarray(a, dtype), params)
    return potential_from_params(h, params)


def to_torch(potential: MACEPotential, dtype=None):
    """A mace-torch ``ScaleShiftMACE`` module with the potential's hyperparameters and weights.

    Args:
        dtype: torch dtype of the module (default: float64 for float64 parameters, else float32).
    """
    torch = _import_torch()
    from e3nn import o3
    from mace.modules import ScaleShiftMACE
    from mace.modules.blocks import RealAgnosticInteractionBlock, RealAgnosticResidualInteractionBlock

    h = potential.hyperparameters
    if h is None:
        raise ValueError("to_torch needs a MACEPotential with hyperparameters")
    classes = {RESIDUAL: RealAgnosticResidualInteractionBlock, NON_RESIDUAL: RealAgnosticInteractionBlock}
    if dtype is None:
        dtype = torch.float64 if np.asarray(potential.params["node_embedding"]).dtype == np.float64 else torch.float32
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        model = ScaleShiftMACE(
            r_max=h.r_max,
            num_bessel=h.num_bessel,
            num_polynomial_cutoff=h.num_polynomial_cutoff,
            max_ell=h.max_ell,
            interaction_cls=classes[h.interaction],
            interaction_cls_first=classes[h.interaction_first],
            num_interactions=h.num_interactions,
            num_elements=len(h.atomic_numbers),
            hidden_irreps=o3.Irreps(h.hidden_irreps),
            MLP_irreps=o3.Irreps(h.MLP_irreps),
            atomic_energies=np.asarray(h.atomic_energies_eV),
            avg_num_neighbors=h.avg_num_neighbors,
            atomic_numbers=list(h.atomic_numbers),
            correlation=list(h.correlations),
            gate=torch.nn.functional.silu,
            radial_MLP=list(h.radial_MLP),
            atomic_inter_scale=h.atomic_inter_scale,
            atomic_inter_shift=h.atomic_inter_shift,
            use_reduced_cg=False,
        )
    finally:
        torch.set_default_dtype(previous)
    p = potential.params
    sd = model.state_dict()
    new = {
        "node_embedding.linear.weight": np.asarray(p["node_embedding"]).reshape(-1),
        "atomic_energies_fn.atomic_energies": np.asarray(p["atomic_energies"]),
        "scale_shift.scale": np.asarray(p["scale"]),
        "scale_shift.shift": np.asarray(p["shift"]),
    }
    for t, layer in enumerate(plan(h)):
        pi, pp, pr = p["interactions"][t], p["products"][t], p["readouts"][t]
        pre = f"interactions.{t}."
        new[pre + "linear_up.weight"] = _flat(pi["linear_up"])
        for k, w in enumerate(pi["radial_mlp"]):
            new[pre + f"conv_tp_weights.layer{k}.weight"] = np.asarray(w)
        new[pre + "linear.weight"] = _flat(pi["linear"])
        new[pre + "skip_tp.weight"] = _flat(pi["skip"])
        for o, ws in enumerate(pp["contraction"]):
            cpre = f"products.{t}.symmetric_contractions.contractions.{o}."
            new[cpre + "weights_max"] = np.asarray(ws[-1])
            for j, w in enumerate(ws[-2::-1]):
                new[cpre + f"weights.{j}"] = np.asarray(w)
        new[f"products.{t}.linear.weight"] = _flat(pp["linear"])
        rpre = f"readouts.{t}."
        for name, ws in pr.items():
            new[rpre + name + ".weight"] = _flat(ws)
    for key, value in new.items():
        if key not in sd:
            raise KeyError(f"mace-torch model has no entry {key!r}")
        value = np.asarray(value, np.float64)
        if tuple(sd[key].shape) != value.shape:
            value = value.reshape(tuple(sd[key].shape))
        sd[key] = torch.from_numpy(np.array(value, np.float64))
    model.load_state_dict(sd)
    model = model.to(dtype)
    model.eval()
    return model


def save_torch(potential: MACEPotential, path, dtype=None) -> None:
    """Write a mace-torch checkpoint (``torch.save`` of the module), loadable by ``MACECalculator``,
    ``torch.load(path, weights_only=False)`` and mace-torch's tools; written atomically."""
    from slhmc_jax.files import atomic_open

    torch = _import_torch()
    module = to_torch(potential, dtype=dtype)
    with atomic_open(path, "wb") as fh:
        torch.save(module, fh)


def load_torch(path, dtype=None) -> MACEPotential:
    """Read a mace-torch checkpoint (a pickled ``ScaleShiftMACE``) into a :class:`MACEPotential`."""
    torch = _import_torch()
    module = torch.load(str(path), map_location="cpu", weights_only=False)
    return from_torch(module, dtype=dtype)
