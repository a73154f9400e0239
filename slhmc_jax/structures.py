"""Atomic structures: the ``System`` pytree, conversion to and from ``ase.Atoms``, builders.

Units: positions and cell in Angstrom (cell rows are lattice vectors, ASE convention), masses
in amu, temperatures in kelvin.
"""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple, Sequence

import numpy as np

from slhmc_jax import precision  # noqa: F401
from slhmc_jax.neighbours import validate_geometry

# rutile TiO2, P4_2/mnm, room temperature (Howard, Sabine & Dickson, Acta Cryst. B47, 462 (1991))
RUTILE_A = 4.594  # Angstrom
RUTILE_C = 2.959  # Angstrom
RUTILE_U = 0.305  # oxygen internal coordinate


class System(NamedTuple):
    """One configuration as a pytree of arrays (vmap adds a leading chain axis).

    Attributes:
        positions: (n_atoms, 3) float, Angstrom.
        cell: (3, 3) float, Angstrom, rows are lattice vectors.
        pbc: (3,) bool, periodicity of each lattice direction.
        atomic_numbers: (n_atoms,) int.
        masses: (n_atoms,) float, amu.
    """

    positions: np.ndarray
    cell: np.ndarray
    pbc: np.ndarray
    atomic_numbers: np.ndarray
    masses: np.ndarray

    @property
    def n_atoms(self) -> int:
        return int(np.shape(self.positions)[-2])

    @classmethod
    def from_atoms(cls, atoms) -> "System":
        """Exact copy of an ``ase.Atoms`` (positions, cell, pbc, numbers, masses), float64."""
        positions, cell, pbc = validate_geometry(atoms.get_positions(), np.asarray(atoms.get_cell()), atoms.get_pbc())
        numbers = np.asarray(atoms.get_atomic_numbers(), dtype=np.int64)
        check_atomic_numbers(numbers)
        return cls(
            positions=positions,
            cell=cell,
            pbc=np.asarray(pbc, dtype=bool),
            atomic_numbers=numbers,
            masses=np.asarray(atoms.get_masses(), dtype=np.float64),
        )

    def to_atoms(self):
        """Back to ``ase.Atoms``; ``System.from_atoms(s.to_atoms())`` reproduces ``s`` bit for bit."""
        from ase import Atoms

        atoms = Atoms(
            numbers=np.asarray(self.atomic_numbers),
            positions=np.asarray(self.positions, dtype=np.float64),
            cell=np.asarray(self.cell, dtype=np.float64),
            pbc=np.asarray(self.pbc, dtype=bool),
        )
        atoms.set_masses(np.asarray(self.masses, dtype=np.float64))
        return atoms


def check_atomic_numbers(numbers: Sequence[int]) -> np.ndarray:
    """Raise ValueError for atomic numbers outside 1..118."""
    numbers = np.asarray(numbers)
    bad = numbers[(numbers < 1) | (numbers > 118)]
    if bad.size:
        raise ValueError(f"unknown element: atomic number(s) {sorted(set(bad.tolist()))} (allowed 1-118)")
    return numbers


def atomic_numbers_from_symbols(symbols: Sequence[str]) -> np.ndarray:
    """Chemical symbols -> atomic numbers; ValueError naming any unknown symbol."""
    from ase.data import atomic_numbers as table

    unknown = [s for s in symbols if s not in table or s == "X"]
    if unknown:
        raise ValueError(f"unknown element symbol(s): {sorted(set(unknown))}")
    return np.array([table[s] for s in symbols], dtype=np.int64)


def make_atoms(symbols: Sequence[str], positions, cell=None, pbc=False):
    """``ase.Atoms`` from symbols with validation (unknown symbols, non-finite positions, zero-volume cell)."""
    from ase import Atoms

    numbers = atomic_numbers_from_symbols(list(symbols))
    cell = np.zeros((3, 3)) if cell is None else np.asarray(cell, dtype=np.float64)
    if cell.shape == (3,):
        cell = np.diag(cell)
    positions, cell, pbc = validate_geometry(positions, cell, pbc)
    if positions.shape[0] != numbers.shape[0]:
        raise ValueError(f"{numbers.shape[0]} symbols but {positions.shape[0]} positions")
    return Atoms(numbers=numbers, positions=positions, cell=cell, pbc=pbc)


def rutile(a: float = RUTILE_A, c: float = RUTILE_C, u: float = RUTILE_U, repeat=(1, 1, 1)):
    """Rutile TiO2 (P4_2/mnm), 6 atoms per cell, as ``ase.Atoms``.

    Fractional sites: Ti (0,0,0), (1/2,1/2,1/2); O (u,u,0), (1-u,1-u,0), (1/2+u,1/2-u,1/2),
    (1/2-u,1/2+u,1/2).

    Args:
        a, c: lattice constants, Angstrom.
        u: oxygen internal coordinate.
        repeat: supercell repetitions (n_a, n_b, n_c).
    """
    from ase import Atoms

    if not (a > 0 and c > 0):
        raise ValueError(f"rutile lattice constants must be positive; got a={a}, c={c}")
    atoms = Atoms(
        "Ti2O4",
        scaled_positions=[
            (0, 0, 0),
            (0.5, 0.5, 0.5),
            (u, u, 0),
            (1 - u, 1 - u, 0),
            (0.5 + u, 0.5 - u, 0.5),
            (0.5 - u, 0.5 + u, 0.5),
        ],
        cell=[a, a, c],
        pbc=True,
    )
    return supercell(atoms, repeat)


# molecules ASE's g2 set lacks: symbols and positions (Angstrom), near their PBE geometries
MOLECULES = {
    # bent C2v TiO2 (singlet): Ti-O 1.65 A, O-Ti-O 111 deg
    "TiO2": ("TiOO", [[0.0, 0.0, 0.0], [0.0, 1.3610, 0.9329], [0.0, -1.3610, 0.9329]]),
}


def molecule(name: str):
    """A molecule as ``ase.Atoms`` (not periodic): one of :data:`MOLECULES` or of ASE's g2 set."""
    from ase import Atoms
    from ase.build import molecule as ase_molecule

    if name in MOLECULES:
        symbols, positions = MOLECULES[name]
        return Atoms(symbols, positions=positions)
    try:
        return ase_molecule(name)
    except KeyError:
        from ase.collections import g2

        raise ValueError(f"unknown molecule {name!r}: not in {sorted(MOLECULES)} nor ASE's g2 set "
                         f"({len(g2.names)} names, e.g. H2O, CH4, CO2)") from None


def crystal(name: str, crystalstructure: str | None = None, a: float | None = None, repeat=(1, 1, 1), **kwargs):
    """Any crystal ASE can build (``ase.build.bulk``), optionally repeated; e.g. ``crystal("Si", "diamond", 5.43)``."""
    from ase.build import bulk

    try:
        atoms = bulk(name, crystalstructure, a=a, **kwargs)
    except (KeyError, ValueError) as err:
        raise ValueError(f"cannot build crystal {name!r} ({crystalstructure}): {err}") from None
    return supercell(atoms, repeat)


def supercell(atoms, repeat):
    """Repeat an ``ase.Atoms`` (n_a, n_b, n_c) times; positive integers only."""
    reps = np.broadcast_to(np.asarray(repeat), (3,))
    if not np.all(reps == np.round(reps)) or np.any(reps < 1):
        raise ValueError(f"supercell repetitions must be positive integers; got {tuple(np.asarray(repeat).tolist())}")
    return atoms.repeat(tuple(int(r) for r in reps))


def thermal_displacements(atoms, temperature_K: float, rng: np.random.Generator, frequency_THz: float = 5.0):
    """Copy of ``atoms`` with Gaussian displacements of an Einstein crystal at ``temperature_K``.

    Each Cartesian component is drawn from N(0, sigma_i^2) with the classical Einstein-model
    variance sigma_i^2 = k_B T / (m_i omega^2), omega = 2 pi frequency_THz.

    Args:
        atoms: ase.Atoms.
        temperature_K: kelvin (>= 0).
        rng: seeded NumPy generator (every random draw is explicit).
        frequency_THz: Einstein frequency, THz.
    """
    from ase import units

    if not temperature_K >= 0:
        raise ValueError(f"temperature_K must be >= 0; got {temperature_K}")
    if not frequency_THz > 0:
        raise ValueError(f"frequency_THz must be > 0; got {frequency_THz}")
    omega = 2 * np.pi * frequency_THz * 1e12 * units.s**-1  # ASE time units^-1
    masses = atoms.get_masses()  # amu
    sigma = np.sqrt(units.kB * temperature_K / (masses * omega**2))  # Angstrom
    out = atoms.copy()
    out.positions = atoms.positions + rng.normal(size=atoms.positions.shape) * sigma[:, None]
    return out


def read_extxyz(path: str | Path, index=":"):
    """Read frames (energies, forces, stress kept as ASE results) from an extended XYZ file."""
    from ase.io import read

    return read(str(path), index=index, format="extxyz")


def write_extxyz(path: str | Path, frames, append: bool = False) -> None:
    """Write ``ase.Atoms`` frames (with their calculator results) to an extended XYZ file."""
    from ase.io import write

    write(str(path), frames, format="extxyz", append=append)
