"""The real zoo: torchvision and timm classifiers of every family, random seeded weights.

Each row of :data:`ROWS` builds a real architecture from torchvision 0.29 / timm 1.0 with
``pretrained=False`` (nothing is downloaded), reduced in width, depth or resolution where
every op pattern of the family is kept (the same blocks, attention kinds, norms,
activations, position biases and heads, fewer of them, at a smaller input), so that both
torch exporters run in seconds on 2 CPU cores. Weights are made non-degenerate and
seeded (:func:`randomize`): constant parameters (zero biases, LayerNorm/BatchNorm scales of
one, layer scales of 1e-5, zero-initialised heads and tokens) are redrawn so every
branch of every block carries signal, and BatchNorm running statistics are set from data
(a few forward passes over real photos in train mode with a cumulative average, then eval).

:func:`build` returns the torch twin (eval mode, float32) deterministically from the
row's seed: ``build(row)`` twice gives bit-identical weights in one torch/timm version.
``make_real_zoo.py`` (same folder) exports every row with both exporters into the zoo
cache and checks it; this module only builds networks. The cache key is ``Row.key()``
(source, arch, size, kwargs, seed) plus the source of the functions that build weights
(:data:`BUILD_CODE`), so editing a note or a docstring does not re-export, and editing
the builders does.
"""
from __future__ import annotations

import dataclasses
import hashlib
import math
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import torch
import torch.nn as nn

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class Row:
    """One zoo row: a family, how to build it and at which input size."""

    name: str                 # row id (file names, test ids)
    family: str               # the family name
    source: str               # "torchvision" | "timm" | "keras"
    arch: str                 # constructor / timm model name
    size: int                 # input H = W
    kwargs: dict = field(default_factory=dict)
    seed: int = 0
    note: str = ""            # what was reduced
    expected_layer: str = ""  # Grad-CAM: substring of the tensor a person would pick (see test_real_zoo)
    fast: bool = False        # in the default-suite subset

    def key(self) -> str:
        return f"{self.source}:{self.arch}:{self.size}:{sorted(self.kwargs.items())!r}:{self.seed}"


def _tv(arch, **kw):
    def make():
        import torchvision.models as tvm
        return getattr(tvm, arch)(weights=None, **kw)
    return make


def _timm(arch, **kw):
    def make():
        import timm
        return timm.create_model(arch, pretrained=False, num_classes=1000, **kw)
    return make


def _class(path, **kw):
    """A model class built directly ("module:Class"), for reductions a timm entry point refuses."""
    def make():
        import importlib
        module, name = path.split(":")
        return getattr(importlib.import_module(module), name)(num_classes=1000, **kw)
    return make


ROWS: list[Row] = [
    # ---- convolutional -------------------------------------------------------------
    Row("resnet18", "ResNet", "torchvision", "resnet18", 64, note="full width/depth, 64 px",
        expected_layer="layer4"),
    Row("mobilenetv3_small", "MobileNetV3", "torchvision", "mobilenet_v3_small", 64,
        kwargs=dict(width_mult=0.5), note="width 0.5, 64 px (SE, HardSwish, HardSigmoid)", fast=True,
        expected_layer="features"),
    Row("mobilenetv4_small", "MobileNetV4", "timm", "mobilenetv4_conv_small_035", 64, note="width 0.35, 64 px",
        expected_layer="final_conv|conv_head|norm_head|blocks"),
    Row("efficientnet_b0", "EfficientNet", "torchvision", "efficientnet_b0", 64,
        kwargs=dict(width_mult=0.5, depth_mult=0.34),  # through torchvision's _efficientnet_conf
        note="width 0.5, depth 0.34, 64 px (SiLU, SE)",
        expected_layer="features"),
    Row("efficientnetv2", "EfficientNetV2", "timm", "tf_efficientnetv2_b0", 64,
        kwargs=dict(channel_multiplier=0.5, depth_multiplier=0.34),
        note="tf_ variant (TF 'same' padding), width 0.5, depth 0.34, 64 px", expected_layer="bn2|conv_head"),
    Row("shufflenetv2", "ShuffleNetV2", "torchvision", "shufflenet_v2_x0_5", 64, note="x0.5, 64 px",
        expected_layer="conv5"),
    Row("mnasnet", "MnasNet", "torchvision", "mnasnet0_5", 64, note="0.5, 64 px", expected_layer="layers"),
    Row("squeezenet", "SqueezeNet", "torchvision", "squeezenet1_1", 64, note="1.1, 64 px", fast=True,
        expected_layer="features"),
    Row("regnet", "RegNet", "torchvision", "regnet_y_400mf", 64, note="Y-400MF (SE), 64 px",
        expected_layer="trunk_output"),
    Row("googlenet", "GoogLeNet", "torchvision", "googlenet", 64,
        kwargs=dict(aux_logits=False, init_weights=True, transform_input=False), note="64 px, no aux heads",
        expected_layer="inception5b"),
    Row("inception_v3", "Inception", "timm", "inception_v3", 75, note="minimum 75 px",
        expected_layer="Mixed_7c"),
    Row("densenet", "DenseNet", "torchvision", "DenseNet", 64,
        kwargs=dict(growth_rate=16, block_config=(2, 2, 2, 2), num_init_features=32),
        note="growth 16, blocks (2,2,2,2), 64 px", expected_layer="features"),
    Row("convnext", "ConvNeXt", "timm", "convnext_atto", 64, kwargs=dict(depths=(1, 1, 2, 1)),
        note="atto, depths (1,1,2,1), 64 px (LayerNorm2d, GELU, layer scale)", fast=True,
        expected_layer="stages.3|stages/stages.3"),
    Row("ghostnet", "GhostNet", "timm", "ghostnet_050", 64, note="width 0.5, 64 px", expected_layer="blocks"),
    Row("hgnetv2", "HGNetV2", "timm", "hgnetv2_b0", 64, note="B0, 64 px", expected_layer="stages"),
    Row("repvit", "RepViT", "timm", "repvit_m0_9", 64, kwargs=dict(depth=(1, 1, 2, 1)),
        note="M0.9, depth (1,1,2,1), 64 px", expected_layer="stages"),
    Row("convmixer", "ConvMixer", "class", "timm.models.convmixer:ConvMixer", 64,
        kwargs=dict(dim=64, depth=2, kernel_size=5, patch_size=4), note="dim 64, depth 2, k 5, patch 4, 64 px",
        expected_layer="blocks"),
    # ---- hybrids ---------------------------------------------------------------------
    Row("mobilevit", "MobileViT", "timm", "mobilevit_xxs", 64, note="XXS, 64 px", expected_layer="final_conv|stages"),
    Row("edgenext", "EdgeNeXt", "timm", "edgenext_xx_small", 64, kwargs=dict(depths=(1, 1, 2, 1)),
        note="XXS, depths (1,1,2,1), 64 px (F.normalize = ReduceL2, XCA)", expected_layer="stages"),
    Row("fastvit", "FastViT", "timm", "fastvit_t8", 64, kwargs=dict(layers=(1, 1, 2, 1)),
        note="T8 unfused, layers (1,1,2,1), 64 px", expected_layer="final_conv|stages"),
    Row("coat", "CoaT", "timm", "coat_lite_tiny", 64, kwargs=dict(img_size=64), note="Lite-Tiny, 64 px",
        expected_layer="serial_blocks4|norm4"),
    Row("efficientformer", "EfficientFormer", "timm", "efficientformer_l1", 224,
        kwargs=dict(depths=(1, 1, 1, 2)), note="L1, depths (1,1,1,2), 224 px (attention biases fixed at 7x7)",
        expected_layer="stages"),
    Row("efficientformerv2", "EfficientFormerV2", "timm", "efficientformerv2_s0", 64,
        kwargs=dict(img_size=64, depths=(1, 1, 2, 2)), note="S0, depths (1,1,2,2), 64 px",
        expected_layer="stages"),
    Row("poolformer", "PoolFormer", "class", "timm.models.metaformer:MetaFormer", 64,
        kwargs=dict(depths=(1, 1, 2, 1), dims=(64, 128, 320, 512), downsample_norm=None, mlp_act="gelu",
                    mlp_bias=True, norm_layers="groupnorm1", layer_scale_init_values=1e-5,
                    res_scale_init_values=None, use_mlp_head=False),
        note="S12, depths (1,1,2,1), 64 px (GroupNorm(1, C))", fast=True, expected_layer="stages"),
    Row("levit", "LeViT", "timm", "levit_128s", 128, kwargs=dict(img_size=128, depth=(1, 1, 1)),
        note="128S, depth (1,1,1), 128 px", expected_layer="stages"),
    Row("tinyvit", "TinyViT", "timm", "tiny_vit_5m_224", 112, kwargs=dict(depths=(1, 1, 2, 1)),
        note="5M, depths (1,1,2,1), 112 px", expected_layer="stages"),
    # ---- transformers / MLPs ---------------------------------------------------------
    Row("vit", "ViT", "timm", "vit_tiny_patch16_224", 64, kwargs=dict(img_size=64, depth=2),
        note="Ti/16, depth 2, 64 px (4x4 patch grid)", fast=True, expected_layer="blocks"),
    Row("deit", "DeiT", "timm", "deit_tiny_distilled_patch16_224", 64, kwargs=dict(img_size=64, depth=2),
        note="Ti distilled (2 extra tokens), depth 2, 64 px", expected_layer="blocks"),
    Row("vit_torchvision", "ViT", "torchvision", "VisionTransformer", 64,
        kwargs=dict(image_size=64, patch_size=16, num_layers=2, num_heads=2, hidden_dim=64, mlp_dim=128),
        note="torchvision (nn.MultiheadAttention), 2 layers, dim 64, 64 px", expected_layer="encoder"),
    Row("beit", "BEiT", "timm", "beit_base_patch16_224", 64,
        kwargs=dict(img_size=64, depth=2, embed_dim=64, num_heads=2),
        note="depth 2, dim 64, 64 px (relative position bias, mean-pool head)", expected_layer="blocks"),
    Row("swin", "Swin", "timm", "swin_tiny_patch4_window7_224", 64,
        kwargs=dict(img_size=64, window_size=4, embed_dim=32, depths=(1, 1, 2, 1), num_heads=(1, 2, 4, 8)),
        note="dim 32, depths (1,1,2,1), window 4, 64 px", expected_layer="layers"),
    Row("maxvit", "MaxViT", "timm", "maxvit_rmlp_pico_rw_256", 64,
        kwargs=dict(img_size=64, depths=(1, 1, 1, 1)), note="pico rmlp, depths (1,1,1,1), 64 px",
        expected_layer="stages"),
    Row("resmlp", "ResMLP", "class", "timm.models.mlp_mixer:MlpMixer", 64,
        kwargs=dict(img_size=64, patch_size=16, num_blocks=2, embed_dim=384, mlp_ratio=4,
                    block_layer="ResBlock", norm_layer="Affine"),
        note="depth 2, 64 px (Affine norms)", expected_layer="blocks"),
    Row("mixer", "MLP-Mixer", "class", "timm.models.mlp_mixer:MlpMixer", 64,
        kwargs=dict(img_size=64, patch_size=16, num_blocks=2, embed_dim=512),
        note="S/16, 2 blocks, 64 px", expected_layer="blocks"),
]
BY_NAME = {r.name: r for r in ROWS}


def _resolve(kwargs: dict) -> dict:
    """Names in a row's kwargs that stand for classes (rows stay plain data, hashable as text)."""
    import timm.models.metaformer as mf
    import timm.models.mlp_mixer as mm

    table = {"gelu": nn.GELU, "groupnorm1": mf.GroupNorm1, "ResBlock": mm.ResBlock, "Affine": mm.Affine}
    return {k: table.get(v, v) if isinstance(v, str) else v for k, v in kwargs.items()}


def constructor(row: Row) -> Callable[[], nn.Module]:
    if row.source == "torchvision":
        if row.arch == "efficientnet_b0":
            def make():
                from torchvision.models import efficientnet as tve
                setting, last = tve._efficientnet_conf("efficientnet_b0", **row.kwargs)
                return tve.EfficientNet(setting, 0.2, last_channel=last)
            return make
        if row.arch in ("DenseNet", "VisionTransformer"):
            def make():
                import torchvision.models as tvm
                return getattr(tvm, row.arch)(num_classes=1000, **row.kwargs)
            return make
        return _tv(row.arch, **row.kwargs)
    if row.source == "timm":
        return _timm(row.arch, **row.kwargs)
    if row.source == "class":
        return _class(row.arch, **_resolve(row.kwargs))
    raise ValueError(f"row {row.name}: no torch constructor for source {row.source!r}")


def calibration_images(size: int, n: int = 8) -> np.ndarray:
    """n real photos (skimage.data) resized to size x size, uint8 (n, size, size, 3)."""
    from PIL import Image
    from skimage import data

    photos = [data.chelsea(), data.astronaut(), data.coffee(), data.rocket(), data.cat(),
              data.immunohistochemistry(), data.hubble_deep_field(), data.retina()]
    out = []
    for k in range(n):
        img = Image.fromarray(photos[k % len(photos)]).convert("RGB").resize((size, size), Image.BILINEAR)
        a = np.asarray(img)
        out.append(a[:, ::-1] if k >= len(photos) else a)
    return np.stack(out)


def test_image(size: int) -> np.ndarray:
    """The image every check uses: skimage's chelsea (a cat), size x size, uint8."""
    return calibration_images(size, 1)[0]


def imagenet_normalize(pixels: torch.Tensor) -> torch.Tensor:
    """(N, H, W, 3) raw 0..255 pixels -> (N, 3, H, W) imagenet-normalised, in pixels' dtype."""
    mean = torch.tensor(IMAGENET_MEAN, dtype=pixels.dtype)
    std = torch.tensor(IMAGENET_STD, dtype=pixels.dtype)
    return ((pixels / 255.0 - mean) / std).permute(0, 3, 1, 2)


@torch.no_grad()
def randomize(model: nn.Module, seed: int) -> None:
    """Redraw constant parameters so every branch carries signal (module docstring)."""
    g = torch.Generator().manual_seed(seed + 1)
    for name, p in model.named_parameters():
        if p.numel() <= 1 and "scale" not in name and "gamma" not in name:
            continue
        if p.numel() > 1 and float(p.std()) > 1e-6 * max(1.0, float(p.abs().mean())):
            continue                                   # already random
        c = float(p.flatten()[0])
        if p.dim() >= 2:                               # zero-initialised weight (head, last BN of a block)
            fan_in = p[0].numel()
            p.copy_(torch.randn(p.shape, generator=g) / math.sqrt(fan_in))
        elif abs(c) >= 0.1:                            # norm scales of one
            p.copy_(c * (0.8 + 0.4 * torch.rand(p.shape, generator=g)))
        elif abs(c) > 0:                               # layer scales 1e-5 / 1e-6
            p.copy_(0.2 + 0.3 * torch.rand(p.shape, generator=g))
        else:                                          # zero biases, tokens, tables
            p.copy_(0.05 * torch.randn(p.shape, generator=g))


@torch.no_grad()
def calibrate_batchnorm(model: nn.Module, size: int) -> int:
    """Running statistics of every BatchNorm from 3 passes over real photos; returns the BN count."""
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not bns:
        return 0
    for m in bns:
        m.reset_running_stats()
        m.momentum = None                              # cumulative average over the passes
    imgs = torch.from_numpy(calibration_images(size, 16).astype(np.float32))
    x = imagenet_normalize(imgs)
    model.train()
    for k in range(3):
        noise = torch.randn(x.shape, generator=torch.Generator().manual_seed(100 + k)) * 0.1
        model(x + noise)
    model.eval()
    return len(bns)


def build(row: Row) -> nn.Module:
    """The row's torch network: seeded, randomised, BN-calibrated, eval mode, float32."""
    torch.manual_seed(row.seed)
    model = constructor(row)()
    randomize(model, row.seed)
    calibrate_batchnorm(model, row.size)
    return model.eval().float()


def weights_digest(model: nn.Module) -> str:
    """sha256 over the state dict (names, shapes, float32 bytes)."""
    h = hashlib.sha256()
    for k, v in model.state_dict().items():
        h.update(k.encode())
        h.update(np.ascontiguousarray(v.detach().cpu().numpy()).tobytes())
    return h.hexdigest()


#: functions whose source is part of the export cache key (make_real_zoo.cache_key)
BUILD_CODE = ("_tv", "_timm", "_class", "_resolve", "constructor", "calibration_images", "imagenet_normalize",
              "randomize", "calibrate_batchnorm", "build")


def row_dict(row: Row) -> dict[str, Any]:
    return dataclasses.asdict(row)
