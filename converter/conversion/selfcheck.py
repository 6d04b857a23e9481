"""The conversion self-check: the population graph, run as the ANN, must compute what the model computes.

The model and its conversion are both traced again in float64 and run on a few calibration images; every
neuron layer that corresponds to a node of the model (a ReLU or a clip-floor activation) and the logits
must agree within

    |a_graph - a_model| <= ATOL + RTOL * max |a_model|        (element by element)

A conversion rule that maps something to the wrong computation (a module whose ``forward`` does more than
its base's, say) fails here with the first layer that differs, instead of converting silently wrong.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import Tensor, fx, nn

from converter.conversion.trace import ConversionError, symbolic_trace, trace_model
from converter.snn.engines import ann
from converter.snn.graph import Graph

RTOL = 1e-6
ATOL = 1e-9
IMAGES = 16


class _Recorder(fx.Interpreter):
    """Runs a traced module and keeps every node's tensor output by node name."""

    def __init__(self, gm: fx.GraphModule) -> None:
        super().__init__(gm)
        self.outputs: dict[str, Tensor] = {}

    def run_node(self, n: fx.Node) -> Any:
        """Run one node and record its output."""
        out = super().run_node(n)
        if isinstance(out, Tensor):
            self.outputs[n.name] = out.clone()  # a later in-place op must not change what was recorded
        return out


def _differs(ours: Tensor, theirs: Tensor) -> str | None:
    """How the graph's output differs from the model's (shape, non-finite values, a relative difference
    over the tolerance), or None when it does not. NaN compares false with everything, so it is looked for
    first: a model that computes NaN must not pass the check for computing it twice."""
    if ours.shape != theirs.shape:
        return f"a {tuple(ours.shape[1:])} output instead of {tuple(theirs.shape[1:])}"
    if not (bool(torch.isfinite(ours).all()) and bool(torch.isfinite(theirs).all())):
        return "non-finite values (NaN or infinity): a weight, bias or statistic before it is not finite"
    scale = theirs.abs().max().item()
    err = (ours - theirs).abs().max().item()
    if err <= ATOL + RTOL * scale:
        return None
    return f"a relative difference of {err / max(scale, ATOL):.3g} from the model on the calibration images"


def self_check(model: nn.Module, images: Tensor) -> None:
    """Raise ``ConversionError`` naming the first layer where the converted graph and ``model`` disagree."""
    double = copy.deepcopy(model).double().eval()
    x = images[:IMAGES].double()
    with torch.no_grad():
        graph, fixed = trace_model(double, x[:1])
        recorder = _Recorder(symbolic_trace(double))
        expected = recorder.run(x)
        layers: dict[str, Tensor] = {}
        logits = ann.forward(graph, x, on_neuron=layers.__setitem__, lams=fixed)
    for name, ours in layers.items():
        if name in recorder.outputs and (what := _differs(ours, recorder.outputs[name])) is not None:
            raise ConversionError(_message(graph, name, what))
    if (what := _differs(logits, expected)) is not None:
        raise ConversionError(_message(graph, "output", what))


def _message(graph: Graph, name: str, what: str) -> str:
    """What failed, where, and how."""
    origin = graph.by_name[name].origin
    if what.startswith("non-finite"):
        return f"conversion self-check failed: layer {name!r} (from {origin}) computes {what}"
    return (
        f"conversion self-check failed: layer {name!r} (from {origin}) computes {what}; a module or "
        "function in it is not what its conversion rule assumes"
    )
