"""Sanity checks for saliency maps (Adebayo et al. 2018, "Sanity Checks for Saliency Maps").

A map that explains the model must change when the model's weights are destroyed. The
model parameter randomisation test re-draws the weights of the ONNX graph's "layers":

- a layer is a Conv, Gemm or MatMul node with a weight initializer, together with its bias
  initializer, a directly following BatchNormalization's scale and bias (running mean and
  variance are kept, so the normalisation stays well defined) and, for MatMul, an Add of an
  initializer bias; layers are ordered from the output towards the input (index 0 = the
  layer closest to the output);
- a weight tensor is re-drawn from a normal distribution with the tensor's own mean and
  standard deviation, seeded by (seed, layer index, tensor position), so a layer gets the
  same random weights in every step and mode;
- "cascading": step k randomises layers 0..k (top down); "independent": step k randomises
  layer k alone.

Each randomised graph becomes a model with ``Model.with_graph`` (the original model is
never modified); every method's map is recomputed for the original model's top class and
compared with the original map by Spearman rank correlation of the absolute-valued maps
and of the signed maps, and by SSIM of the absolute-valued maps min-max normalised to [0, 1]
(``skimage.metrics.structural_similarity``, data_range 1).

Only float32/float16 initializers are re-drawn; quantized (QDQ) graphs keep their integer
weights and are not meant for this test.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np
import onnx
from onnx import numpy_helper

from .errors import OptionError
from ._validation import check_choice, check_int
from .registry import METHODS, check_methods
from .model import Model

log = logging.getLogger(__name__)

MODES = ("cascading", "independent")
_WEIGHT_OPS = ("Conv", "Gemm", "MatMul", "ConvTranspose")
_FLOAT_TYPES = (onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.DOUBLE)


@dataclass(frozen=True)
class WeightLayer:
    """One randomisable layer of an ONNX graph."""

    index: int                       # 0 = closest to the output
    node: str                        # the Conv/Gemm/MatMul node's name (or first output)
    op_type: str
    initializers: tuple[str, ...]    # weight first, then bias / BatchNormalization scale and bias


@dataclass
class SanityResult:
    """Outcome of :func:`sanity_check`.

    Attributes
    ----------
    mode : str
    label : int
    label_name : str
    layers : list of WeightLayer
        All layers of the graph, output first.
    rows : list of dict
        One per (method, step): ``method``, ``step`` (layer index randomised up to, or the
        single layer), ``layer`` (its node name), ``op_type``, ``spearman_abs``,
        ``spearman_signed``, ``ssim``, ``top1`` (the randomised model's top class),
        ``note`` ("constant map" when a correlation is undefined).
    original_maps : dict of str to ndarray (H, W)
        Each method's map on the original model.
    maps : dict of (str, int) to ndarray (H, W)
        Randomised maps, only when ``keep_maps`` was set.
    """

    mode: str
    label: int
    label_name: str
    layers: list[WeightLayer]
    rows: list[dict[str, Any]]
    original_maps: dict[str, np.ndarray]
    maps: dict[tuple[str, int], np.ndarray] = field(default_factory=dict)
    params: dict[str, Any] = field(default_factory=dict)

    def markdown(self) -> str:
        """The rows as a markdown table."""
        head = "| method | mode | randomised up to | layer | spearman abs | spearman signed | SSIM | top-1 | note |"
        lines = [head, "|" + "---|" * 9]
        for r in self.rows:
            upto = f"{r['step']}" if self.mode == "cascading" else f"only {r['step']}"
            lines.append(f"| {r['method']} | {self.mode} | {upto} | {r['layer']} | {_f(r['spearman_abs'])} | "
                         f"{_f(r['spearman_signed'])} | {_f(r['ssim'])} | {r['top1']} | {r['note']} |")
        return "\n".join(lines)

    def plot(self, path: str) -> None:
        """Write a PNG: rank correlation (abs) and SSIM vs randomised layer, one line per method."""
        import matplotlib

        matplotlib.use("Agg", force=False)
        import matplotlib.pyplot as plt

        fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), dpi=100)
        methods = list(dict.fromkeys(r["method"] for r in self.rows))
        for m in methods:
            rows = [r for r in self.rows if r["method"] == m]
            x = np.array([-1] + [r["step"] for r in rows])
            rho = np.array([1.0] + [r["spearman_abs"] for r in rows])
            const = np.isnan(rho)  # a constant map has no rank correlation: drawn at 0 with an x
            line, = axes[0].plot(x, np.where(const, 0.0, rho), marker="o", label=m)
            if const.any():
                axes[0].plot(x[const], np.zeros(const.sum()), "x", color=line.get_color(), ms=10,
                             label=f"{m}: constant map")
            axes[1].plot(x, [1.0] + [r["ssim"] for r in rows], marker="o", label=m)
        for ax, name in zip(axes, ("Spearman rank correlation (|map|)", "SSIM (|map| in [0, 1])")):
            ax.set_xlabel(("randomised up to layer" if self.mode == "cascading" else "randomised layer")
                          + " (0 = output side; -1 = original)")
            ax.set_ylabel(name)
            ax.set_ylim(-0.25, 1.05)
            ax.axhline(0.0, color="grey", lw=0.6)
            ax.grid(alpha=0.3)
        axes[0].legend(fontsize=8)
        fig.suptitle(f"{self.mode} randomisation, class {self.label_name} ({self.label})", fontsize=10)
        fig.tight_layout()
        fig.savefig(path)
        plt.close(fig)


def weight_layers(proto: onnx.ModelProto) -> list[WeightLayer]:
    """The graph's randomisable layers, ordered from the output to the input.

    Returns
    -------
    list of WeightLayer
        Index 0 is the layer closest to the output (last in topological order).
    """
    g = proto.graph
    inits = {i.name: i for i in g.initializer if i.data_type in _FLOAT_TYPES}
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for n in g.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    found = []
    for n in g.node:
        if n.op_type not in _WEIGHT_OPS:
            continue
        weight_pos = [k for k, name in enumerate(n.input[:2]) if name in inits]
        if not weight_pos:
            continue
        names = [n.input[weight_pos[-1]]]
        if n.op_type in ("Conv", "Gemm", "ConvTranspose") and len(n.input) > 2 and n.input[2] in inits:
            names.append(n.input[2])
        after = consumers.get(n.output[0], [])
        if len(after) == 1 and after[0].op_type == "BatchNormalization":
            names += [t for t in after[0].input[1:3] if t in inits]
        elif len(after) == 1 and after[0].op_type == "Add" and n.op_type == "MatMul":
            names += [t for t in after[0].input if t in inits]
        found.append((n.name or n.output[0], n.op_type, tuple(dict.fromkeys(names))))
    return [WeightLayer(i, name, op, names) for i, (name, op, names) in enumerate(reversed(found))]


def randomize_layers(proto: onnx.ModelProto, layers: Sequence[WeightLayer], *, seed: int = 0) -> onnx.ModelProto:
    """A copy of ``proto`` with the initializers of ``layers`` re-drawn (the input is not modified).

    Each tensor is replaced by normal(mean, std) of its own values, same shape and dtype;
    the draw depends only on (seed, layer index, position of the tensor in the layer).
    """
    seed = check_int("seed", seed, minimum=0)
    out = onnx.ModelProto()
    out.CopyFrom(proto)
    by_name = {i.name: i for i in out.graph.initializer}
    for layer in layers:
        for pos, name in enumerate(layer.initializers):
            tensor = by_name[name]
            old = numpy_helper.to_array(tensor)
            rng = np.random.default_rng([seed, layer.index, pos])
            mean, std = float(old.astype(np.float64).mean()), float(old.astype(np.float64).std())
            new = rng.normal(mean, std, size=old.shape).astype(old.dtype)
            tensor.CopyFrom(numpy_helper.from_array(new, name))
    return out


def sanity_check(model: Model, image: Any, label: Any = None, *,
                 methods: Sequence[str] = ("gradient", "guided-backprop", "gradcam"), mode: str = "cascading",
                 layers: Sequence[int] | None = None, every: int = 1, seed: int = 0,
                 method_params: dict[str, dict[str, Any]] | None = None, keep_maps: bool = False,
                 progress: Callable[[int, int], None] | None = None) -> SanityResult:
    """Model parameter randomisation test: how much do the maps change as weights are destroyed?

    Parameters
    ----------
    model : Model
    image : path or ndarray (H, W, 3)
    label : int or str, optional
        The class explained in every step; default the original model's top class.
    methods : sequence of str
        Names from :data:`onnxplain.METHODS` (e.g. "gradient",
        "guided-backprop", "gradcam", "integrated-gradients", "smoothgrad", "occlusion").
    mode : {"cascading", "independent"}
    layers : sequence of int, optional
        Layer indices (0 = output side) at which to measure; default every ``every``-th
        layer from 0, plus the last one.
    every : int
        Stride over the layers when ``layers`` is not given (1 = every layer).
    seed : int
        Seed of the weight re-draws.
    method_params : dict of str to dict, optional
        Extra keyword arguments per method (e.g. ``{"smoothgrad": {"num_samples": 10}}``).
    keep_maps : bool
        Keep every randomised map in ``result.maps``.
    progress : callable(done, total), optional

    Returns
    -------
    SanityResult

    Raises
    ------
    ValueError
        Unknown method or mode; a layer index out of range; a graph with no weight layers.
    """
    methods = check_methods(methods)
    mode = check_choice("mode", mode, MODES)
    every = check_int("every", every, minimum=1)
    all_layers = weight_layers(model.onnx_model)
    if not all_layers:
        raise OptionError(f"{model.path}: the graph has no Conv/Gemm/MatMul node with a float weight initializer "
                         "to randomise.")
    steps = _steps(layers, every, len(all_layers))
    params = {m: dict((method_params or {}).get(m, {})) for m in methods}
    t0 = time.perf_counter()
    label_idx = model.classify(image, top_k=1)[0][0] if label is None else model.label_index(label)
    original = {m: _map_pair(METHODS[m](model, image, label_idx, **params[m])) for m in methods}
    rows, kept = [], {}
    total = len(steps) * len(methods)
    for s_i, step in enumerate(steps):
        chosen = all_layers[:step + 1] if mode == "cascading" else [all_layers[step]]
        proto = randomize_layers(model.onnx_model, chosen, seed=seed)
        rmodel = model.with_graph(proto, path=f"{model.path} ({mode} randomised, layer {step})")
        top1 = rmodel.classify(image, top_k=1)[0][0]
        for m_i, m in enumerate(methods):
            abs_map, signed = _map_pair(METHODS[m](rmodel, image, label_idx, **params[m]))
            o_abs, o_signed = original[m]
            rho_abs, rho_signed = spearman(o_abs, abs_map), spearman(o_signed, signed)
            rows.append({"method": m, "step": step, "layer": all_layers[step].node, "op_type": all_layers[step].op_type,
                         "spearman_abs": rho_abs, "spearman_signed": rho_signed, "ssim": ssim01(o_abs, abs_map),
                         "top1": top1, "note": "constant map" if np.isnan(rho_abs) else ""})
            if keep_maps:
                kept[(m, step)] = signed
            if progress is not None:
                progress(s_i * len(methods) + m_i + 1, total)
    return SanityResult(mode, label_idx, model.class_names[label_idx], all_layers, rows,
                        {m: original[m][1] for m in methods}, kept,
                        {"methods": methods, "steps": steps, "seed": seed, "every": every,
                         "method_params": params, "seconds": round(time.perf_counter() - t0, 3)})


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman rank correlation of two maps (NaN when either is constant)."""
    from scipy.stats import rankdata

    a, b = np.ravel(a).astype(np.float64), np.ravel(b).astype(np.float64)
    if a.shape != b.shape:
        raise OptionError(f"maps of different sizes: {a.size} and {b.size} values.")
    if np.ptp(a) == 0 or np.ptp(b) == 0:
        return float("nan")
    ra, rb = rankdata(a), rankdata(b)
    return float(np.corrcoef(ra, rb)[0, 1])


def ssim01(a: np.ndarray, b: np.ndarray) -> float:
    """SSIM of two maps after min-max normalisation of each to [0, 1] (data_range 1)."""
    from skimage.metrics import structural_similarity

    return float(structural_similarity(_norm01(a), _norm01(b), data_range=1.0))


def _norm01(m: np.ndarray) -> np.ndarray:
    m = np.asarray(m, dtype=np.float64)
    lo, hi = m.min(), m.max()
    return (m - lo) / (hi - lo) if hi > lo else np.zeros_like(m)


def _map_pair(result) -> tuple[np.ndarray, np.ndarray]:
    """(|map|, signed map) of an Explanation; gradient methods' signed map sums the per-channel attribution."""
    signed = np.asarray(result.score_map, dtype=np.float32)
    attribution = result.extras.get("gradients")
    if isinstance(attribution, np.ndarray) and attribution.ndim == 3 and attribution.shape[:2] == signed.shape[:2]:
        signed = attribution.sum(axis=2).astype(np.float32)
    if signed.ndim == 3:
        signed = signed[..., 0]
    return np.abs(signed), signed


def _steps(layers: Sequence[int] | None, every: int, n: int) -> list[int]:
    if layers is None:
        steps = list(range(0, n, every))
        if steps[-1] != n - 1:
            steps.append(n - 1)
        return steps
    steps = [check_int("layers[]", i, minimum=0, maximum=n - 1) for i in layers]
    if not steps:
        raise OptionError("The 'layers' parameter is empty.")
    return sorted(set(steps))


def _f(v: float) -> str:
    return "nan" if v is None or np.isnan(v) else f"{v:.3f}"
