"""Trace a PyTorch model with torch.fx into the population graph of ``converter.snn.graph``.

Conversion is a walk over the fx graph: each node's rule (``trace.rules``) turns its inputs
into a value (``trace.builder``). The model's output becomes the output population. Anything
without a rule is refused with a ``ConversionError`` that names the node.
"""

from __future__ import annotations

import traceback
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, fx, nn
from torch.fx.passes.shape_prop import ShapeProp

from converter.conversion.trace.builder import Affine, Builder, Const, ConversionError, PendingMax, Pop, Value
from converter.conversion.trace.rules import (
    MODULE_RULES,
    is_relu,
    register_function,
    register_method,
    register_module,
    rule_for,
)
from converter.snn.graph import Graph, Population

__all__ = [
    "Builder",
    "ConversionError",
    "Value",
    "is_relu",
    "register_function",
    "register_method",
    "register_module",
    "symbolic_trace",
    "trace_model",
]


class _Tracer(fx.Tracer):
    """fx tracer that keeps every module with a conversion rule (e.g. ``ClipFloor``) as one node, and the
    user's file and line of every node (for refusals)."""

    def __init__(self) -> None:
        super().__init__()
        self.record_stack_traces = True

    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        """Modules with a rule stay whole; others are traced through (and refused if they are leaves)."""
        registered = any(t in MODULE_RULES for t in type(m).__mro__)  # refused by name if forward changed
        return registered or super().is_leaf_module(m, qualname)


def symbolic_trace(model: nn.Module) -> fx.GraphModule:
    """torch.fx trace of ``model`` with a clear error when Python control flow prevents it."""
    try:
        graph = _Tracer().trace(model)
        return fx.GraphModule(model, graph, type(model).__name__)
    except Exception as e:  # fx raises many exception types for untraceable code
        raise ConversionError(f"torch.fx could not trace {type(model).__name__}{_where(e)}: {e}") from None


def _where(e: BaseException) -> str:
    """`` at FILE:LINE (in FUNCTION): CODE``: the innermost frame of the traceback outside torch, if any."""
    torch_dir = Path(torch.__file__).parent
    frames = [
        f for f in traceback.extract_tb(e.__traceback__) if not Path(f.filename).is_relative_to(torch_dir)
    ]
    if not frames or Path(frames[-1].filename) == Path(__file__):
        return ""
    f = frames[-1]
    return f" at {f.filename}:{f.lineno} (in {f.name}): {(f.line or '').strip()}"


def trace_model(model: nn.Module, example: Tensor) -> tuple[Graph, dict[str, Tensor]]:
    """Convert ``model`` (eval mode, pixels in [0,1] of ``example``'s shape) into a population graph.

    Returns the graph and the thresholds fixed by trained clip-floor activations, by population.
    """
    model = model.eval()
    gm = symbolic_trace(model)
    try:  # two images, so that the batch dimension is visible in every shape
        ShapeProp(gm).propagate(example[:1].repeat(2, *([1] * (example.dim() - 1))))
    except RuntimeError as e:
        raise ConversionError(
            f"the model cannot run on a batch of two images: {str(e).splitlines()[0]}"
        ) from None
    b = Builder(gm, example.device)
    placeholders = [n for n in gm.graph.nodes if n.op == "placeholder"]
    if len(placeholders) != 1:
        raise ConversionError(f"the model must take exactly one input tensor, it takes {len(placeholders)}")
    out: Value | None = None
    for node in gm.graph.nodes:
        if node.op == "placeholder":
            b.values[node] = b.add_population(
                Population("input", "input", tuple(example.shape[1:]), origin="input")
            )
        elif node.op == "get_attr":
            b.values[node] = Const(_fetch_attr(gm, node.target))
        elif node.op in ("call_module", "call_function", "call_method"):
            if node.op == "call_method" and str(node.target).endswith("_") and not node.users:
                raise b.fail(
                    node,
                    f"the in-place {node.target}() changes a tensor whose later uses fx does not see; "
                    f"write y = y.{str(node.target)[:-1]}(...) instead",
                )
            known, value = b.folded(node)
            if known:
                b.values[node] = value
                continue
            rule = rule_for(node, b.modules)
            if rule is None:
                raise b.fail(node, _no_rule(node, b.modules))
            b.values[node] = rule(b, node, b.modules.get(node.target) if node.op == "call_module" else None)
        elif node.op == "output":
            if not isinstance(node.args[0], fx.Node):
                raise b.fail(node, "the model must return a single tensor of logits")
            out = b.values[node.args[0]]
            node_for_errors = node
    if not isinstance(out, (Pop, Affine, PendingMax)):
        raise ConversionError("the model's output does not depend on its input")
    terms = b.affine(node_for_errors, out).terms
    shape = tuple(node_for_errors.args[0].meta["tensor_meta"].shape[1:])
    if len(shape) != 1:
        raise ConversionError(
            f"the model must return logits of shape (batch, classes), not (batch, *{shape})"
        )
    b.populations.append(Population("output", "output", shape, terms, origin="output"))
    graph = Graph(_reachable(b.populations))
    # trained levels of layers the output does not depend on (an unused branch) went with their layers
    return graph, {k: v for k, v in b.fixed_lams.items() if k in graph.by_name}


def _no_rule(node: fx.Node, modules: dict[str, nn.Module]) -> str:
    """Why ``node`` has no rule: no TSC equivalent, or a subclass that changes its base's ``forward``."""
    if node.op != "call_module":
        return "this operation has no TSC equivalent (spec section 4)"
    m = modules[node.target]
    base = next((t for t in type(m).__mro__[1:] if t in MODULE_RULES), None)
    if base is not None:
        return (
            f"{type(m).__name__} subclasses {base.__name__} but overrides forward(), so it may compute "
            f"something else; register a rule for it with converter.register_module"
        )
    return f"{type(m).__name__} has no TSC equivalent (spec section 4)"


def _fetch_attr(gm: fx.GraphModule, target: str) -> Any:
    """The (detached) attribute a ``get_attr`` node reads."""
    obj: Any = gm
    for part in target.split("."):
        obj = getattr(obj, part)
    return obj.detach() if isinstance(obj, Tensor) else obj


def _reachable(pops: list[Population]) -> list[Population]:
    """Populations the output depends on, in their original order."""
    by_name = {p.name: p for p in pops}
    keep: set[str] = set()
    stack = [pops[-1].name]
    while stack:
        p = by_name[stack.pop()]
        if p.name in keep:
            continue
        keep.add(p.name)
        stack.extend([t.source for t in p.terms] + ([p.source] if p.source else []))
    return [p for p in pops if p.name in keep]
