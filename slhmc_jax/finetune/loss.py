"""The training loss and the error sums behind the RMSE / MAE metrics (pure).

For a batch with real graphs b (mask m_b), N_b atoms i in graph b, force-labelled graphs f_b and
stress-labelled (periodic) graphs s_b (masks, subsets of m_b):

    L = w_E  sum_b m_b rho_E((E_b - E_b^ref) / N_b) / sum_b m_b
      + w_F  sum_{b, i, alpha} f_b rho_F(F_bia - F_bia^ref) / (3 sum_b f_b N_b)
      + w_S  sum_{b, alpha, beta} s_b rho_S(sigma_bab - sigma_bab^ref) / (9 sum_b s_b)

with rho(x) = x^2 ("mse"; mace-torch's weighted energy-forces(-stress) loss) or the Huber function
rho(x) = x^2 / 2 for |x| <= delta, delta (|x| - delta / 2) otherwise ("huber"; ``optax.huber_loss``,
as mace-torch's Huber loss). Units: w_E in 1/(eV/atom)^2, w_F in 1/(eV/A)^2, w_S in 1/(eV/A^3)^2
(for "mse"; "huber" weights the same way, its terms are linear beyond delta). The weights, deltas
and rho are the :class:`~slhmc_jax.finetune.settings.LossSettings` fields of the run's settings.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

from slhmc_jax.finetune.batching import GraphBatch
from slhmc_jax.finetune.model import Predictions
from slhmc_jax.finetune.settings import LossSettings


def _rho(config: LossSettings, x, delta):
    """rho(x) of the module docstring: x^2 ("mse") or the Huber function with ``delta``."""
    if config.loss == "mse":
        return x * x
    return optax.huber_loss(x, jnp.zeros_like(x), delta=delta)


class ErrorSums(NamedTuple):
    """Sums over the selected graphs: squared and absolute errors and their counts.

    energy: per-atom energy error, eV/atom (count: graphs); forces: eV/A (count: components);
    stress: eV/A^3 (count: components). Counts are floats (sums of masks).
    """

    energy_sq: jax.Array
    energy_abs: jax.Array
    energy_n: jax.Array
    forces_sq: jax.Array
    forces_abs: jax.Array
    forces_n: jax.Array
    stress_sq: jax.Array
    stress_abs: jax.Array
    stress_n: jax.Array


def _atom_mask(batch: GraphBatch, graph_select) -> jax.Array:
    ext = jnp.concatenate([graph_select, jnp.zeros((1,), graph_select.dtype)])
    return jnp.take(ext, batch.atom_graph)


def loss(pred: Predictions, batch: GraphBatch, config: LossSettings) -> jax.Array:
    """The scalar loss L of the module docstring (dimensionless with the weights' units)."""
    dtype = pred.energy.dtype
    m = batch.graph_mask.astype(dtype)
    total = jnp.zeros((), dtype)
    if config.energy_weight:
        de = (pred.energy - batch.energy) / batch.n_atoms
        total = total + config.energy_weight * jnp.sum(m * _rho(config, de, config.huber_delta_energy_eV_atom)) / jnp.maximum(jnp.sum(m), 1.0)
    if config.forces_weight:
        ma = _atom_mask(batch, m * batch.has_forces.astype(dtype))
        rf = _rho(config, pred.forces - batch.forces, config.huber_delta_forces_eV_A)
        total = total + config.forces_weight * jnp.sum(ma[:, None] * rf) / jnp.maximum(3.0 * jnp.sum(ma), 1.0)
    if config.stress_weight:
        ms = m * batch.has_stress.astype(dtype)
        rs = _rho(config, pred.stress - batch.stress, config.huber_delta_stress_eV_A3)
        total = total + config.stress_weight * jnp.sum(ms[:, None, None] * rs) / jnp.maximum(9.0 * jnp.sum(ms), 1.0)
    return total


def error_sums(pred: Predictions, batch: GraphBatch, select) -> ErrorSums:
    """Error sums over the graphs where ``select`` (G,) is True (and the graph is real)."""
    dtype = pred.energy.dtype
    g = (select & batch.graph_mask).astype(dtype)
    de = (pred.energy - batch.energy) / batch.n_atoms
    ma = _atom_mask(batch, g * batch.has_forces.astype(dtype))[:, None]
    df = pred.forces - batch.forces
    ms = (g * batch.has_stress.astype(dtype))[:, None, None]
    ds = pred.stress - batch.stress
    return ErrorSums(
        jnp.sum(g * de * de), jnp.sum(g * jnp.abs(de)), jnp.sum(g),
        jnp.sum(ma * df * df), jnp.sum(ma * jnp.abs(df)), 3.0 * jnp.sum(ma),
        jnp.sum(ms * ds * ds), jnp.sum(ms * jnp.abs(ds)), 9.0 * jnp.sum(ms),
    )
