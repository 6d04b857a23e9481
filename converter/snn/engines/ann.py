"""The float ANN the SNN approximates (BatchNorm folded, ReLU unclipped): reference and calibration source.

    a_in = x,   a_l = relu(sum_t W_t a_src + b_l),   a_sw = maxpool(a_src),   logits = sum_t W_t a_src + b_out

(``min(relu(.), c)`` for a clipped ReLU such as ReLU6.)
A layer trained with the clip-floor activation keeps it: ``a_l = lam_l * clip(floor(T_l z_l / lam_l + s),
0, T_l) / T_l``. Its cost is the dense multiply-accumulates of every conv and linear (``ann_macs``)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from converter.snn.ops import run_chain
from converter.snn.quantise import dequantised
from converter.snn.results import RunResult

if TYPE_CHECKING:
    from converter.snn.graph import Graph
    from converter.snn.model import Network


def forward(
    graph: Graph,
    x: Tensor,
    on_neuron: Callable[[str, Tensor], None] | None = None,
    lams: dict[str, Tensor] | None = None,
    given: dict[str, Tensor] | None = None,
    activations: dict[str, Tensor] | None = None,
) -> Tensor:
    """Logits of the network as trained: ReLU, or with ``lams`` the clip-floor layers it was trained with.

    ``on_neuron(name, activation)`` sees every neuron layer's activations (calibration); populations in
    ``given`` take those activations instead of computing them (the rest of the network runs as the ANN);
    ``activations``, when given, receives every population's, the logits included.
    """
    act: dict[str, Tensor] = {} if activations is None else activations
    act.update(given or {})
    for p in graph.populations:
        if p.name in act:
            continue
        if p.kind == "input":
            one = torch.ones((), dtype=x.dtype)
            act[p.name] = dequantised(x, one, *p.quantised) if lams is not None and p.quantised else x
            continue
        if p.kind == "switch":
            act[p.name] = p.pool(act[p.source])
            continue
        z = sum(run_chain(t.ops, act[t.source]) for t in p.terms)
        if p.kind == "output":
            act[p.name] = z
            return z
        trained = lams is not None and p.quantised
        act[p.name] = dequantised(z, lams[p.name], *p.quantised) if trained else z.clamp(0, p.clip)
        if on_neuron is not None:
            on_neuron(p.name, act[p.name])
    raise ValueError("graph has no output population")


def run(net: Network, images: Tensor) -> RunResult:
    """ANN logits (the network as trained) with its dense MAC count (no spikes, no timesteps)."""
    return RunResult("ann", forward(net.graph, images.to(net.dtype), lams=net.lams), 0, net.ann_macs, [])
