"""The backward-rule table, one module per op family.

Every rule is a function ``(b, node, gy) -> gx``: ``b`` is the :class:`~..builder.Builder`
that emits ONNX nodes, ``gy`` the incoming gradient per forward output (None where no
gradient arrives) and ``gx`` one entry per forward input (None for inputs that carry no
gradient). A rule is registered with the inputs it differentiates:

``@rule("Mul", grads=(0, 1))``
    the gradients of inputs 0 and 1; ``grads="all"`` for variadic ops (Sum, Concat, ...).
``const=(1, 2)``
    inputs the rule reads as constants (weights, bounds); the builder refuses a graph in
    which such an input depends on the differentiated tensor, naming the node.

Registration checks the declaration against the ONNX schema: every input the schema calls
differentiable (or leaves unknown) must appear in ``grads`` or ``const``, so a rule cannot
silently drop an input's gradient; at build time the builder checks that each declared
gradient that is needed was returned.

Modules: :mod:`.elementwise`, :mod:`.reduce` (reductions, normalisation), :mod:`.linalg`,
:mod:`.conv` (convolution, pooling), :mod:`.shape` (shape, indexing), :mod:`.precision`
(float16 widening, Cast, QDQ), :mod:`.probe` (rules measured on onnxruntime itself).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import onnx.defs

INT64_MAX = np.iinfo(np.int64).max

# Ops whose outputs carry no gradient (piecewise constant, boolean, integer or shape-valued).
NON_DIFFERENTIABLE = {
    "Shape", "Size", "Equal", "Greater", "Less", "GreaterOrEqual", "LessOrEqual", "Not",
    "And", "Or", "Xor", "ArgMax", "ArgMin", "Floor", "Ceil", "Round", "Sign", "NonZero",
    "ConstantOfShape", "Constant", "IsNaN", "IsInf", "RandomNormalLike", "RandomUniformLike",
    "EyeLike", "Range", "OneHot", "BitShift", "Mod",
}


@dataclass(frozen=True)
class Rule:
    """One op's backward rule and its declared inputs."""

    op: str
    fn: Callable
    grads: tuple[int, ...] | str  # input indices, or "all"
    const: tuple[int, ...]

    def differentiates(self, k: int) -> bool:
        return self.grads == "all" or k in self.grads


RULES: dict[str, Rule] = {}


class RuleTableError(RuntimeError):
    """A rule declaration contradicts the ONNX schema (an engine bug, raised at import)."""


def _check_declaration(op: str, grads, const) -> None:
    try:
        schema = onnx.defs.get_schema(op)
    except Exception:  # not an ai.onnx op in this onnx version
        return
    cat = onnx.defs.OpSchema.DifferentiationCategory
    for k, formal in enumerate(schema.inputs):
        variadic = formal.option == onnx.defs.OpSchema.FormalParameterOption.Variadic
        if formal.differentiation_category == cat.NonDifferentiable:
            continue
        if variadic:
            if grads != "all":
                raise RuleTableError(f"rule for {op}: variadic input {formal.name!r} needs "
                                     "grads='all'")
            continue
        if not (grads == "all" or k in grads or k in const):
            raise RuleTableError(
                f"rule for {op}: input {k} ({formal.name!r}) is differentiable in the ONNX "
                "schema but the rule declares neither a gradient nor a constant for it")


def rule(*ops: str, grads=(0,), const=()):
    """Register ``fn`` as the backward rule of ``ops`` (see the module docstring)."""
    grads = grads if grads == "all" else tuple(grads)
    const = tuple(const)

    def deco(fn):
        for op in ops:
            _check_declaration(op, grads, const)
            if op in RULES:
                raise RuleTableError(f"two rules for {op}")
            RULES[op] = Rule(op, fn, grads, const)
        return fn
    return deco


from . import conv, elementwise, linalg, precision, probe, reduce, shape  # noqa: E402,F401
