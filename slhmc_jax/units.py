"""Units: eV, Angstrom, fs, K, amu and GPa at the interface; ASE's units inside.

Time inside the integrators is ASE's unit (``dt = timestep_fs * FS``), so momenta are
amu * A / (ASE time) and the kinetic energy p^2 / 2m is in eV.
"""

import ase.units

FS = ase.units.fs
"""One femtosecond in ASE time units."""

KB_EV_PER_K = ase.units.kB
"""Boltzmann's constant, eV / K."""

EV_PER_A3_IN_GPA = 160.21766208
"""1 eV/A^3 in GPa (pressure and stress conversion)."""
