"""Energy estimate from operation counts with 45 nm figures (Horowitz, ISSCC 2014)."""

from __future__ import annotations

E_ADD_PJ = 0.9  # one 32-bit float addition
E_MAC_PJ = 4.6  # one 32-bit float multiply-accumulate (3.7 pJ multiply + 0.9 pJ add)
SOURCE = "Horowitz, ISSCC 2014, 45 nm, 32-bit float: add 0.9 pJ, MAC 4.6 pJ"


def snn_energy_pj(synaptic_additions: int, neuron_updates: int) -> float:
    """Energy of a spiking inference: every synaptic and neuron-state addition costs one float add."""
    return (synaptic_additions + neuron_updates) * E_ADD_PJ


def ann_energy_pj(macs: int) -> float:
    """Energy of the dense ANN forward: one float MAC per multiply-accumulate."""
    return macs * E_MAC_PJ
