"""TSC's clip-floor activation for the ANN (spec sections 3 and 9): train it, and TSC conversion is lossless.

``clip_floor_model`` rewrites a model with torch.fx: the input is quantised to ``T`` levels as the TSC
input layer codes it, and every ReLU becomes ``ClipFloor`` — ``lam * clip(floor(T * x / lam + s), 0, T) / T``
with a trainable ``lam`` and a straight-through gradient. The converter reads ``lam`` as that layer's
threshold, so the SNN computes exactly what the trained network computes.
"""

from __future__ import annotations

from torch import Tensor, fx, nn

from converter.conversion.calibrate import Calibration, calibrate
from converter.conversion.trace import is_relu, symbolic_trace, trace_model
from converter.snn.quantise import ClipFloor, InputQuant
from converter.snn.windows import uniform

CLIP_PREFIX = "tsc_clip_"  # a ClipFloor submodule's name: this prefix and the ReLU node it replaced


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
        elif is_relu(node, modules):
            lam = lams.get(node.name, lams.get(f"{node.name}_pre", 1.0))
            name = f"{CLIP_PREFIX}{node.name}"
            gm.add_submodule(name, ClipFloor(T, lam, shift))
            with gm.graph.inserting_after(node):
                new = gm.graph.call_module(name, (node.args[0],))
            node.replace_all_uses_with(new)
            gm.graph.erase_node(node)
    gm.graph.lint()
    gm.delete_all_unused_submodules()
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
