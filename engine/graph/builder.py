"""The emission helpers every backward rule writes through (one instance per gradient model)."""
from __future__ import annotations

from typing import Sequence

import numpy as np
import onnx
from onnx import ModelProto, NodeProto, TensorProto, helper, numpy_helper

from . import _util as U
from .errors import GraphError, node_error
from .rules import NON_DIFFERENTIABLE, RULES

SEED = "seed"
GRAD_PREFIX = "grad:"


def gradient_name(name: str) -> str:
    """The output name that carries the gradient of tensor ``name``."""
    return GRAD_PREFIX + name


class Builder:
    """Emits backward nodes; one instance per gradient model."""

    def __init__(self, model: ModelProto, shapes, relu_mode: str, rectifiers: set[str],
                 batch_dims: dict[str, tuple[bool, ...]] | None = None, step_masks: str = "hardsigmoid"):
        self.model = model
        self.step_masks = step_masks
        self.batch_dims = batch_dims or {}
        self.g = model.graph
        self.opset = U.onnx_opset(model)
        self.shapes = shapes
        self.relu_mode = relu_mode
        self.rectifiers = rectifiers
        self.nodes: list[NodeProto] = []
        self.inits: list[TensorProto] = []
        self.grad_like: dict[str, str] = {}  # gradient tensor -> forward tensor it matches
        self.fresh = U.unique_namer(self.g, "grad/")
        self.consts = {t.name: t for t in self.g.initializer}
        for n in self.g.node:
            if n.op_type == "Constant":
                self.consts[n.output[0]] = n
        self.producers = U.producers(self.g)
        self.consumers = U.consumers(self.g)
        self._const_cache: dict = {}
        self._shape_cache: dict[str, str] = {}
        self.active: set[str] = set()

    # ------------------------------------------------------------ emission helpers
    def e(self, name: str) -> "Expr":
        """``name`` as an :class:`Expr` (arithmetic emits nodes)."""
        return Expr(self, name)

    def op(self, op_type: str, inputs: Sequence[str], n_out: int = 1, hint: str | None = None,
           **attrs):
        outs = [self.fresh(hint or op_type) for _ in range(n_out)]
        self.nodes.append(helper.make_node(op_type, list(inputs), outs,
                                           name=self.fresh(f"{op_type}_node"), **attrs))
        return outs[0] if n_out == 1 else outs

    def const(self, value, dtype=np.float32, hint: str = "c") -> str:
        arr = np.asarray(value, dtype=dtype)
        key = (arr.dtype.str, arr.shape, arr.tobytes())
        if key not in self._const_cache:
            name = self.fresh(hint)
            self.inits.append(numpy_helper.from_array(arr, name))
            self._const_cache[key] = name
        return self._const_cache[key]

    def ints(self, values) -> str:
        return self.const(np.asarray(values, dtype=np.int64).reshape(-1), np.int64, "i")

    def value(self, name: str) -> np.ndarray | None:
        """The constant value of a tensor, or None if it is computed at run time."""
        c = self.consts.get(name)
        if c is None:
            return None
        if isinstance(c, NodeProto):
            return U.constant_node_value(c)
        return numpy_helper.to_array(c)

    def shape(self, name: str, node: NodeProto | None = None) -> tuple:
        s = self.shapes.get(name, (None, 0))[0]
        if s is None:
            raise (node_error(node, f"tensor {name!r} has no inferred shape") if node
                   else GraphError(f"tensor {name!r} has no inferred shape"))
        return s

    def static_dims(self, name: str, node: NodeProto, axes) -> list[int]:
        s = self.shape(name, node)
        out = []
        for a in axes:
            if s[a] is None:
                raise node_error(node, f"dim {a} of {name!r} must be static, got a "
                                 "batch-dependent size")
            out.append(s[a])
        return out

    def shape_of(self, name: str) -> str:
        """A shape tensor for Reshape/Expand: constant when at most one size is dynamic."""
        if name in self._shape_cache:
            return self._shape_cache[name]
        s = self.shapes.get(name, (None, 0))[0]
        if s is not None and sum(d is None for d in s) <= 1:
            out = self.ints([-1 if d is None else d for d in s])
        else:
            out = self.op("Shape", [name])
        self._shape_cache[name] = out
        return out

    def expand_shape_of(self, name: str) -> str:
        """A shape tensor valid for Expand (no -1 entries)."""
        s = self.shapes.get(name, (None, 0))[0]
        if s is not None and all(d is not None for d in s):
            return self.ints(list(s))
        key = "expand:" + name
        if key not in self._shape_cache:
            self._shape_cache[key] = self.op("Shape", [name])
        return self._shape_cache[key]

    def zeros_like(self, name: str) -> str:
        return self.op("ConstantOfShape", [self.expand_shape_of(name)],
                       value=helper.make_tensor("z", TensorProto.FLOAT, [1], [0.0]))

    def reshape_like(self, g: str, like: str) -> str:
        return self.op("Reshape", [g, self.shape_of(like)])

    def reduce(self, op_type: str, x: str, axes: Sequence[int], keepdims: int = 1) -> str:
        """ReduceSum/ReduceMean with axes written the way the model's opset wants."""
        if op_type == "ReduceSum" or self.opset >= 18:
            return self.op(op_type, [x, self.ints(axes)], keepdims=keepdims)
        return self.op(op_type, [x], axes=list(axes), keepdims=keepdims)

    def mul(self, a: str, b: str) -> str:
        return self.op("Mul", [a, b])

    def mask(self, bool_name: str) -> str:
        return self.op("Cast", [bool_name], to=TensorProto.FLOAT)

    def unbroadcast(self, g: str, out: str, target: str) -> str:
        """Sum g (shaped like out) over the axes along which target was broadcast."""
        ts = self.shape(target)
        os_ = self.shape(out)
        if len(ts) == len(os_) and all(a == b for a, b in zip(ts, os_)):
            return g
        lead = len(os_) - len(ts)
        axes = list(range(lead)) + [lead + i for i, d in enumerate(ts)
                                    if d == 1 and os_[lead + i] != 1]
        r = self.reduce("ReduceSum", g, axes, keepdims=1) if axes else g
        if lead:
            r = self.op("Squeeze", [r, self.ints(list(range(lead)))])
        return r

    def value_info(self, like: str, name: str) -> onnx.ValueInfoProto:
        s, t = self.shapes.get(like, (None, TensorProto.FLOAT))
        if s is None:
            return helper.make_tensor_value_info(name, t, None)
        # 'N' only where the size is the batch itself: a dim 0 of 2N (heads folded into
        # the batch by a Reshape) written as 'N' makes onnxruntime reuse buffers of the
        # wrong size at run time.
        exact = self.batch_dims.get(like, ())
        dims = ["N" if (d is None and k == 0 and k < len(exact) and exact[k]) else d
                for k, d in enumerate(s)]
        return helper.make_tensor_value_info(name, t, dims)

    # ------------------------------------------------------------ the backward walk
    def run(self, nodes: list[NodeProto], reduction: str, wrt: list[str]) -> None:
        float_types = U.FLOAT_TYPES
        active = set(wrt)
        for n in nodes:
            if n.op_type in NON_DIFFERENTIABLE:
                continue
            if any(i in active for i in n.input if i):
                for o in n.output:
                    # QuantizeLinear's integer output carries the straight-through gradient.
                    if o and (self.shapes.get(o, (None, 0))[1] in float_types
                              or (n.op_type == "QuantizeLinear" and n.input[0] in active)):
                        active.add(o)
        self.active = active
        grads: dict[str, list[str]] = {}
        if reduction in active:
            grads[reduction] = [SEED]
        done: dict[str, str] = {}

        def total(name: str) -> str | None:
            if name in done:
                return done[name]
            parts = grads.get(name)
            if not parts:
                return None
            if len(parts) == 1:
                out = parts[0]
            elif len(parts) == 2:
                out = self.op("Add", parts)
            else:
                out = self.op("Sum", parts)
            self.grad_like.setdefault(out, name)
            done[name] = out
            return out

        for node in reversed(nodes):
            gy = [total(o) if o else None for o in node.output]
            if all(x is None for x in gy):
                continue
            if not any(i in active for i in node.input if i):
                continue
            for o, go in zip(node.output, gy):
                if go is not None and self.shapes.get(o, (None, 0))[1] == TensorProto.DOUBLE:
                    # Every rule emits float32 constants: a float64 gradient would not load.
                    raise node_error(node, f"output {o!r} is float64; gradients are built "
                                     "for float32 tensors only")
            spec = RULES.get(node.op_type) if node.domain in ("", "ai.onnx") else None
            if spec is None:
                raise node_error(node, "no backward rule for this op type")
            for k, i in enumerate(node.input):
                if not i or i not in active or spec.differentiates(k):
                    continue
                what = "a constant" if k in spec.const else "non-differentiable"
                raise node_error(node, f"input {k} ({i!r}) depends on the differentiated "
                                 f"input, but the backward rule needs it to be {what}")
            gx = list(spec.fn(self, node, gy))
            if any(gi is not None for gi in gx[len(node.input):]):
                raise node_error(node, f"backward rule returned {len(gx)} gradients for "
                                 f"{len(node.input)} inputs (engine bug)")
            gx = gx[:len(node.input)] + [None] * (len(node.input) - len(gx))
            for k, (i, gi) in enumerate(zip(node.input, gx)):
                if not i or i not in active:
                    continue
                if gi is None:
                    # never a silent zero: a declared gradient that is needed must exist
                    raise node_error(node, f"backward rule returned no gradient for input "
                                     f"{k} ({i!r}) (engine bug)")
                grads.setdefault(i, []).append(gi)
                self.grad_like.setdefault(gi, i)
        for w in wrt:
            gw = total(w)
            if gw is None:
                gw = self.zeros_like(w)
            self.nodes.append(helper.make_node("Identity", [gw], [gradient_name(w)],
                                               name=self.fresh("grad_out")))

    def gradient_value_info(self, skip: set[str]) -> list[onnx.ValueInfoProto]:
        """Shapes of the float32 gradient tensors, batch dim written as 'N'.

        onnxruntime's shape inference loses the symbolic batch dim on the way back (Expand
        of a runtime shape, Reshape with -1); without it the NCHWc transformer cannot prove
        that the operands of a gradient Add match, so it wraps each in Reshapes instead of
        fusing it into the NCHWc Conv (~20% of the run time at batch 4 on
        EfficientNet-Lite0; a Mul needs the same proof to stay in the blocked layout).
        """
        out = []
        for gname, like in self.grad_like.items():
            s, t = self.shapes.get(like, (None, 0))
            if (gname in skip or gname in self.shapes or t != TensorProto.FLOAT or s is None
                    or any(d is None for d in s[1:])):
                continue
            out.append(self.value_info(like, gname))
        return out

    def needs(self, node: NodeProto, k: int) -> bool:
        return k < len(node.input) and bool(node.input[k]) and node.input[k] in self.active

    def const_operand(self, node: NodeProto, k: int, what: str) -> np.ndarray:
        if self.needs(node, k):
            raise node_error(node, f"{what} (input {k}) depends on the differentiated input; "
                             "only constant values are supported")
        v = self.value(node.input[k])
        if v is None:
            raise node_error(node, f"{what} (input {k}) must be a constant")
        return v


class Expr:
    """A tensor name with arithmetic, so backward rules read as the math they implement.

    ``x = b.e(node.input[0]); d = 1 / (1 + x * x)`` emits Mul, Add and Div (Python floats
    become float32 constants). Methods name the ONNX op they emit (``x.Exp()``).
    """

    def __init__(self, b: "Builder", name: str):
        self.b, self.name = b, name

    def _lift(self, other) -> str:
        return other.name if isinstance(other, Expr) else self.b.const(float(other))

    def _bin(self, op: str, a, c) -> "Expr":
        return Expr(self.b, self.b.op(op, [self._lift(a), self._lift(c)]))

    def __add__(self, o): return self._bin("Add", self, o)
    def __radd__(self, o): return self._bin("Add", o, self)
    def __sub__(self, o): return self._bin("Sub", self, o)
    def __rsub__(self, o): return self._bin("Sub", o, self)
    def __mul__(self, o): return self._bin("Mul", self, o)
    def __rmul__(self, o): return self._bin("Mul", o, self)
    def __truediv__(self, o): return self._bin("Div", self, o)
    def __rtruediv__(self, o): return self._bin("Div", o, self)
    def __neg__(self): return Expr(self.b, self.b.op("Neg", [self.name]))

    def __getattr__(self, op: str):
        if not op[:1].isupper():
            raise AttributeError(op)
        return lambda **attrs: Expr(self.b, self.b.op(op, [self.name], **attrs))

    def where(self, cond: "Expr", other) -> "Expr":
        """``self`` where ``cond`` (a bool Expr) holds, else ``other``."""
        return Expr(self.b, self.b.op("Where", [cond.name, self.name, self._lift(other)]))

    def gt(self, o) -> "Expr": return self._bin("Greater", self, o)
    def lt(self, o) -> "Expr": return self._bin("Less", self, o)
    def eq(self, o) -> "Expr": return self._bin("Equal", self, o)
    def mask(self) -> "Expr": return Expr(self.b, self.b.mask(self.name))
