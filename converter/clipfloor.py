"""TSC's clip-floor activation for the ANN (spec sections 3 and 9): train it, and TSC conversion is lossless.

``clip_floor_model`` rewrites a model with torch.fx: the input is quantised to ``T`` levels as the TSC
input layer codes it, and every ReLU becomes ``ClipFloor`` — ``lam * clip(floor(T * x / lam + s), 0, T) / T``
with a trainable ``lam`` and a straight-through gradient. The converter reads ``lam`` as that layer's
threshold, so the SNN computes exactly what the trained network computes.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, fx, nn

from converter.calibrate import Calibration, calibrate
from converter.engines.common import lam_view, level_floor
from converter.trace import Builder, Pop, Value, register_module, symbolic_trace, trace_model
from converter.windows import uniform


class ClipFloor(nn.Module):
    """ReLU replaced by TSC's clip-and-quantise map, with a trainable clipping level ``lam``."""

    def __init__(self, T: int, lam: float | Tensor = 1.0, shift: float = 0.5) -> None:
        super().__init__()
        self.T, self.shift = T, shift
        self.lam = nn.Parameter(torch.as_tensor(lam, dtype=torch.float32).detach().clone())

    def forward(self, x: Tensor) -> Tensor:
        """Quantised activation; gradient of ``floor`` passed straight through."""
        lam = lam_view(self.lam.abs().clamp_min(1e-6), x.dim())
        y = torch.clamp(x / lam, 0, 1)
        q = torch.clamp(level_floor(y * self.T + self.shift), 0, self.T) / self.T
        return (y + (q - y).detach()) * lam

    def extra_repr(self) -> str:
        return f"T={self.T}, shift={self.shift}"


class InputQuant(nn.Module):
    """Pixels quantised as the TSC input layer codes them: ``clip(floor(T * x + s), 0, T) / T``."""

    def __init__(self, T: int, shift: float = 0.5) -> None:
        super().__init__()
        self.T, self.shift = T, shift

    def forward(self, x: Tensor) -> Tensor:
        """Quantised pixels (no gradient is needed through the input)."""
        return torch.clamp(level_floor(x * self.T + self.shift), 0, self.T) / self.T


@register_module(ClipFloor)
def _clipfloor_rule(b: Builder, node: fx.Node, m: ClipFloor) -> Value:
    return b.neuron(node, b.tensor(node), lam=m.lam.detach().abs().clamp_min(1e-6), quantised=[m.T, m.shift])


@register_module(InputQuant)
def _inputquant_rule(b: Builder, node: fx.Node, m: InputQuant) -> Value:
    v = b.tensor(node)
    if isinstance(v, Pop) and v.name == "input":  # the trained ANN saw quantised pixels
        b.populations[0].quantised = [m.T, m.shift]
    return v


RELU_FUNCTIONS = (F.relu, torch.relu, torch.relu_, F.relu_)


def _is_relu(node: fx.Node, modules: dict[str, nn.Module]) -> bool:
    if node.op == "call_module":
        return type(modules[node.target]) is nn.ReLU
    if node.op == "call_function":
        return node.target in RELU_FUNCTIONS
    return node.op == "call_method" and node.target in ("relu", "relu_")


def clip_floor_model(
    model: nn.Module,
    T: int,
    shift: float = 0.5,
    lams: dict[str, Tensor] | None = None,
    input_T: int | None = None,
) -> fx.GraphModule:
    """Copy of ``model`` with quantised input and every ReLU replaced by ``ClipFloor``.

    ``lams`` gives initial clipping levels by the ReLU's node name (the converter's population names);
    layers without an entry start at 1. Pixels get ``input_T`` levels (default ``T``): the input window.
    """
    gm = symbolic_trace(model)
    modules = dict(gm.named_modules())
    lams = lams or {}
    for node in list(gm.graph.nodes):
        if node.op == "placeholder":
            gm.add_submodule("tsc_input_quant", InputQuant(input_T or T, shift))
            with gm.graph.inserting_after(node):
                q = gm.graph.call_module("tsc_input_quant", (node,))
            node.replace_all_uses_with(q, delete_user_cb=lambda user, q=q: user is not q)
        elif _is_relu(node, modules):
            lam = lams.get(node.name, lams.get(f"{node.name}_pre", 1.0))
            name = f"tsc_clip_{node.name}"
            gm.add_submodule(name, ClipFloor(T, lam, shift))
            with gm.graph.inserting_after(node):
                new = gm.graph.call_module(name, (node.args[0],))
            node.replace_all_uses_with(new)
            gm.graph.erase_node(node)
    gm.graph.lint()
    gm.recompile()
    return gm


def clip_floor_init(
    model: nn.Module,
    images: Tensor,
    T: int,
    shift: float = 0.5,
    percentile: float = 99.9,
    input_T: int | None = None,
) -> fx.GraphModule:
    """Clip-floor copy of a trained ``model`` whose clipping levels start at calibrated thresholds."""
    graph, fixed = trace_model(model.eval(), images[:1])
    cal = Calibration("percentile", percentile)
    lams, _ = calibrate(graph, images, cal, uniform(graph, T), shift, skip=frozenset(fixed))
    return clip_floor_model(model, T, shift, {**fixed, **lams}, input_T)
