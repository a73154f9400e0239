"""Tiny trainable models shared by the workflow and validation tests (cheap to compile, exact to reason about)."""

import dataclasses

import jax.numpy as jnp

MORSE = dict(epsilon=1.0, r0=1.2, rho0=2.4)  # the tests' target: ASE Morse, D = 1 eV, a = 2 / A, r0 = 1.2 A


@dataclasses.dataclass(frozen=True, eq=False)
class BondModel:
    """A harmonic bond E = e0 + k/2 (r - r0)^2 (eV) of a diatomic, trainable: params k (eV/A^2), r0 (A), e0 (eV).

    Against a Morse target it is misspecified on purpose: a quadratic fitted to the labels of one
    region of bond lengths is only right there, so where the training configurations come from
    decides how well the fine-tuned model reproduces the target's bond-length distribution.
    """

    params: dict
    cutoff = None
    atomic_numbers = None

    def energy(self, params, positions, cell, atomic_numbers, neighbours=None):
        r = jnp.linalg.norm(positions[1] - positions[0])
        return params["e0"] + 0.5 * params["k"] * (r - params["r0"]) ** 2
