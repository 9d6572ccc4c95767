"""Per-op VJP rules on tiny inline models. Oracle: torch autograd (float64) on the same
weights; smooth ops at rtol 1e-4, piecewise-linear ones too (inputs avoid kinks by seed)."""
from __future__ import annotations

import numpy as np
import onnx
import pytest
pytest.importorskip("torch")  # this module's oracles/zoo helpers import torch
import torch
import torch.nn.functional as F
from onnx import helper

from onnxplain.graph import GraphError, build_gradient_model, prepare_model
from onnxplain.graph.diagnose import declared_shape_errors

from graph_helpers import make_model, onnx_grad, rel_err, session, t, torch_grad

R = np.random.default_rng(42)


def w(*shape, scale=0.5):
    return (R.standard_normal(shape) * scale).astype(np.float32)


def node(op, ins, outs, **kw):
    return helper.make_node(op, ins, outs, **kw)


def case_conv_groups_dilation_asym():
    W = w(6, 2, 3, 3)
    n = [node("Conv", ["x", "W"], ["y"], group=2, dilations=[2, 1], strides=[1, 2],
              pads=[1, 0, 2, 1])]
    fn = lambda x: F.conv2d(F.pad(x, (0, 1, 1, 2)), t(W), stride=(1, 2), dilation=(2, 1),
                            groups=2)
    return n, ["N", 4, 9, 11], {"W": W}, fn


def case_conv_same_upper_stride2():
    W, B = w(3, 2, 3, 3), w(3)
    n = [node("Conv", ["x", "W", "B"], ["y"], auto_pad="SAME_UPPER", strides=[2, 2])]
    # H=W=8, k=3, s=2: total pad 1 -> begin 0, end 1
    fn = lambda x: F.conv2d(F.pad(x, (0, 1, 0, 1)), t(W), t(B), stride=2)
    return n, ["N", 2, 8, 8], {"W": W, "B": B}, fn


def case_conv_depthwise_stride1():
    W = w(4, 1, 5, 5)
    n = [node("Conv", ["x", "W"], ["y"], group=4, pads=[2, 2, 2, 2])]
    fn = lambda x: F.conv2d(x, t(W), padding=2, groups=4)
    return n, ["N", 4, 7, 6], {"W": W}, fn


def case_conv_depthwise_stride2_tf_pads():
    W = w(4, 1, 3, 3)
    n = [node("Conv", ["x", "W"], ["y"], group=4, strides=[2, 2], pads=[0, 0, 1, 1])]
    fn = lambda x: F.conv2d(F.pad(x, (0, 1, 0, 1)), t(W), stride=2, groups=4)
    return n, ["N", 4, 9, 8], {"W": W}, fn


def case_conv_depthwise_stride2_k5_subpixel():
    # EfficientNet-Lite's 5x5 stride-2 depthwise geometry on an odd size (sub-pixel path)
    W = w(3, 1, 5, 5)
    n = [node("Conv", ["x", "W"], ["y"], group=3, strides=[2, 2], pads=[1, 2, 2, 1])]
    fn = lambda x: F.conv2d(F.pad(x, (2, 1, 1, 2)), t(W), stride=2, groups=3)
    return n, ["N", 3, 11, 10], {"W": W}, fn


def case_conv_depthwise_stride3_subpixel():
    W, B = w(2, 1, 3, 2), w(2)
    n = [node("Conv", ["x", "W", "B"], ["y"], group=2, strides=[3, 3], pads=[1, 0, 0, 0])]
    fn = lambda x: F.conv2d(F.pad(x, (0, 0, 1, 0)), t(W), t(B), stride=3, groups=2)
    return n, ["N", 2, 10, 8], {"W": W, "B": B}, fn


def case_reduce_noop_with_empty_axes():
    # noop_with_empty_axes=1 with an empty axes input (or none): each output is the reduction of
    # its one element (onnxruntime = onnx reference): L1, L2 -> |x|, SumSquare -> x^2, the rest -> x
    ops = ["ReduceL1", "ReduceL2", "ReduceSumSquare", "ReduceLogSumExp", "ReduceProd", "ReduceMax",
           "ReduceMin", "ReduceMean", "ReduceSum"]
    n = [node(op, ["x", "none" if k % 2 == 0 else ""], [f"r{k}"], noop_with_empty_axes=1, keepdims=k % 2)
         for k, op in enumerate(ops)]
    n.append(node("Sum", [f"r{k}" for k in range(len(ops))], ["y"]))
    fn = lambda x: 2 * x.abs() + x * x + 6 * x
    return n, ["N", 4, 3], {"none": np.zeros(0, np.int64)}, fn, 18


def case_reduce_max_keepdims0():
    n = [node("ReduceMax", ["x"], ["y"], axes=[1], keepdims=0)]
    return n, ["N", 5, 3], {}, lambda x: x.amax(1), 17


def case_reduce_min_all_opset18():
    n = [node("ReduceMin", ["x", "ax"], ["y"], keepdims=1)]
    return (n, ["N", 4, 3], {"ax": np.array([1, 2], np.int64)},
            lambda x: x.amin((1, 2), keepdim=True), 18)


def case_conv1d_channel_multiplier():
    W = w(6, 1, 3)
    n = [node("Conv", ["x", "W"], ["y"], group=3, pads=[1, 1])]
    fn = lambda x: F.conv1d(x, t(W), padding=1, groups=3)
    return n, ["N", 3, 10], {"W": W}, fn


def case_maxpool_ceil_overlap():
    n = [node("MaxPool", ["x"], ["y"], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1],
              ceil_mode=1)]
    fn = lambda x: F.max_pool2d(x, 3, 2, 1, ceil_mode=True)
    return n, ["N", 2, 8, 8], {}, fn


def case_avgpool_count_include_pad_ceil():
    n = [node("AveragePool", ["x"], ["y"], kernel_shape=[3, 3], strides=[2, 2],
              pads=[1, 1, 1, 1], count_include_pad=1, ceil_mode=1)]
    fn = lambda x: F.avg_pool2d(x, 3, 2, 1, ceil_mode=True, count_include_pad=True)
    return n, ["N", 2, 8, 8], {}, fn


def case_avgpool_exclude_pad():
    n = [node("AveragePool", ["x"], ["y"], kernel_shape=[3, 2], strides=[1, 2],
              pads=[1, 0, 1, 0], count_include_pad=0)]
    fn = lambda x: F.avg_pool2d(x, (3, 2), (1, 2), (1, 0), count_include_pad=False)
    return n, ["N", 2, 6, 8], {}, fn


def case_avgpool_tiling():
    n = [node("AveragePool", ["x"], ["y"], kernel_shape=[2, 2], strides=[2, 2])]
    return n, ["N", 3, 6, 8], {}, lambda x: F.avg_pool2d(x, 2)


def case_gemm_trans_alpha_beta():
    B, C = w(5, 6), w(5)
    n = [node("Transpose", ["x"], ["xt"], perm=[1, 0]),
         node("Gemm", ["xt", "B", "C"], ["y"], transA=1, transB=1, alpha=0.7, beta=0.3)]
    fn = lambda x: 0.7 * x @ t(B).T + 0.3 * t(C)
    return n, ["N", 6], {"B": B, "C": C}, fn


def case_se_broadcast_mul():
    W = w(4, 4, 1, 1)
    n = [node("GlobalAveragePool", ["x"], ["p"]), node("Conv", ["p", "W"], ["q"]),
         node("Sigmoid", ["q"], ["s"]), node("Mul", ["x", "s"], ["y"])]
    fn = lambda x: x * torch.sigmoid(F.conv2d(x.mean((2, 3), keepdim=True), t(W)))
    return n, ["N", 4, 5, 5], {"W": W}, fn


def case_attention_matmul_softmax():
    Wq, Wk = w(4, 4), w(4, 4)
    n = [node("MatMul", ["x", "Wq"], ["q"]), node("MatMul", ["x", "Wk"], ["k"]),
         node("Transpose", ["k"], ["kt"], perm=[0, 2, 1]), node("MatMul", ["q", "kt"], ["s"]),
         node("Softmax", ["s"], ["a"], axis=-1), node("MatMul", ["a", "x"], ["y"])]

    def fn(x):
        s = (x @ t(Wq)) @ (x @ t(Wk)).transpose(1, 2)
        return torch.softmax(s, -1) @ x
    return n, ["N", 3, 4], {"Wq": Wq, "Wk": Wk}, fn


def case_softmax_axis1_logsoftmax():
    n = [node("Softmax", ["x"], ["s"], axis=1), node("LogSoftmax", ["s"], ["y"], axis=2)]
    fn = lambda x: torch.log_softmax(torch.softmax(x, 1), 2)
    return n, ["N", 3, 4], {}, fn


def case_resize_linear():
    sc = np.array([1, 1, 2, 1.5], np.float32)
    n = [node("Resize", ["x", "", "sc"], ["y"], mode="linear",
              coordinate_transformation_mode="half_pixel")]
    fn = lambda x: F.interpolate(x, size=(10, 9), mode="bilinear", align_corners=False)
    return n, ["N", 2, 5, 6], {"sc": sc}, fn


def case_resize_nearest():
    sc = np.array([1, 1, 2, 3], np.float32)
    n = [node("Resize", ["x", "", "sc"], ["y"], mode="nearest",
              coordinate_transformation_mode="asymmetric", nearest_mode="floor")]
    fn = lambda x: F.interpolate(x, scale_factor=(2, 3), mode="nearest")
    return n, ["N", 2, 4, 3], {"sc": sc}, fn


def case_layernorm():
    S, B = w(6) + 1, w(6)
    n = [node("LayerNormalization", ["x", "S", "B"], ["y"], axis=-1, epsilon=1e-5)]
    fn = lambda x: F.layer_norm(x, (6,), t(S), t(B), 1e-5)
    return n, ["N", 3, 6], {"S": S, "B": B}, fn


def case_slice_bounds():
    i = lambda *v: np.array(v, np.int64)
    big = np.iinfo(np.int64).max
    n = [node("Slice", ["x", "s1", "e1", "a1"], ["p"]),
         node("Slice", ["p", "s2", "e2", "a2", "st2"], ["y"])]
    inits = {"s1": i(-5, 1), "e1": i(big, -1), "a1": i(2, 3),
             "s2": i(0, -1), "e2": i(big, -big), "a2": i(2, 3), "st2": i(2, -2)}
    fn = lambda x: torch.flip(x[:, :, -5:, 1:-1][:, :, ::2], [3])[:, :, :, ::2]
    return n, ["N", 2, 7, 8], inits, fn


def case_pad_concat_split_transpose():
    i = lambda *v: np.array(v, np.int64)
    n = [node("Pad", ["x", "pads"], ["p"]),
         node("Split", ["p", "sp"], ["a", "b"], axis=1),
         node("Tanh", ["b"], ["tb"]),
         node("Concat", ["tb", "a", "x"], ["c"], axis=1),
         node("Transpose", ["c"], ["y"], perm=[0, 3, 1, 2])]
    inits = {"pads": i(0, 0, 1, 2, 0, 0, 2, 0), "sp": i(1, 2)}

    def fn(x):
        p = F.pad(x, (2, 0, 1, 2))
        a, b = p[:, :1], p[:, 1:]
        c = torch.cat([torch.tanh(b), a, F.pad(x, (2, 0, 1, 2))], 1)
        return c.permute(0, 3, 1, 2)
    # third Concat operand must match sizes: use p instead of x
    n[3] = node("Concat", ["tb", "a", "p"], ["c"], axis=1)
    return n, ["N", 3, 4, 5], inits, fn


def case_reshape_gather_expand_reduce():
    i = lambda *v: np.array(v, np.int64)
    n = [node("Reshape", ["x", "shp"], ["r"]),
         node("Gather", ["r", "idx"], ["g"], axis=1),
         node("Gather", ["r", "idx2"], ["g2"], axis=2),
         node("ReduceSum", ["g2", "ax"], ["s"], keepdims=0),
         node("Unsqueeze", ["s", "ax"], ["su"]),
         node("Expand", ["su", "eshp"], ["e"]),
         node("Unsqueeze", ["g", "ax1"], ["gu"]),
         node("Mul", ["e", "gu"], ["m"]),
         node("ReduceMean", ["m"], ["y"], axes=[1], keepdims=1)]
    inits = {"shp": i(0, 3, -1), "idx": np.array(1, np.int64), "idx2": i(0, 2, 2, 5),
             "ax": i(2), "ax1": i(1), "eshp": i(1, 6)}

    def fn(x):
        r = x.reshape(x.shape[0], 3, -1)
        g = r[:, 1]
        s = r[:, :, [0, 2, 2, 5]].sum(2)
        return (s.unsqueeze(2).expand(-1, -1, 6) * g.unsqueeze(1)).mean(1, keepdim=True)
    return n, ["N", 3, 2, 3], inits, fn


def case_lrn():
    n = [node("LRN", ["x"], ["y"], size=3, alpha=0.3, beta=0.75, bias=1.5)]
    fn = lambda x: F.local_response_norm(x, 3, alpha=0.3, beta=0.75, k=1.5)
    return n, ["N", 5, 3, 4], {}, fn


def case_elementwise_smooth():
    E = np.float32(1.7)
    n = [node("Erf", ["x"], ["a"]), node("Exp", ["a"], ["b"]), node("Sqrt", ["b"], ["c"]),
         node("Pow", ["c", "E"], ["d"]), node("Div", ["d", "b"], ["e"]),
         node("Sub", ["e", "x"], ["f"]), node("Neg", ["f"], ["g"]),
         node("Sigmoid", ["g"], ["h"]), node("Tanh", ["h"], ["y"])]
    fn = lambda x: torch.tanh(torch.sigmoid(-(torch.sqrt(torch.exp(torch.erf(x))) ** 1.7
                                              / torch.exp(torch.erf(x)) - x)))
    return n, ["N", 3, 4], {"E": E}, fn


def case_rectifiers():
    lo, hi = np.float32(-0.5), np.float32(0.8)
    n = [node("Clip", ["x", "lo", "hi"], ["a"]), node("LeakyRelu", ["x"], ["b"], alpha=0.1),
         node("HardSigmoid", ["x"], ["c"], alpha=0.3), node("HardSwish", ["x"], ["d"]),
         node("Relu", ["x"], ["e"]), node("Sum", ["a", "b", "c", "d", "e"], ["y"])]
    fn = lambda x: (x.clamp(-0.5, 0.8) + F.leaky_relu(x, 0.1) + (0.3 * x + 0.5).clamp(0, 1)
                    + F.hardswish(x) + F.relu(x))
    return n, ["N", 4, 6], {"lo": lo, "hi": hi}, fn


def case_where_cast_batchnorm():
    C = 3
    s, b_, m, v = w(C) + 1, w(C), w(C), np.abs(w(C)) + 0.5
    n = [node("BatchNormalization", ["x", "s", "b", "m", "v"], ["bn"], epsilon=1e-3),
         node("Greater", ["x", "zero"], ["cond"]), node("Cast", ["bn"], ["bc"], to=1),
         node("Where", ["cond", "bc", "x"], ["y"])]
    fn = lambda x: torch.where(x > 0, F.batch_norm(x, t(m), t(v), t(s), t(b_), eps=1e-3), x)
    return n, ["N", C, 2, 3], {"s": s, "b": b_, "m": m, "v": v, "zero": np.float32(0)}, fn


def case_gelu_opset20():
    n = [node("Gelu", ["x"], ["a"]), node("Gelu", ["a"], ["y"], approximate="tanh")]
    fn = lambda x: F.gelu(F.gelu(x), approximate="tanh")
    return n, ["N", 5], {}, fn, 20



def case_max_tie_splits_evenly():
    # Max(x, Relu(x)) ties for x > 0: torch.maximum splits the gradient 1/2 : 1/2 (total 1);
    # handing each tie the full gradient gave 2.
    n = [node("Relu", ["x"], ["r"]), node("Max", ["x", "r"], ["y"])]
    return n, ["N", 6], {}, lambda x: torch.maximum(x, F.relu(x))


def case_min_three_inputs_broadcast():
    c = w(1, 4)
    n = [node("Min", ["x", "c", "x"], ["y"])]
    return n, ["N", 3, 4], {"c": c}, lambda x: torch.minimum(x, t(c))


def case_globalmaxpool_ties_after_nearest():
    # nearest x2 makes every maximum appear 4 times; the input gets g once, not 4 g
    n = [node("Resize", ["x", "", "sc"], ["u"], mode="nearest"),
         node("GlobalMaxPool", ["u"], ["y"])]
    return (n, ["N", 2, 3, 4], {"sc": np.array([1, 1, 2, 2], np.float32)},
            lambda x: F.interpolate(x, scale_factor=2, mode="nearest").amax((2, 3), keepdim=True))


def case_softmax_opset11_coerces_2d():
    n = [node("Softmax", ["x"], ["s"], axis=2), node("LogSoftmax", ["s"], ["y"], axis=1)]

    def fn(x):
        s = torch.softmax(x.reshape(x.shape[0], 2, -1), 2).reshape(x.shape)
        return torch.log_softmax(s.reshape(x.shape[0], -1), 1).reshape(x.shape)
    return n, ["N", 2, 3, 4], {}, fn, 11


def case_conv_same_lower_and_valid():
    W1, W2 = w(3, 2, 2, 2), w(2, 3, 3, 3)
    n = [node("Conv", ["x", "W1"], ["a"], auto_pad="SAME_LOWER"),
         node("Conv", ["a", "W2"], ["y"], auto_pad="VALID", strides=[2, 2])]
    fn = lambda x: F.conv2d(F.conv2d(F.pad(x, (1, 0, 1, 0)), t(W1)), t(W2), stride=2)
    return n, ["N", 2, 7, 8], {"W1": W1, "W2": W2}, fn


def case_slice_negative_steps_partial():
    i = lambda *v: np.array(v, np.int64)

    def pick(x, axis, sl):
        return x.index_select(axis, torch.tensor(list(range(*sl.indices(x.shape[axis])))))
    n = [node("Slice", ["x", "s", "e", "a", "st"], ["y"])]
    inits = {"s": i(7, 3), "e": i(1, -5), "a": i(1, 2), "st": i(-3, -2)}
    return (n, ["N", 9, 4], inits,
            lambda x: pick(pick(x, 1, slice(7, 1, -3)), 2, slice(3, -5, -2)))


def case_pad_negative_axes_opset18():
    i = lambda *v: np.array(v, np.int64)
    n = [node("Pad", ["x", "p", "", "ax"], ["y"])]
    return (n, ["N", 3, 6], {"p": i(1, -2, 0, 3), "ax": i(-1, 1)},
            lambda x: F.pad(x, (1, 0, -2, 3)), 18)


def case_matmul_1d_operands():
    v, u = w(4), w(3)
    n = [node("MatMul", ["u", "x"], ["a"]), node("Tanh", ["a"], ["b"]),
         node("MatMul", ["b", "v"], ["y"])]
    return n, ["N", 3, 4], {"v": v, "u": u}, lambda x: torch.tanh(t(u) @ x) @ t(v)


def case_pow_tensor_exponent_and_layernorm_axis1():
    E, S = (np.abs(w(3, 4)) + 0.5), w(3, 4) + 1
    n = [node("Exp", ["x"], ["ex"]), node("Pow", ["ex", "E"], ["p"]),
         node("Pow", ["p", "ex"], ["q"]),
         node("LayerNormalization", ["q", "S"], ["y"], axis=1)]
    fn = lambda x: F.layer_norm((torch.exp(x) ** t(E)) ** torch.exp(x), (3, 4), t(S), None)
    return n, ["N", 3, 4], {"E": E, "S": S}, fn


def case_reshape_folds_batch_into_dim0():
    # [N,2,3,4] -> [2N,12] (heads folded into the batch, as attention exports do): the
    # gradient value_info must not call 2N 'N' (onnxruntime then reused wrong-size buffers)
    i = lambda *v: np.array(v, np.int64)
    n = [node("Reshape", ["x", "s1"], ["a"]), node("Softmax", ["a"], ["b"]),
         node("Reshape", ["b", "s2"], ["c"]), node("Softmax", ["c"], ["y"], axis=1)]
    fn = lambda x: torch.softmax(torch.softmax(x.reshape(-1, 12), 1).reshape(-1, 24), 1)
    return n, ["N", 2, 3, 4], {"s1": i(-1, 12), "s2": i(-1, 24)}, fn

# ---------------------------------------------------------------- rules for real exporters
def _i(*v):
    return np.array(v, np.int64)


def case_unary_trig_hyperbolic():
    # inputs in (-1, 1) after Tanh*0.9 keep Asin/Acos/Atanh defined; Acosh gets 1 + x^2 + .5
    n = [node("Tanh", ["x"], ["t0"]), node("Mul", ["t0", "k"], ["t"]),
         node("Tan", ["t"], ["a"]), node("Sinh", ["t"], ["b"]), node("Cosh", ["t"], ["c"]),
         node("Asin", ["t"], ["d"]), node("Acos", ["t"], ["e"]), node("Atan", ["x"], ["f"]),
         node("Asinh", ["x"], ["h"]), node("Atanh", ["t"], ["i"]),
         node("Mul", ["x", "x"], ["x2"]), node("Add", ["x2", "one5"], ["u"]),
         node("Acosh", ["u"], ["j"]),
         node("Sum", ["a", "b", "c", "d", "e", "f", "h", "i", "j"], ["y"])]

    def fn(x):
        t = torch.tanh(x) * 0.9
        return (torch.tan(t) + torch.sinh(t) + torch.cosh(t) + torch.asin(t) + torch.acos(t)
                + torch.atan(x) + torch.asinh(x) + torch.atanh(t) + torch.acosh(x * x + 1.5))
    return n, ["N", 3, 4], {"k": np.float32(0.9), "one5": np.float32(1.5)}, fn


def case_activations_selu_celu_mish_softplus_elu():
    n = [node("Selu", ["x"], ["a"]), node("Celu", ["x"], ["b"], alpha=0.7),
         node("Mish", ["x"], ["c"]), node("Softplus", ["x"], ["d"]),
         node("Elu", ["x"], ["e"], alpha=0.6), node("Softsign", ["x"], ["f"]),
         node("Sum", ["a", "b", "c", "d", "e", "f"], ["y"])]
    fn = lambda x: (torch.selu(x) + F.celu(x, 0.7) + F.mish(x) + F.softplus(x) + F.elu(x, 0.6)
                    + F.softsign(x))
    return n, ["N", 4, 5], {}, fn, 18


def case_thresholded_relu_shrink_prelu():
    slope = w(3, 1, 1)
    n = [node("ThresholdedRelu", ["x"], ["a"], alpha=0.3),
         node("Shrink", ["x"], ["b"], lambd=0.4, bias=0.1),
         node("PRelu", ["x", "s"], ["c"]), node("Sum", ["a", "b", "c"], ["y"])]
    fn = lambda x: (torch.where(x > 0.3, x, 0 * x)
                    + torch.where(x > 0.4, x - 0.1, torch.where(x < -0.4, x + 0.1, 0 * x))
                    + F.prelu(x, t(slope).reshape(-1)))
    return n, ["N", 3, 4, 2], {"s": slope}, fn


def case_neg_abs_reciprocal_log_sin_cos():
    n = [node("Abs", ["x"], ["a"]), node("Add", ["a", "one"], ["a1"]),
         node("Reciprocal", ["a1"], ["r"]), node("Log", ["a1"], ["l"]),
         node("Sin", ["x"], ["s"]), node("Cos", ["x"], ["c"]), node("Neg", ["c"], ["nc"]),
         node("Sum", ["r", "l", "s", "nc"], ["y"])]
    fn = lambda x: (1 / (x.abs() + 1) + torch.log(x.abs() + 1) + torch.sin(x) - torch.cos(x))
    return n, ["N", 5], {"one": np.float32(1)}, fn


def case_reduce_l1_l2_logsumexp_sumsquare_opset18():
    n = [node("ReduceL1", ["x", "a1"], ["p"], keepdims=1),
         node("ReduceL2", ["x", "a2"], ["q"], keepdims=0),
         node("ReduceLogSumExp", ["x", "a1"], ["r"], keepdims=1),
         node("ReduceSumSquare", ["x", "a2"], ["u"], keepdims=0),
         node("Mul", ["p", "r"], ["pr"]), node("ReduceSum", ["pr", "a2"], ["prs"], keepdims=0),
         node("Add", ["q", "u"], ["qu"]), node("Add", ["qu", "prs"], ["y"])]

    def fn(x):
        p = x.abs().sum(2, keepdim=True)
        r = torch.logsumexp(x, 2, keepdim=True)
        return torch.linalg.vector_norm(x, 2, 1) + (x * x).sum(1) + (p * r).sum(1)
    return n, ["N", 3, 4], {"a1": _i(2), "a2": _i(1)}, fn, 18


def case_reduce_l2_opset13_attrs_and_prod():
    n = [node("ReduceL2", ["x"], ["q"], axes=[2], keepdims=1),
         node("ReduceProd", ["x"], ["p"], axes=[1], keepdims=1),
         node("Mul", ["q", "p"], ["y"])]
    fn = lambda x: torch.linalg.vector_norm(x, 2, 2, keepdim=True) * x.prod(1, keepdim=True)
    return n, ["N", 3, 4], {}, fn, 13


def case_reduce_prod_with_zeros():
    # exact zeros: one zero in a slice (product of the others) and two (zero gradient)
    n = [node("Mul", ["x", "m"], ["xm"]), node("ReduceProd", ["xm", "ax"], ["y"], keepdims=0)]
    m = np.ones((3, 4), np.float32)
    m[0, 1] = 0
    m[1, 0] = m[1, 2] = 0
    return n, ["N", 3, 4], {"m": m, "ax": _i(2)}, lambda x: (x * t(m)).prod(2), 18


def case_instance_norm():
    S, B = w(3) + 1, w(3)
    n = [node("InstanceNormalization", ["x", "S", "B"], ["y"], epsilon=1e-5)]
    fn = lambda x: F.instance_norm(x, weight=t(S), bias=t(B), eps=1e-5)
    return n, ["N", 3, 4, 5], {"S": S, "B": B}, fn


def case_group_norm_opset21_per_channel():
    S, B = w(6) + 1, w(6)
    n = [node("GroupNormalization", ["x", "S", "B"], ["y"], num_groups=3, epsilon=1e-5)]
    fn = lambda x: F.group_norm(x, 3, t(S), t(B), 1e-5)
    return n, ["N", 6, 3, 2], {"S": S, "B": B}, fn, 21


def case_group_norm_opset18_per_group():
    S, B = w(2) + 1, w(2)
    n = [node("GroupNormalization", ["x", "S", "B"], ["y"], num_groups=2, epsilon=1e-5)]
    fn = lambda x: F.group_norm(x, 2, t(np.repeat(S, 2)), t(np.repeat(B, 2)), 1e-5)
    return n, ["N", 4, 3, 2], {"S": S, "B": B}, fn, 18


def case_lp_normalization_p1_p2():
    n = [node("LpNormalization", ["x"], ["a"], axis=1, p=2),
         node("LpNormalization", ["x"], ["b"], axis=-1, p=1), node("Add", ["a", "b"], ["y"])]
    fn = lambda x: F.normalize(x, 2, 1, eps=0) + F.normalize(x, 1, -1, eps=0)
    return n, ["N", 3, 4], {}, fn


def case_einsum_attention_and_reduction():
    Wv = w(4, 6)
    n = [node("Einsum", ["x", "x"], ["s"], equation="bij,bkj->bik"),
         node("Softmax", ["s"], ["a"], axis=-1),
         node("Einsum", ["a", "x", "Wv"], ["o"], equation="bik,bkj,jd->bid"),
         node("Einsum", ["o"], ["y"], equation="bid->bd")]
    fn = lambda x: torch.einsum("bid->bd", torch.einsum(
        "bik,bkj,jd->bid", torch.softmax(torch.einsum("bij,bkj->bik", x, x), -1), x, t(Wv)))
    return n, ["N", 3, 4], {"Wv": Wv}, fn, 12


def case_einsum_diagonals():
    # a repeated subscript within an operand: a diagonal ("bii") and a trace over an ellipsis
    n = [node("Einsum", ["x", "x"], ["a"], equation="bii,bij->bj"),
         node("Einsum", ["x"], ["tr"], equation="...ii->..."),
         node("Unsqueeze", ["tr", "ax"], ["tu"]), node("Add", ["a", "tu"], ["y"])]
    fn = lambda x: torch.einsum("bii,bij->bj", x, x) + torch.einsum("...ii->...", x)[:, None]
    return n, ["N", 3, 3], {"ax": _i(1)}, fn


def case_einsum_triple_diagonal():
    n = [node("Einsum", ["x"], ["d"], equation="biii->bi"), node("Tanh", ["d"], ["y"])]
    return n, ["N", 3, 3, 3], {}, lambda x: torch.tanh(torch.einsum("biii->bi", x))


def case_einsum_broadcast_ellipsis():
    # ellipsis dims of size 1 broadcast: x [N, 1, 3, 4] @ W [1, 5, 4, 2] -> [N, 5, 3, 2] (x's
    # gradient sums over the axis W broadcasts to 5), then @ V [1, 1, 2, 3] (V's 1s broadcast)
    W, V = w(1, 5, 4, 2), w(1, 1, 2, 3)
    n = [node("Einsum", ["x", "W"], ["a"], equation="...ij,...jk->...ik"),
         node("Einsum", ["a", "V"], ["b"], equation="...ij,...jk->...ik"), node("Tanh", ["b"], ["y"])]
    return n, ["N", 1, 3, 4], {"W": W, "V": V}, lambda x: torch.tanh(torch.matmul(torch.matmul(x, t(W)), t(V)))


def case_einsum_ellipsis_implicit_output():
    Wq = w(4, 2)
    n = [node("Einsum", ["x", "Wq"], ["q"], equation="...ij,jk"), node("Tanh", ["q"], ["y"])]
    return n, ["N", 2, 3, 4], {"Wq": Wq}, lambda x: torch.tanh(torch.einsum("...ij,jk", x, t(Wq)))


def case_matmul_batched_broadcast():
    # [N,2,3,4] @ [4,5] (weights), and activations [N,1,3,4] @ [N,2,4,3] (broadcast dim 1)
    W = w(4, 5)
    n = [node("MatMul", ["x", "W"], ["a"]),
         node("Slice", ["x", "s0", "s1", "ax"], ["x0"]),
         node("Transpose", ["x"], ["xt"], perm=[0, 1, 3, 2]),
         node("MatMul", ["x0", "xt"], ["b"]),
         node("MatMul", ["b", "a"], ["y"])]

    def fn(x):
        return (x[:, :1] @ x.transpose(2, 3)) @ (x @ t(W))
    return n, ["N", 2, 3, 4], {"W": W, "s0": _i(0), "s1": _i(1), "ax": _i(1)}, fn


def case_resize_cubic_and_linear_downsample():
    n = [node("Resize", ["x", "", "", "sz"], ["a"], mode="cubic", cubic_coeff_a=-0.75,
              coordinate_transformation_mode="half_pixel", axes=[2, 3]),
         node("Resize", ["a", "", "", "sz2"], ["y"], mode="linear",
              coordinate_transformation_mode="pytorch_half_pixel", axes=[2, 3])]

    def fn(x):
        a = F.interpolate(x, size=(9, 7), mode="bicubic", align_corners=False)
        return F.interpolate(a, size=(4, 3), mode="bilinear", align_corners=False)
    return (n, ["N", 2, 5, 6], {"sz": _i(9, 7), "sz2": _i(4, 3)}, fn, 18)


def case_resize_align_corners_nearest_round():
    n = [node("Resize", ["x", "", "", "sz"], ["a"], mode="linear",
              coordinate_transformation_mode="align_corners", axes=[2, 3]),
         node("Resize", ["a", "", "sc"], ["y"], mode="nearest",
              coordinate_transformation_mode="half_pixel", nearest_mode="round_prefer_floor")]

    def fn(x):
        a = F.interpolate(x, size=(7, 9), mode="bilinear", align_corners=True)
        return F.interpolate(a, scale_factor=2, mode="nearest-exact")
    return (n, ["N", 2, 4, 5], {"sz": _i(7, 9), "sc": np.array([1, 1, 2, 2], np.float32)},
            fn, 18)


def case_resize_antialias_linear_cubic():
    # opset 18 antialias: the filter stretched by the downscale factor (torch's antialias=True
    # is exclude_outside=1, and cubic_coeff_a=-0.5 for bicubic); 13x11 -> 5x4 -> 8x3 (up and down)
    n = [node("Resize", ["x", "", "", "sz"], ["a"], mode="linear", antialias=1, exclude_outside=1,
              coordinate_transformation_mode="half_pixel", axes=[2, 3]),
         node("Resize", ["a", "", "", "sz2"], ["y"], mode="cubic", antialias=1, exclude_outside=1,
              cubic_coeff_a=-0.5, coordinate_transformation_mode="half_pixel", axes=[2, 3])]

    def fn(x):
        a = F.interpolate(x, size=(5, 4), mode="bilinear", antialias=True, align_corners=False)
        return F.interpolate(a, size=(8, 3), mode="bicubic", antialias=True, align_corners=False)
    return (n, ["N", 2, 13, 11], {"sz": _i(5, 4), "sz2": _i(8, 3)}, fn, 18)


def case_resize_antialias_bicubic_downsample():
    n = [node("Resize", ["x", "", "", "sz"], ["y"], mode="cubic", antialias=1, exclude_outside=1,
              cubic_coeff_a=-0.5, coordinate_transformation_mode="half_pixel", axes=[2, 3])]
    fn = lambda x: F.interpolate(x, size=(6, 4), mode="bicubic", antialias=True, align_corners=False)
    return (n, ["N", 3, 17, 9], {"sz": _i(6, 4)}, fn, 18)


def case_tile_cumsum():
    n = [node("Tile", ["x", "rep"], ["a"]), node("CumSum", ["a", "ax"], ["b"]),
         node("CumSum", ["b", "ax2"], ["y"], exclusive=1, reverse=1)]

    def fn(x):
        a = x.repeat(1, 2, 3)
        b = torch.cumsum(a, 2)
        rev = torch.flip(torch.cumsum(torch.flip(b, [1]), 1), [1])
        return rev - b
    return n, ["N", 2, 3], {"rep": _i(1, 2, 3), "ax": np.array(2, np.int64),
                            "ax2": np.array(1, np.int64)}, fn


def case_depth_to_space_dcr_crd_space_to_depth():
    n = [node("DepthToSpace", ["x"], ["a"], blocksize=2, mode="DCR"),
         node("SpaceToDepth", ["a"], ["b"], blocksize=2),
         node("DepthToSpace", ["b"], ["c"], blocksize=2, mode="CRD"),
         node("Mul", ["c", "a"], ["y"])]

    def fn(x):
        a = F.pixel_shuffle(x.reshape(x.shape[0], 2, 2, 2, 3, 2).permute(0, 3, 1, 2, 4, 5)
                            .reshape(x.shape[0], 8, 3, 2), 2)
        b = a.reshape(x.shape[0], 2, 3, 2, 2, 2).permute(0, 3, 5, 1, 2, 4).reshape(x.shape[0], 8, 3, 2)
        return F.pixel_shuffle(b, 2) * a
    return n, ["N", 8, 3, 2], {}, fn


def case_topk_argmax_range_zero():
    # TopK values carry the gradient back to where they came from; ArgMax and Range
    # feed only integer paths (no gradient)
    n = [node("TopK", ["x", "k"], ["v", "i"], axis=-1, largest=1),
         node("ArgMax", ["x"], ["am"], axis=2, keepdims=1),
         node("Cast", ["am"], ["amf"], to=1),
         node("Range", ["r0", "r1", "r2"], ["rg"]), node("Cast", ["rg"], ["rgf"], to=1),
         node("Mul", ["v", "rgf"], ["vr"]), node("Add", ["vr", "amf"], ["y"])]

    def fn(x):
        v = torch.topk(x, 2, -1).values
        return v * torch.arange(2, dtype=x.dtype) + x.argmax(2, keepdim=True).to(x.dtype)
    return (n, ["N", 3, 5], {"k": _i(2), "r0": np.array(0, np.int64),
                             "r1": np.array(2, np.int64), "r2": np.array(1, np.int64)}, fn)


def case_flatten_squeeze_mean():
    n = [node("Flatten", ["x"], ["f"], axis=1), node("Unsqueeze", ["f", "ax"], ["u"]),
         node("Squeeze", ["u", "ax"], ["s"]), node("Tanh", ["s"], ["ts"]),
         node("Mean", ["s", "ts", "c"], ["y"])]
    c = w(1, 18)
    fn = lambda x: (x.reshape(x.shape[0], 18) + torch.tanh(x.reshape(x.shape[0], 18))
                    + t(c)) / 3
    return n, ["N", 3, 2, 3], {"ax": _i(1), "c": c}, fn


def case_gather_runtime_indices_as_strided():
    # the dynamo exporter's as_strided: flatten, then Gather at Range-built (batch-dependent)
    # offsets; repeated offsets must accumulate
    offs = np.array([0, 0, 5, 11, 7, 7, 7, 2], np.int64)
    n = [node("Shape", ["x"], ["shp"]), node("Gather", ["shp", "zero"], ["nb"], axis=0),
         node("Range", ["zero", "nb", "one"], ["rg"]), node("Mul", ["rg", "twelve"], ["base"]),
         node("Unsqueeze", ["base", "ax1"], ["base2"]), node("Add", ["base2", "offs"], ["idx"]),
         node("Reshape", ["x", "flat"], ["xf"]), node("Gather", ["xf", "idx"], ["g"], axis=0),
         node("Tanh", ["g"], ["y"])]
    inits = {"zero": np.array(0, np.int64), "one": np.array(1, np.int64),
             "twelve": np.array(12, np.int64), "ax1": _i(1), "offs": offs, "flat": _i(-1)}
    return n, ["N", 3, 4], inits, lambda x: torch.tanh(x.reshape(x.shape[0], 12)[:, offs])


def case_identity_dropout_cast_quant_pair():
    # fake quantization: straight-through inside the range, zero outside (see precision.py)
    s, zp = np.float32(0.05), np.int8(0)
    n = [node("Identity", ["x"], ["a"]), node("Dropout", ["a"], ["b"]),
         node("Cast", ["b"], ["c"], to=1),
         node("QuantizeLinear", ["c", "s", "zp"], ["q"]),
         node("DequantizeLinear", ["q", "s", "zp"], ["y"])]

    def fn(x):
        fq = torch.fake_quantize_per_tensor_affine(x, 0.05, 0, -128, 127)
        inside = ((x > -128 * 0.05) & (x < 127 * 0.05)).to(x.dtype)
        return (fq - x * inside).detach() + x * inside
    return n, ["N", 40], {"s": s, "zp": zp}, fn


CASES = {k[5:]: v for k, v in sorted(globals().items()) if k.startswith("case_")}


@pytest.mark.parametrize("name", sorted(CASES))
def test_op_gradient_matches_torch(name):
    spec = CASES[name]()
    nodes, shape, inits, fn = spec[:4]
    opset = spec[4] if len(spec) > 4 else 17
    model = make_model(nodes, shape, inits=inits, opset=opset)
    x = np.random.default_rng(7).standard_normal([2] + shape[1:]).astype(np.float32)
    out, seed, gm = onnx_grad(model, x)
    y_t, g_t = torch_grad(fn, x, seed)
    assert rel_err(out["y"], y_t) < 1e-5, "forward differs: the torch mirror is wrong"
    assert rel_err(out["grad:x"], g_t) < 1e-4
    assert not declared_shape_errors(gm, batches=(1, 3))     # every shape the gradient graph declares is real
    onnx.checker.check_model(gm, full_check=True)


def test_gather_runtime_indices_on_inner_axes():
    """Gather with indices computed at run time on axes 1 and 2 (a token or channel picked by an
    ArgMax; repeats accumulate, a negative index counts from the end). Such indices are per
    sample only with batch 1 (a static-batch export), so the model has batch 1.
    Oracle: torch autograd (float64), indices from the same ArgMax in torch."""
    n = [node("ReduceSum", ["x", "ax2"], ["rs"], keepdims=0),            # [1, 5]
         node("ArgMax", ["rs"], ["am"], axis=1, keepdims=0),              # [1]: a token
         node("Sub", ["am", "five"], ["neg"]),                            # the same token, counted from the end
         node("Concat", ["am", "am", "neg"], ["idx"], axis=0),            # [3]: repeated and negative
         node("Gather", ["x", "idx"], ["g1"], axis=1),                    # [1, 3, 6]
         node("ReduceSum", ["x", "ax1"], ["cs"], keepdims=0),             # [1, 6]
         node("ArgMin", ["cs"], ["amin"], axis=1, keepdims=0),
         node("Squeeze", ["amin", "ax0"], ["ch"]),                         # scalar: a channel
         node("Gather", ["x", "ch"], ["g2"], axis=2),                      # [1, 5]
         node("Tanh", ["g1"], ["t1"]), node("ReduceSum", ["t1", "ax1"], ["s1"], keepdims=0),   # [1, 6]
         node("MatMul", ["s1", "Wc"], ["p"]),                              # [1, 5]
         node("Mul", ["p", "g2"], ["y"])]
    Wc = w(6, 5)
    inits = {"ax0": _i(0), "ax1": _i(1), "ax2": _i(2), "five": _i(5), "Wc": Wc}
    model = make_model(n, [1, 5, 6], inits=inits, opset=17)

    def fn(x):
        am = int(x.sum(2).argmax(1)[0])
        ch = int(x.sum(1).argmin(1)[0])
        g1 = x[:, [am, am, am - 5]]
        return (torch.tanh(g1).sum(1) @ t(Wc)) * x[:, :, ch]
    x = np.random.default_rng(3).standard_normal((1, 5, 6)).astype(np.float32)
    out, seed, gm = onnx_grad(model, x)
    y_t, g_t = torch_grad(fn, x, seed)
    assert rel_err(out["y"], y_t) < 1e-5, "forward differs: the torch mirror is wrong"
    assert rel_err(out["grad:x"], g_t) < 1e-4
    assert not declared_shape_errors(gm, batches=(1,))
    onnx.checker.check_model(gm, full_check=True)


def test_gather_runtime_2d_indices_on_axis_2():
    """2-D run-time indices (one negative) on axis 2 of a rank-4 tensor: the index dims land in
    the middle of the output. Oracle: torch autograd (float64) with the same ArgMax in torch."""
    n = [node("ReduceSum", ["x", "ax3"], ["rs"], keepdims=0), node("ReduceSum", ["rs", "ax1"], ["rs2"], keepdims=0),
         node("ArgMax", ["rs2"], ["am"], axis=1, keepdims=0), node("Sub", ["am", "five"], ["neg"]),
         node("Concat", ["am", "neg", "am", "zero"], ["i4"], axis=0), node("Reshape", ["i4", "s22"], ["idx"]),
         node("Gather", ["x", "idx"], ["g"], axis=2), node("Tanh", ["g"], ["y"])]
    model = make_model(n, [1, 3, 5, 4], inits={"ax1": _i(1), "ax3": _i(3), "five": _i(5), "zero": _i(0),
                                               "s22": _i(2, 2)})

    def fn(x):
        am = int(x.sum(3).sum(1).argmax(1)[0])
        return torch.tanh(x[:, :, torch.tensor([[am, am - 5], [am, 0]])])
    x = np.random.default_rng(5).standard_normal((1, 3, 5, 4)).astype(np.float32)
    out, seed, gm = onnx_grad(model, x)
    y_t, g_t = torch_grad(fn, x, seed)
    assert out["y"].shape == (1, 3, 2, 2, 4) and rel_err(out["y"], y_t) < 1e-5
    assert rel_err(out["grad:x"], g_t) < 1e-4
    assert not declared_shape_errors(gm, batches=(1,))


def test_unsupported_op_names_node_and_type():
    model = make_model([node("Relu", ["x"], ["r"]),
                        node("Det", ["r"], ["y"], name="det_7")], ["N", 4, 4])
    with pytest.raises(GraphError, match=r"node 'det_7' \(Det\): no backward rule"):
        build_gradient_model(prepare_model(model))


def test_batchnorm_training_mode_refused():
    C = 2
    inits = {k: np.ones(C, np.float32) for k in "sbmv"}
    model = make_model([node("BatchNormalization", ["x", "s", "b", "m", "v"], ["y"],
                             training_mode=1, name="bn_train")], ["N", C, 3], inits=inits)
    with pytest.raises(GraphError, match=r"bn_train.*training_mode"):
        build_gradient_model(model)


def test_every_rule_has_a_torch_test():
    """Each op in the rule table appears in a case above (checked against torch float64):
    adding a rule without a test fails here."""
    from onnxplain.graph.rules import RULES

    covered = {n.op_type for make in CASES.values() for n in make()[0]}
    assert sorted(set(RULES) - covered) == []


def test_rule_declarations_match_the_onnx_schema():
    """A rule that declares neither a gradient nor a constant for an input the ONNX schema
    calls differentiable cannot register."""
    from onnxplain.graph.rules import RuleTableError, rule

    with pytest.raises(RuleTableError, match=r"rule for Mul: input 1 \('B'\)"):
        rule("Mul")(lambda b, node, gy: [gy[0], None])


def test_bad_relu_mode_message():
    model = make_model([node("Relu", ["x"], ["y"])], ["N", 5])
    with pytest.raises(GraphError, match="'relu_mode' parameter must be one of"):
        build_gradient_model(model, relu_mode="bogus")


def test_gradient_value_info_keeps_symbolic_batch():
    """Gradient tensors carry 'N' as batch dim (onnxruntime's NCHWc pass needs it to keep
    gradient Add/Mul in the blocked layout); the graph must still load and run."""
    import onnxruntime as ort
    from onnx import TensorProto, numpy_helper

    r = np.random.RandomState(0)
    inits = [numpy_helper.from_array(r.randn(16, 3, 3, 3).astype(np.float32), "w"),
             numpy_helper.from_array(np.array(0, np.float32), "lo"),
             numpy_helper.from_array(np.array(6, np.float32), "hi")]
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node("Clip", ["c", "lo", "hi"], ["y"]),
             helper.make_node("GlobalAveragePool", ["y"], ["p"]),
             helper.make_node("Flatten", ["p"], ["out"])]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 8, 8])],
                          [helper.make_tensor_value_info("out", TensorProto.FLOAT, ["N", 16])], inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    gm = build_gradient_model(prepare_model(m))
    grads = [vi for vi in gm.graph.value_info if vi.name.startswith("grad/")]
    assert grads and all(vi.type.tensor_type.shape.dim[0].dim_param == "N" for vi in grads
                         if vi.type.tensor_type.shape.dim)
    sess = ort.InferenceSession(gm.SerializeToString(), providers=["CPUExecutionProvider"])
    x = r.randn(2, 3, 8, 8).astype(np.float32)
    names = [o.name for o in sess.get_outputs()]
    res = sess.run(None, {"x": x, "seed": np.ones((2, 16), np.float32)})
    assert res[names.index(names[-1])].shape == (2, 3, 8, 8)


def test_layernorm_statistics_outputs_refused():
    """The Mean / InvStdDev outputs used downstream: no silent dropping of their gradient."""
    S = np.ones(4, np.float32)
    model = make_model([node("LayerNormalization", ["x", "S"], ["ln", "mu"], name="ln_1"),
                        node("Mul", ["ln", "mu"], ["y"])], ["N", 3, 4], inits={"S": S})
    with pytest.raises(GraphError, match=r"ln_1.*LayerNormalization.*Mean"):
        build_gradient_model(prepare_model(model))


def test_float64_gradient_path_refused():
    model = make_model([node("Cast", ["x"], ["a"], to=11), node("Tanh", ["a"], ["b"], name="t64"),
                        node("Cast", ["b"], ["y"], to=1)], ["N", 5])
    with pytest.raises(GraphError, match=r"t64.*Tanh.*float64"):
        build_gradient_model(prepare_model(model))


def test_resize_scales_rounding_mismatch_refused():
    """onnx shape inference gives 5 * 1.8f -> 8, onnxruntime runs 9: a clear GraphError."""
    model = make_model([node("Resize", ["x", "", "sc"], ["y"], mode="linear", name="rs")],
                       ["N", 2, 4, 5], inits={"sc": np.array([1, 1, 1.75, 1.8], np.float32)})
    with pytest.raises(GraphError, match=r"rs.*Resize.*differs from the inferred"):
        build_gradient_model(prepare_model(model))


@pytest.mark.parametrize("step_masks", ["hardsigmoid", "compare"])
@pytest.mark.parametrize("op,lo,hi", [("Relu", 0.0, None), ("Clip", 0.0, 6.0),
                                      ("Clip", -0.5, 0.8), ("Clip", None, 3.0)])
def test_rectifier_masks_exact_at_edges(op, lo, hi, step_masks):
    """The HardSigmoid-built masks are exactly 0 at a bound and exactly 1 one float step
    inside it (2**-100 inside a bound of 0: the documented sliver); the comparison masks
    (other providers) exactly 0/1 with no sliver. Oracle: the analytic derivative
    lo < x < hi (0 on the bound, as before)."""
    f32 = np.float32
    edges = [f32(v) for v in (lo, hi) if v is not None]
    vals = [f32(0.0), f32(-0.0), f32(2.0 ** -100), f32(-2.0 ** -100), f32(1e-29), f32(2.0),
            f32(-3.0), f32(1e30), f32(-1e30)]
    for e in edges:
        if e != 0:
            vals += [e, np.nextafter(e, f32(np.inf)), np.nextafter(e, f32(-np.inf))]
    x = np.array(vals, f32)[None, :]
    inits = {k: f32(v) for k, v in (("lo", lo), ("hi", hi)) if v is not None}
    if op == "Relu":
        nodes = [node("Relu", ["x"], ["y"])]
    else:  # an absent bound is an empty input name
        nodes = [node("Clip", ["x", "lo" if lo is not None else "", "hi" if hi is not None else ""], ["y"])]
    out, seed, gm = onnx_grad(make_model(nodes, ["N", x.shape[1]], inits=inits), x, step_masks=step_masks)
    assert ("HardSigmoid" in {n.op_type for n in gm.graph.node}) == (step_masks == "hardsigmoid")
    inside = np.ones_like(x, bool)
    if lo is not None:
        inside &= x > f32(lo)
    if hi is not None:
        inside &= x < f32(hi)
    np.testing.assert_array_equal(out["grad:x"], np.where(inside, seed, 0).astype(f32))


def test_rectifier_rules_match_torch_with_comparison_masks():
    """Relu, Clip, HardSigmoid, HardSwish, LeakyRelu with ``step_masks="compare"`` (the form
    every provider but ORT's CPU one gets). Oracle: torch autograd, float64."""
    nodes, dims, inits, fn = case_rectifiers()
    x = R.standard_normal((3, 4, 6)).astype(np.float32) * 3
    out, seed, gm = onnx_grad(make_model(nodes, dims, inits=inits), x, step_masks="compare")
    assert "HardSigmoid" not in {n.op_type for n in gm.graph.node if n.name.startswith("grad/")}
    _, want = torch_grad(fn, x, seed)
    assert rel_err(out["grad:x"], want) < 1e-5
    with pytest.raises(GraphError, match="step_masks"):
        build_gradient_model(prepare_model(make_model(nodes, dims, inits=inits)), step_masks="fast")


@pytest.mark.parametrize("name", ["conv_depthwise_stride2_tf_pads",
                                  "conv_depthwise_stride2_k5_subpixel",
                                  "conv_depthwise_stride3_subpixel"])
@pytest.mark.parametrize("upgrade", [True, False])
def test_strided_depthwise_interleave_both_forms(name, upgrade, monkeypatch):
    """Col2Im after the opset-18 upgrade, and the opset-17 ConvTranspose interleave used
    when the upgrade is not possible (forced here). Oracle: torch autograd, float64."""
    from onnxplain.graph import reverse

    if not upgrade:
        def refuse(model, version):
            if version >= 18:
                raise RuntimeError("no converter")
            return onnx.version_converter.convert_version(model, version)
        monkeypatch.setattr(reverse, "_upgraded", refuse)
    nodes, shape, inits, fn = CASES[name]()
    x = np.random.default_rng(3).standard_normal([2] + shape[1:]).astype(np.float32)
    out, seed, gm = onnx_grad(make_model(nodes, shape, inits=inits), x)
    ops = {n.op_type for n in gm.graph.node}
    assert ("Col2Im" in ops) == upgrade and ("ConvTranspose" in ops) != upgrade
    _, g_t = torch_grad(fn, x, seed)
    assert rel_err(out["grad:x"], g_t) < 1e-4


def test_top_class_seed_in_graph():
    """seed='top' picks each sample's first largest entry in the graph. Oracle: numpy's
    argmax, and the same graph fed that one-hot seed as an input (which is checked against
    torch by the op tests)."""
    from onnxplain.graph.reverse import SEED, TARGET

    W = w(6, 5)
    model = make_model([node("MatMul", ["x", "W"], ["m"]), node("Tanh", ["m"], ["y"])],
                       ["N", 6], inits={"W": W})
    x = R.standard_normal((4, 6)).astype(np.float32)
    x[3] = x[2]  # a repeated row keeps the batch honest
    prepared = prepare_model(model)
    top = session(build_gradient_model(prepared, seed="top"))
    fed = session(build_gradient_model(prepared))
    got = dict(zip([o.name for o in top.get_outputs()], top.run(None, {"x": x})))
    y = got["y"]
    np.testing.assert_array_equal(got[TARGET], np.argmax(y, axis=1))
    hot = np.eye(5, dtype=np.float32)[np.argmax(y, axis=1)]
    ref = dict(zip([o.name for o in fed.get_outputs()], fed.run(None, {"x": x, SEED: hot})))
    np.testing.assert_array_equal(got["grad:x"], ref["grad:x"])
    with pytest.raises(GraphError, match="seed='top' needs a reduction tensor of shape"):
        build_gradient_model(prepare_model(make_model([node("Relu", ["x"], ["y"])], ["N", 2, 3])),
                             seed="top")
    with pytest.raises(GraphError, match="'seed' parameter must be one of"):
        build_gradient_model(prepared, seed="argmax")
