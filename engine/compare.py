"""Compare two models' predictions and explanations on the same images.

The main use is a float32 model against its int8 or float16 build ("did my edge build
change what the model looks at?"), but any two models with the same classes work.

Per image: top-1 agreement, top-5 overlap (|top5_A ∩ top5_B| / 5; / number of classes when
fewer) and the largest absolute
difference between the two probability vectors. Per image and method: both models explain
the **same class** (model A's top-1, unless ``label`` is given), and the maps are compared
by Spearman rank correlation (signed maps) and by the IoU of their top ``top_fraction``
pixels (10% by default; exactly that many pixels, ties in raster order).

**Same quantity on both sides.** Maps are computed on the class *logits* when both models
have them (a logits output, or the tensor before a final Softmax), else on probabilities
(a Softmax is appended to a logits-only side). Methods with a ``reduction_layer`` option
(Grad-CAM family, gradients) take ``reduction_layer="logits"`` on the model itself; the others
run on the graph cut at its logits. So a float model giving logits and the same
model ending in Softmax explain the same number, and a saturated probability (0.9999 on
one side) cannot pass for drift. ``quantity="as-is"`` explains each model's own output.
The quantity used is in ``Comparison.params["quantity"]``.

**Undefined is not ok.** A Spearman correlation of a constant map (e.g. an occlusion map of
all zeros on a saturated probability) is undefined; such rows have status
"undefined: constant map (model A|B)", are shown as "undefined" and count neither as
agreement nor as drift.

A gradient method needs the gradient engine to handle the graph (QuantizeLinear /
DequantizeLinear, float16). When it cannot (a ``GraphError`` or ``ModelError``), the method
is reported as "fallback: forward-only" and, unless one is already in the list, the
forward-only ``fallback`` method (occlusion by default) is added so the comparison still
says something about the explanations.
"""
from __future__ import annotations

import logging
import os
import pathlib
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np
import onnx
from onnx import helper

from .errors import OptionError
from ._validation import check_choice, check_float
from .evaluate import is_gradient_failure
from .registry import METHODS, check_methods, forward_only
from .model import Model
from .sanity import spearman

log = logging.getLogger(__name__)


@dataclass
class Comparison:
    """Outcome of :func:`compare_models`.

    Attributes
    ----------
    model_a, model_b : str
        The models' paths.
    predictions : list of dict
        One per image: ``image``, ``top1_a``, ``top1_b`` (indices), ``top1_name_a``,
        ``top1_name_b``, ``top1_equal``, ``top5_overlap``, ``max_prob_diff``, ``label``
        (the class explained).
    maps : list of dict
        One per (image, method): ``image``, ``method``, ``spearman``, ``iou_top``,
        ``status`` ("ok" or "fallback: forward-only (...)").
    drift : list of dict
        One per image, most drifted first: ``image``, ``drift`` (1 − the lowest map
        correlation over the methods that ran), ``worst_method``, ``flagged``
        (drift ≥ ``drift_threshold``).
    """

    model_a: str
    model_b: str
    predictions: list[dict[str, Any]]
    maps: list[dict[str, Any]]
    drift: list[dict[str, Any]]
    params: dict[str, Any] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        """Aggregates: top-1 agreement rate, mean top-5 overlap, max prob diff, mean map metrics per method."""
        preds = self.predictions
        per_method: dict[str, dict[str, Any]] = {}
        for m in dict.fromkeys(r["method"] for r in self.maps):
            rows = [r for r in self.maps if r["method"] == m]
            ok = [r for r in rows if r["status"] == "ok"]
            undefined = [r for r in rows if r["status"].startswith("undefined")]
            others = [r for r in rows if r["status"] != "ok" and not r["status"].startswith("undefined")]
            status = "ok" if len(ok) == len(rows) else others[0]["status"] if others else \
                f"undefined for {len(undefined)} of {len(rows)} images (constant maps)"
            per_method[m] = {"mean_spearman": _mean([r["spearman"] for r in ok]),
                             "mean_iou_top": _mean([r["iou_top"] for r in ok]),
                             "defined": len(ok), "status": status}
        return {"model_a": self.model_a, "model_b": self.model_b, "images": len(preds),
                "top1_agreement": _mean([float(p["top1_equal"]) for p in preds]),
                "mean_top5_overlap": _mean([p["top5_overlap"] for p in preds]),
                "max_prob_diff": max((p["max_prob_diff"] for p in preds), default=float("nan")),
                "methods": per_method, "flagged": [d["image"] for d in self.drift if d["flagged"]]}

    def markdown(self) -> str:
        """Prediction table, map table and the drift ranking as markdown."""
        lines = [f"model A: `{self.model_a}`  ", f"model B: `{self.model_b}`  ",
                 f"maps explain: {self.params.get('quantity', 'as-is')}", "",
                 "| image | top-1 A | top-1 B | equal | top-5 overlap | max prob diff |", "|---|---|---|---|---|---|"]
        for p in self.predictions:
            lines.append(f"| {p['image']} | {p['top1_name_a']} ({p['top1_a']}) | {p['top1_name_b']} ({p['top1_b']}) | "
                         f"{'yes' if p['top1_equal'] else 'NO'} | {p['top5_overlap']:.2f} | {p['max_prob_diff']:.4f} |")
        lines += ["", f"| image | method | spearman | IoU top {self.params.get('top_fraction', 0.1):.0%} | status |",
                  "|---|---|---|---|---|"]
        for r in self.maps:
            lines.append(f"| {r['image']} | {r['method']} | {_f(r['spearman'])} | {_f(r['iou_top'])} | {r['status']} |")
        lines += ["", "| image | drift | worst method | flagged |", "|---|---|---|---|"]
        for d in self.drift:
            lines.append(f"| {d['image']} | {_f(d['drift'])} | {d['worst_method']} | {'FLAG' if d['flagged'] else ''} |")
        return "\n".join(lines)


def compare_models(model_a: Model, model_b: Model, images: Sequence[Any] | Any, *,
                   methods: Sequence[str] = ("gradcam", "occlusion"), label: Any = None, top_fraction: float = 0.1,
                   method_params: dict[str, dict[str, Any]] | None = None, fallback: str | None = "occlusion",
                   drift_threshold: float = 0.5, names: Sequence[str] | None = None, quantity: str = "auto",
                   progress: Callable[[int, int], None] | None = None) -> Comparison:
    """Compare two models' predictions and explanations image by image.

    Parameters
    ----------
    model_a, model_b : Model
        Models with the same classes (e.g. a float32 model and its int8 build).
    images : sequence of images (arrays (H, W, 3) or paths), or one image
    methods : sequence of str
        Names from :data:`onnxplain.METHODS`.
    label : int or str, optional
        The class explained for every image; default model A's top-1 per image.
    top_fraction : float
        Share of pixels in the top region whose IoU is reported (0 < f ≤ 1; default 0.1).
    method_params : dict of str to dict, optional
        Extra keyword arguments per method.
    fallback : str or None
        Forward-only method added when a gradient method fails on either model (None: none).
    drift_threshold : float
        An image is flagged when 1 − (lowest map correlation) ≥ this.
    quantity : {"auto", "logits", "probabilities", "as-is"}
        What both models' maps explain: "auto" = logits when both have them, else
        probabilities; "as-is" = each model's own output.
    names : sequence of str, optional
        Image names for the tables; default the file stems, or "image0", "image1", ...
    progress : callable(done, total), optional

    Returns
    -------
    Comparison

    Raises
    ------
    ValueError
        Unknown method; models with different numbers of classes; no images.
    """
    methods = check_methods(methods)
    check_choice("quantity", quantity, QUANTITIES)
    top_fraction = check_float("top_fraction", top_fraction, minimum=0.0, maximum=1.0, strict_minimum=True)
    drift_threshold = check_float("drift_threshold", drift_threshold)
    if fallback is not None:
        check_methods([fallback])
        if METHODS[fallback].needs_gradients:
            raise OptionError(f"The 'fallback' parameter must be a forward-only method {forward_only()}; "
                             f"got {fallback!r}.")
    if model_a.num_classes != model_b.num_classes:
        raise OptionError(f"the models have different numbers of classes: {model_a.num_classes} "
                         f"({model_a.path}) and {model_b.num_classes} ({model_b.path}).")
    images = [images] if isinstance(images, (str, os.PathLike)) or (isinstance(images, np.ndarray) and images.ndim == 3) \
        else list(images)
    if not images:
        raise OptionError("compare_models() got no images.")
    if names is None:
        names = [pathlib.Path(os.fspath(im)).stem if isinstance(im, (str, os.PathLike)) else f"image{i}"
                 for i, im in enumerate(images)]
    elif len(names) != len(images):
        raise OptionError(f"The 'names' parameter has {len(names)} names for {len(images)} images.")
    quantity = choose_quantity(model_a, model_b) if quantity == "auto" else quantity
    explain_a, explain_b = on_quantity(model_a, quantity), on_quantity(model_b, quantity)
    params = {m: dict((method_params or {}).get(m, {})) for m in list(methods) + ([fallback] if fallback else [])}
    run_methods = list(methods)
    failed: dict[tuple[int, str], str] = {}  # (id(model), method) -> reason, so a graph is tried once
    predictions, maps, drift = [], [], []
    done, total = 0, len(images) * len(run_methods)
    for name, image in zip(names, images):
        pa = model_a.probabilities(model_a.predict([image]))[0]
        pb = model_b.probabilities(model_b.predict([image]))[0]
        ta, tb = np.argsort(-pa, kind="stable")[:5], np.argsort(-pb, kind="stable")[:5]
        lab = int(ta[0]) if label is None else model_a.label_index(label)
        predictions.append({"image": name, "top1_a": int(ta[0]), "top1_b": int(tb[0]),
                            "top1_name_a": model_a.class_names[ta[0]], "top1_name_b": model_b.class_names[tb[0]],
                            "top1_equal": bool(ta[0] == tb[0]), "top5_overlap": len(set(ta) & set(tb)) / len(ta),
                            "max_prob_diff": float(np.abs(pa - pb).max()), "label": lab})
        worst = (float("nan"), "")
        m_i = 0
        while m_i < len(run_methods):  # a fallback appended during this image runs for it too
            method = run_methods[m_i]
            m_i += 1
            row = {"image": name, "method": method, "spearman": float("nan"), "iou_top": float("nan"), "status": "ok"}
            result_maps = []
            for which, original, derived in (("A", model_a, explain_a), ("B", model_b, explain_b)):
                model, extra = _explainer(original, derived, method, quantity)
                key = (id(model), method)
                if key in failed:
                    row["status"] = failed[key]
                    break
                try:
                    result_maps.append(np.asarray(METHODS[method](model, image, lab, **{**params[method], **extra}
                                                                  ).score_map))
                except Exception as exc:
                    if not (METHODS[method].needs_gradients and is_gradient_failure(exc)):
                        raise
                    reason = f"fallback: forward-only (model {which}: {str(exc).splitlines()[0][:160]})"
                    log.warning("%s on %s: %s", method, model.path, reason)
                    failed[key] = row["status"] = reason
                    if fallback is not None and fallback not in run_methods:
                        run_methods.append(fallback)
                        total += len(images)
                    break
            if len(result_maps) == 2:
                a, b = result_maps
                row["spearman"] = 1.0 if np.array_equal(a, b) else spearman(a, b)  # equal constant maps agree
                row["iou_top"] = top_region_iou(a, b, top_fraction)
                if np.isnan(row["spearman"]):
                    flat = [w for w, m in (("A", a), ("B", b)) if np.ptp(m) == 0]
                    row["status"] = f"undefined: constant map (model {' and '.join(flat) or '?'})"
                    row["iou_top"] = float("nan")  # ties in raster order say nothing about a constant map
                if not np.isnan(row["spearman"]) and not (row["spearman"] >= worst[0]):
                    worst = (row["spearman"], method)
            maps.append(row)
            done += 1
            if progress is not None:
                progress(done, total)
        d = 1.0 - worst[0] if worst[1] else float("nan")
        drift.append({"image": name, "drift": d, "worst_method": worst[1] or "undefined (no defined correlation)",
                      "flagged": bool(worst[1]) and d >= drift_threshold})
    drift.sort(key=lambda r: -np.inf if np.isnan(r["drift"]) else -r["drift"])
    return Comparison(model_a.path, model_b.path, predictions, maps, drift,
                      {"methods": run_methods, "top_fraction": top_fraction, "drift_threshold": drift_threshold,
                       "fallback": fallback, "method_params": params, "label": label, "quantity": quantity})


def top_region_iou(a: np.ndarray, b: np.ndarray, fraction: float = 0.1) -> float:
    """IoU of the top ``fraction`` of pixels of two maps (exactly ceil(fraction·N) pixels each, ties in raster order)."""
    a, b = np.ravel(a), np.ravel(b)
    if a.shape != b.shape:
        raise OptionError(f"maps of different sizes: {a.size} and {b.size} values.")
    k = max(1, int(np.ceil(fraction * a.size)))
    top_a = np.zeros(a.size, bool)
    top_b = np.zeros(b.size, bool)
    top_a[np.argsort(-a.astype(np.float64), kind="stable")[:k]] = True
    top_b[np.argsort(-b.astype(np.float64), kind="stable")[:k]] = True
    return float(np.count_nonzero(top_a & top_b) / np.count_nonzero(top_a | top_b))


def _mean(values: Sequence[float]) -> float:
    vals = [v for v in values if v is not None and not np.isnan(v)]
    return float(np.mean(vals)) if vals else float("nan")


def _f(v: float) -> str:
    return "undefined" if v is None or np.isnan(v) else f"{v:.3f}"


QUANTITIES = ("auto", "logits", "probabilities", "as-is")


def choose_quantity(model_a: Model, model_b: Model) -> str:
    """"logits" when both models have logits (output or the tensor before a final Softmax), else
    "probabilities" when both outputs are logits or probabilities, else "as-is"."""
    def has_logits(m: Model) -> bool:
        return m.output_kind == "logits" or bool(m.logits_name)

    if has_logits(model_a) and has_logits(model_b):
        return "logits"
    if all(m.output_kind in ("logits", "probabilities") for m in (model_a, model_b)):
        return "probabilities"
    return "as-is"


def on_quantity(model: Model, quantity: str) -> Model:
    """The model whose output is ``quantity`` of the same classes ("as-is": the model itself).

    Logits: the graph cut at the tensor before the final Softmax. Probabilities of a logits
    model: a Softmax over the class axis appended. Preprocessing, labels and layout are kept.
    """
    import copy

    if quantity == "as-is" or (quantity == "logits" and model.output_kind == "logits") or \
            (quantity == "probabilities" and model.output_kind == "probabilities"):
        return model
    proto = copy.deepcopy(model.onnx_model)
    graph = proto.graph
    out = graph.output[model._output_index]
    elem = out.type.tensor_type.elem_type
    if quantity == "logits":
        if not model.logits_name:
            raise OptionError(f"{model.path}: no logits to explain (output kind {model.output_kind!r}, no Softmax "
                              "at the end); use quantity='probabilities' or 'as-is'.")
        new_out = helper.make_tensor_value_info(model.logits_name, elem, _shape_of(proto, model.logits_name, out))
        kind = "logits"
    elif model.output_kind == "logits":
        name = out.name + "__onnxplain_softmax"
        graph.node.append(helper.make_node("Softmax", [out.name], [name], axis=-1, name=name))
        new_out = helper.make_tensor_value_info(name, elem, _dims(out))
        kind = "probabilities"
    else:
        raise OptionError(f"{model.path}: output kind {model.output_kind!r} has no probabilities to compare; use "
                          "quantity='as-is'.")
    del graph.output[:]
    graph.output.append(new_out)
    _prune(graph)
    return Model(proto, path=f"{model.path} ({kind})", preprocessing=model.preprocessing,
                 labels=list(model.class_names), provider=model.provider, threads=model.threads,
                 precision=model.precision, layout=model.layout, output_kind=kind, manifest=None,
                 max_image_pixels=model.max_image_pixels)


def _explainer(original: Model, derived: Model, method: str, quantity: str) -> tuple[Model, dict[str, Any]]:
    """The model and extra options that make ``method`` explain ``quantity``: a method with a
    ``reduction_layer`` option runs on the original graph with ``reduction_layer="logits"`` (the
    tensor before its Softmax); the others run on the derived graph whose output is the quantity."""
    import inspect

    if derived is original:
        return original, {}
    if quantity == "logits" and original.logits_name and \
            "reduction_layer" in inspect.signature(METHODS[method].func).parameters:
        return original, {"reduction_layer": "logits"}
    return derived, {}


def _dims(value_info) -> list:
    return [d.dim_value if d.HasField("dim_value") else (d.dim_param or None)
            for d in value_info.type.tensor_type.shape.dim]


def _shape_of(proto, name: str, fallback) -> list:
    """The inferred shape of tensor ``name`` (the old output's shape when inference has none)."""
    try:
        inferred = onnx.shape_inference.infer_shapes(proto)
    except Exception:  # noqa: BLE001 - inference is a convenience here
        return _dims(fallback)
    for vi in list(inferred.graph.value_info) + list(inferred.graph.output):
        if vi.name == name and vi.type.tensor_type.HasField("shape"):
            return _dims(vi)
    return _dims(fallback)


def _prune(graph) -> None:
    """Drop nodes that no graph output depends on (the Softmax cut off by a logits output)."""
    if any(a.type in (5, 10) for n in graph.node for a in n.attribute):  # GRAPH / GRAPHS: keep all
        return
    needed = {o.name for o in graph.output}
    keep = []
    for node in reversed(list(graph.node)):
        if any(o in needed for o in node.output):
            keep.append(node)
            needed.update(i for i in node.input if i)
    keep.reverse()
    del graph.node[:]
    graph.node.extend(keep)
