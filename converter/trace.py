"""Former home of the conversion rules' registry, kept for code written against it: the rules now live in
``converter.conversion.trace`` (and ``register_module``, ``register_function``, ``register_method`` are
importable from ``converter``)."""

from __future__ import annotations

import warnings

from converter.conversion.trace import ConversionError, register_function, register_method, register_module

__all__ = ["ConversionError", "register_function", "register_method", "register_module"]

warnings.warn(
    "converter.trace moved to converter.conversion.trace; import register_module (and its siblings) from "
    "converter",
    DeprecationWarning,
    stacklevel=2,
)
