"""The registries of conversion rules: one per module type, function or method (spec section 4).

The built-in rules live in ``trace.layers``, ``trace.tensors`` and ``trace.functional`` (which also files
the ATen operators of exported programs under the rules of their torch functions); ``register_module``,
``register_function`` and ``register_method`` add more. A rule receives the ``Builder``, the fx node and
(for modules) the module, and returns the node's value. A subclass of a registered module type inherits
its rule only if it also inherits its ``forward``: one that changes ``forward`` (an activation inside a
BatchNorm, standardised conv weights) must be registered itself.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch.nn.functional as F
from torch import fx, nn

from converter.conversion.trace import functional, layers, tensors
from converter.conversion.trace.layers import Rule

MODULE_RULES: dict[type[nn.Module], Rule] = {**layers.MODULES, **tensors.MODULES}
FUNCTION_RULES: dict[Any, Rule] = {**layers.FUNCTIONS, **tensors.FUNCTIONS, **functional.FUNCTIONS}
METHOD_RULES: dict[str, Rule] = {**layers.METHODS, **tensors.METHODS}
FUNCTION_RULES.update(
    {op: (METHOD_RULES if isinstance(f, str) else FUNCTION_RULES)[f] for op, f in functional.SAME_AS.items()}
)


def _registrar(table: dict, keys: tuple) -> Callable[[Rule], Rule]:
    """A decorator that files a rule under every key of ``keys`` in ``table``."""

    def deco(rule: Rule) -> Rule:
        for k in keys:
            table[k] = rule
        return rule

    return deco


def register_module(*types: type[nn.Module]) -> Callable[[Rule], Rule]:
    """Register a conversion rule for these module types (and subclasses that keep their ``forward``)."""
    return _registrar(MODULE_RULES, types)


def register_function(*functions: Callable) -> Callable[[Rule], Rule]:
    """Register a conversion rule for calls of these functions (``torch.relu``, ``operator.add``, ...)."""
    return _registrar(FUNCTION_RULES, functions)


def register_method(*names: str) -> Callable[[Rule], Rule]:
    """Register a conversion rule for these tensor methods (``x.relu()``, ``x.view(...)``, ...)."""
    return _registrar(METHOD_RULES, names)


def module_rule(m: nn.Module) -> Rule | None:
    """The rule of ``m``'s type, or of the nearest registered base whose ``forward`` it inherits."""
    for t in type(m).__mro__:
        if t in MODULE_RULES:
            return MODULE_RULES[t] if type(m).forward is t.forward else None
    return None


def rule_for(node: fx.Node, modules: dict[str, nn.Module]) -> Rule | None:
    """The rule converting ``node`` (a module, function or method call), or None if there is none."""
    if node.op == "call_module":
        return module_rule(modules[node.target])
    if node.op == "call_function":
        return FUNCTION_RULES.get(node.target)
    if node.op == "call_method":
        return METHOD_RULES.get(node.target)
    return None


def is_relu(node: fx.Node, modules: dict[str, nn.Module]) -> bool:
    """Whether ``node`` is converted as a plain ReLU (the activations clip-floor training replaces)."""
    return rule_for(node, modules) in (MODULE_RULES[nn.ReLU], FUNCTION_RULES[F.relu])
