"""Tiny, deterministic torch reference networks for onnxplain's parity tests.

Every builder returns an ``nn.Module`` in eval mode whose weights come from a
fixed ``torch.manual_seed``.  The seed is only a convenience: the weights that
were actually exported live next to the ONNX file as ``zoo/<name>.pt`` (a
``state_dict``) and :func:`load` restores them exactly, so the tests never
depend on torch reproducing the same random stream across versions.

Usage in tests::

    from tests.data import zoo
    model = zoo.load("resnet")            # torch oracle, eval mode, exported weights
    path = zoo.onnx_path("resnet")        # tests/data/zoo/resnet.onnx
    spec = zoo.SPECS["resnet"]            # input shape / layout / output kind

All models are written with *module* activations (``nn.ReLU`` etc., never
``F.relu``) and never reuse one activation module twice in ``forward``, so that
captum's GuidedBackprop / Deconvolution hooks see each non-linearity once.
No activation is ``inplace``.

``make_zoo.py`` (same folder) builds and exports everything; see its header for
the regeneration command.
"""
from __future__ import annotations

import math
import os
from collections import OrderedDict
from dataclasses import dataclass, field

import torch
import torch.nn as nn
import torch.nn.functional as F

HERE = os.path.dirname(os.path.abspath(__file__))
ZOO_DIR = os.path.join(HERE, "zoo")
RECT_DIR = os.path.join(HERE, "rectangle")


# ----------------------------------------------------------------------------
# helpers
# ----------------------------------------------------------------------------
def _init_weights(model: nn.Module) -> None:
    """He-normal convs / linears (keeps activations O(1) through the tiny nets)."""
    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            fan_in = m.weight[0].numel()
            nn.init.normal_(m.weight, 0.0, math.sqrt(2.0 / fan_in))
            if m.bias is not None:
                nn.init.uniform_(m.bias, -0.1, 0.1)


def _calibrate_bn(model: nn.Module, input_shape, seed: int) -> None:
    """Give every BatchNorm non-trivial affine params and running statistics.

    The running stats are first estimated on a seeded random batch (so they are
    of the right magnitude and the eval-mode network is not degenerate), then
    perturbed (mean shifted, var scaled by U(0.5, 2)) so they are *not* the
    statistics of any particular batch: a wrong BN folding / an ignored
    running_mean shows up as an O(0.1..1) error.
    """
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    if not bns:
        return
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for bn in bns:
            bn.weight.copy_(torch.empty_like(bn.weight).uniform_(0.5, 1.5, generator=g))
            bn.bias.copy_(torch.randn(bn.bias.shape, generator=g) * 0.1)
            bn.reset_running_stats()
            bn.momentum = None  # cumulative average over the calibration batch
        model.train()
        model(torch.randn((16, *input_shape), generator=g))
        model.eval()
        for bn in bns:
            std = bn.running_var.sqrt()
            bn.running_mean.add_(torch.randn(bn.running_mean.shape, generator=g) * 0.2 * std)
            bn.running_var.mul_(torch.empty_like(bn.running_var).uniform_(0.5, 2.0, generator=g))
            bn.momentum = 0.1
            bn.num_batches_tracked.fill_(0)


def _finish(model: nn.Module, input_shape, seed: int) -> nn.Module:
    _init_weights(model)
    _calibrate_bn(model, input_shape, seed + 1)
    return model.eval()


def _seeded(fn):
    """Run a builder under ``torch.manual_seed(seed)`` without disturbing the
    caller's global RNG state (``torch.random.fork_rng``)."""
    import functools

    @functools.wraps(fn)
    def wrapper(seed: int = fn.__defaults__[0]):
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return fn(seed)
    return wrapper


def conv_bn(cin, cout, k=3, stride=1, groups=1):
    return nn.Sequential(OrderedDict(
        conv=nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups, bias=False),
        bn=nn.BatchNorm2d(cout),
    ))


# ----------------------------------------------------------------------------
# resnet
# ----------------------------------------------------------------------------
class BasicBlock(nn.Module):
    def __init__(self, cin, cout, stride=1):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.relu2 = nn.ReLU()  # after the residual Add
        self.downsample = None
        if stride != 1 or cin != cout:
            self.downsample = conv_bn(cin, cout, k=1, stride=stride)

    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu1(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu2(out + identity)


class TinyResNet(nn.Module):
    """3x32x32 -> 10 logits. stem conv-bn-relu, MaxPool(3,2,1), 3 BasicBlocks."""

    def __init__(self, num_classes=10):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(8)
        self.relu = nn.ReLU()
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)          # 32 -> 16
        self.layer1 = nn.Sequential(BasicBlock(8, 8))
        self.layer2 = nn.Sequential(BasicBlock(8, 16, stride=2),      # 16 -> 8
                                    BasicBlock(16, 16))
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(16, num_classes)

    def forward(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer2(self.layer1(x))
        x = torch.flatten(self.avgpool(x), 1)
        return self.fc(x)


@_seeded
def resnet(seed: int = 101) -> nn.Module:
    return _finish(TinyResNet(), (3, 32, 32), seed)


def resnet_softmax(seed: int = 101) -> nn.Module:
    """Same weights as ``resnet()`` (same seed) followed by nn.Softmax(dim=1).

    state_dict keys are prefixed with ``net.``.
    """
    return nn.Sequential(OrderedDict(net=resnet(seed), softmax=nn.Softmax(dim=1))).eval()


# ----------------------------------------------------------------------------
# mobilenet (V2/V3 style)
# ----------------------------------------------------------------------------
class SqueezeExcite(nn.Module):
    def __init__(self, c, r=4):
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc1 = nn.Conv2d(c, c // r, 1)
        self.relu = nn.ReLU()
        self.fc2 = nn.Conv2d(c // r, c, 1)
        self.gate = nn.Hardsigmoid()

    def forward(self, x):
        s = self.gate(self.fc2(self.relu(self.fc1(self.pool(x)))))
        return x * s


class InvertedResidual(nn.Module):
    def __init__(self, cin, cout, expand, stride, act, se):
        super().__init__()
        mid = cin * expand
        self.use_res = stride == 1 and cin == cout
        self.expand = conv_bn(cin, mid, k=1)
        self.act1 = act()
        self.dw = conv_bn(mid, mid, k=3, stride=stride, groups=mid)   # depthwise
        self.act2 = act()
        self.se = SqueezeExcite(mid) if se else nn.Identity()
        self.project = conv_bn(mid, cout, k=1)                         # linear bottleneck

    def forward(self, x):
        out = self.act1(self.expand(x))
        out = self.act2(self.dw(out))
        out = self.project(self.se(out))
        return x + out if self.use_res else out


class TinyMobileNet(nn.Module):
    """3x32x32 -> 10 logits. ReLU6 + Hardswish + SE(Hardsigmoid) + depthwise."""

    def __init__(self, num_classes=10):
        super().__init__()
        self.stem = conv_bn(3, 8, k=3, stride=2)                       # 32 -> 16
        self.stem_act = nn.Hardswish()
        self.blocks = nn.Sequential(
            InvertedResidual(8, 8, 2, 1, nn.ReLU6, se=True),
            InvertedResidual(8, 16, 2, 2, nn.Hardswish, se=True),      # 16 -> 8
            InvertedResidual(16, 16, 2, 1, nn.Hardswish, se=False),
        )
        self.head = conv_bn(16, 32, k=1)
        self.head_act = nn.Hardswish()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(32, num_classes)

    def forward(self, x):
        x = self.stem_act(self.stem(x))
        x = self.blocks(x)
        x = self.head_act(self.head(x))
        return self.classifier(torch.flatten(self.pool(x), 1))


@_seeded
def mobilenet(seed: int = 102) -> nn.Module:
    return _finish(TinyMobileNet(), (3, 32, 32), seed)


# ----------------------------------------------------------------------------
# squeezenet
# ----------------------------------------------------------------------------
class Fire(nn.Module):
    def __init__(self, cin, squeeze, e1, e3):
        super().__init__()
        self.squeeze = nn.Conv2d(cin, squeeze, 1)
        self.squeeze_act = nn.ReLU()
        self.expand1x1 = nn.Conv2d(squeeze, e1, 1)
        self.expand1x1_act = nn.ReLU()
        self.expand3x3 = nn.Conv2d(squeeze, e3, 3, padding=1)
        self.expand3x3_act = nn.ReLU()

    def forward(self, x):
        x = self.squeeze_act(self.squeeze(x))
        return torch.cat([self.expand1x1_act(self.expand1x1(x)),
                          self.expand3x3_act(self.expand3x3(x))], 1)


class TinySqueezeNet(nn.Module):
    """3x32x32 -> 10 logits. Fire modules, ceil-mode MaxPool, LRN, Dropout."""

    def __init__(self, num_classes=10):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(),
            nn.MaxPool2d(3, 2, ceil_mode=True),                        # 32 -> 16
            nn.LocalResponseNorm(size=3, alpha=1e-2, beta=0.75, k=1.0),
            Fire(16, 4, 8, 8),
            Fire(16, 4, 8, 8),
            nn.MaxPool2d(3, 2, ceil_mode=True),                        # 16 -> 8
            Fire(16, 6, 12, 12),
        )
        self.classifier = nn.Sequential(
            nn.Dropout(0.5),
            nn.Conv2d(24, num_classes, 1), nn.ReLU(),
            nn.AdaptiveAvgPool2d(1),
        )

    def forward(self, x):
        return torch.flatten(self.classifier(self.features(x)), 1)


@_seeded
def squeezenet(seed: int = 103) -> nn.Module:
    return _finish(TinySqueezeNet(), (3, 32, 32), seed)


# ----------------------------------------------------------------------------
# vgg
# ----------------------------------------------------------------------------
class TinyVGG(nn.Module):
    def __init__(self, num_classes=10):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(),
            nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(),
            nn.MaxPool2d(2),                                           # 32 -> 16
            nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(),
            nn.MaxPool2d(2),                                           # 16 -> 8
        )
        self.flatten = nn.Flatten()
        self.classifier = nn.Sequential(
            nn.Linear(16 * 8 * 8, 32), nn.ReLU(), nn.Dropout(0.5),
            nn.Linear(32, num_classes),
        )

    def forward(self, x):
        return self.classifier(self.flatten(self.features(x)))


@_seeded
def vgg(seed: int = 104) -> nn.Module:
    return _finish(TinyVGG(), (3, 32, 32), seed)


# ----------------------------------------------------------------------------
# densenet (pre-activation BN-ReLU-Conv: BN follows a Concat, so it is NOT
# folded into a Conv by the exporter and BatchNormalization nodes survive)
# ----------------------------------------------------------------------------
class DenseLayer(nn.Module):
    def __init__(self, cin, growth):
        super().__init__()
        self.norm = nn.BatchNorm2d(cin)
        self.relu = nn.ReLU()
        self.conv = nn.Conv2d(cin, growth, 3, padding=1, bias=False)

    def forward(self, x):
        return torch.cat([x, self.conv(self.relu(self.norm(x)))], 1)


class Transition(nn.Module):
    def __init__(self, cin, cout):
        super().__init__()
        self.norm = nn.BatchNorm2d(cin)
        self.relu = nn.ReLU()
        self.conv = nn.Conv2d(cin, cout, 1, bias=False)
        self.pool = nn.AvgPool2d(2)

    def forward(self, x):
        return self.pool(self.conv(self.relu(self.norm(x))))


class TinyDenseNet(nn.Module):
    def __init__(self, num_classes=10, growth=4):
        super().__init__()
        self.conv0 = nn.Conv2d(3, 8, 3, padding=1, bias=False)
        self.block1 = nn.Sequential(*[DenseLayer(8 + i * growth, growth) for i in range(3)])
        self.trans1 = Transition(8 + 3 * growth, 10)                    # 32 -> 16
        self.block2 = nn.Sequential(*[DenseLayer(10 + i * growth, growth) for i in range(3)])
        c = 10 + 3 * growth
        self.norm5 = nn.BatchNorm2d(c)
        self.relu5 = nn.ReLU()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(c, num_classes)

    def forward(self, x):
        x = self.block2(self.trans1(self.block1(self.conv0(x))))
        x = self.pool(self.relu5(self.norm5(x)))
        return self.classifier(torch.flatten(x, 1))


@_seeded
def densenet(seed: int = 105) -> nn.Module:
    return _finish(TinyDenseNet(), (3, 32, 32), seed)


# ----------------------------------------------------------------------------
# vit
# ----------------------------------------------------------------------------
class Attention(nn.Module):
    def __init__(self, dim, heads):
        super().__init__()
        self.heads = heads
        self.scale = (dim // heads) ** -0.5
        self.qkv = nn.Linear(dim, dim * 3)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x):
        B, N, C = x.shape
        qkv = self.qkv(x).reshape(B, N, 3, self.heads, C // self.heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        attn = torch.matmul(q, k.transpose(-2, -1)) * self.scale
        attn = attn.softmax(dim=-1)
        out = torch.matmul(attn, v).transpose(1, 2).reshape(B, N, C)
        return self.proj(out)


class Block(nn.Module):
    def __init__(self, dim, heads, mlp):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = Attention(dim, heads)
        self.norm2 = nn.LayerNorm(dim)
        self.fc1 = nn.Linear(dim, mlp)
        self.act = nn.GELU()  # exact (erf)
        self.fc2 = nn.Linear(mlp, dim)

    def forward(self, x):
        x = x + self.attn(self.norm1(x))
        return x + self.fc2(self.act(self.fc1(self.norm2(x))))


class TinyViT(nn.Module):
    """3x32x32, patch 8 -> 4x4 grid (16 tokens) + class token; 2 blocks."""

    def __init__(self, num_classes=10, dim=32, heads=4, mlp=64, depth=2, patch=8, img=32):
        super().__init__()
        self.patch_embed = nn.Conv2d(3, dim, patch, stride=patch)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, (img // patch) ** 2 + 1, dim))
        self.blocks = nn.Sequential(*[Block(dim, heads, mlp) for _ in range(depth)])
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, num_classes)

    def forward(self, x):
        x = self.patch_embed(x).flatten(2).transpose(1, 2)            # B, 16, dim
        cls = self.cls_token.expand(x.shape[0], -1, -1)
        x = torch.cat([cls, x], dim=1) + self.pos_embed
        x = self.norm(self.blocks(x))
        return self.head(x[:, 0])


@_seeded
def vit(seed: int = 106) -> nn.Module:
    m = TinyViT()
    _init_weights(m)
    with torch.no_grad():
        nn.init.normal_(m.cls_token, 0, 0.5)
        nn.init.normal_(m.pos_embed, 0, 0.5)
        for ln in [mm for mm in m.modules() if isinstance(mm, nn.LayerNorm)]:
            ln.weight.uniform_(0.5, 1.5)
            ln.bias.normal_(0, 0.1)
    return m.eval()


# ----------------------------------------------------------------------------
# tfsame: TF "SAME" padding computed from the runtime input size
# ----------------------------------------------------------------------------
class Conv2dSame(nn.Conv2d):
    """Like timm's Conv2dSame / efficientnet-pytorch's Conv2dDynamicSamePadding.

    The pad amounts are computed from ``x.shape[-2:]`` at run time with integer
    tensor arithmetic (no ``math.ceil``, which would bake the traced size into
    the graph as a constant), so the exported ONNX keeps a
    Shape -> Gather -> Div/Mul/Sub -> Clip -> Pad subgraph.  For even inputs
    and stride 2 the padding is asymmetric (more at the bottom/right).
    """

    def __init__(self, cin, cout, k, stride=1, bias=True):
        super().__init__(cin, cout, k, stride, padding=0, bias=bias)

    @staticmethod
    def _same_pad(size, k, s, d):
        # total = max((ceil(size/s) - 1) * s + (k - 1) * d + 1 - size, 0)
        total = ((size + s - 1) // s - 1) * s + (k - 1) * d + 1 - size
        if torch.is_tensor(total):
            return torch.clamp(total, min=0)
        return max(total, 0)

    def forward(self, x):
        ih, iw = x.shape[-2:]
        kh, kw = self.weight.shape[-2:]
        ph = self._same_pad(ih, kh, self.stride[0], self.dilation[0])
        pw = self._same_pad(iw, kw, self.stride[1], self.dilation[1])
        x = F.pad(x, [pw // 2, pw - pw // 2, ph // 2, ph - ph // 2])
        return F.conv2d(x, self.weight, self.bias, self.stride, 0, self.dilation, self.groups)


class TinyTFSame(nn.Module):
    """3xHxW (any size, exported with dynamic N, H, W) -> 10 logits."""

    def __init__(self, num_classes=10):
        super().__init__()
        self.conv1 = Conv2dSame(3, 8, 3, stride=2, bias=False)
        self.bn1 = nn.BatchNorm2d(8)
        self.act1 = nn.ReLU()
        self.conv2 = Conv2dSame(8, 16, 5, stride=2)
        self.act2 = nn.ReLU()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(16, num_classes)

    def forward(self, x):
        x = self.act1(self.bn1(self.conv1(x)))
        x = self.act2(self.conv2(x))
        return self.fc(torch.flatten(self.pool(x), 1))


@_seeded
def tfsame(seed: int = 107) -> nn.Module:
    return _finish(TinyTFSame(), (3, 32, 32), seed)


# ----------------------------------------------------------------------------
# nhwc
# ----------------------------------------------------------------------------
class TinyNHWC(nn.Module):
    """Input N x 64 x 64 x 3 (channels last); permuted to NCHW first."""

    def __init__(self, num_classes=10):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, stride=2, padding=1)          # 64 -> 32
        self.act1 = nn.ReLU()
        self.pool1 = nn.MaxPool2d(2)                                   # 32 -> 16
        self.conv2 = nn.Conv2d(8, 16, 3, padding=1)
        self.act2 = nn.ReLU()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(16, num_classes)

    def forward(self, x):
        x = x.permute(0, 3, 1, 2)
        x = self.pool1(self.act1(self.conv1(x)))
        x = self.act2(self.conv2(x))
        return self.fc(torch.flatten(self.pool(x), 1))


@_seeded
def nhwc(seed: int = 108) -> nn.Module:
    return _finish(TinyNHWC(), (64, 64, 3), seed)


# ----------------------------------------------------------------------------
# static1: batch fixed to 1, x.view(1, -1)
# ----------------------------------------------------------------------------
class TinyStatic1(nn.Module):
    def __init__(self, num_classes=10):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.act1 = nn.ReLU()
        self.pool1 = nn.MaxPool2d(2)                                   # 32 -> 16
        self.conv2 = nn.Conv2d(8, 8, 3, stride=2, padding=1)           # 16 -> 8
        self.act2 = nn.ReLU()
        self.fc = nn.Linear(8 * 8 * 8, num_classes)

    def forward(self, x):
        x = self.act2(self.conv2(self.pool1(self.act1(self.conv1(x)))))
        return self.fc(x.view(1, -1))


@_seeded
def static1(seed: int = 109) -> nn.Module:
    return _finish(TinyStatic1(), (3, 32, 32), seed)


# ----------------------------------------------------------------------------
# relunet: plain ReLU CNN (GuidedBackprop / Deconvolution parity)
# ----------------------------------------------------------------------------
class ReLUNet(nn.Module):
    def __init__(self, num_classes=10):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.relu1 = nn.ReLU()
        self.pool1 = nn.MaxPool2d(2)                                   # 32 -> 16
        self.conv2 = nn.Conv2d(8, 16, 3, padding=1)
        self.relu2 = nn.ReLU()
        self.pool2 = nn.AvgPool2d(2)                                   # 16 -> 8
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(16 * 8 * 8, num_classes)

    def forward(self, x):
        x = self.pool1(self.relu1(self.conv1(x)))
        x = self.pool2(self.relu2(self.conv2(x)))
        return self.fc(self.flatten(x))


@_seeded
def relunet(seed: int = 110) -> nn.Module:
    return _finish(ReLUNet(), (3, 32, 32), seed)


# ----------------------------------------------------------------------------
# smooth: C-infinity everywhere (finite-difference checks)
# ----------------------------------------------------------------------------
class SmoothNet(nn.Module):
    """conv-Tanh-AvgPool-conv-Softplus-AvgPool-Flatten-Linear-Softmax."""

    def __init__(self, num_classes=10):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.act1 = nn.Tanh()
        self.pool1 = nn.AvgPool2d(2)                                   # 32 -> 16
        self.conv2 = nn.Conv2d(8, 8, 3, padding=1)
        self.act2 = nn.Softplus()
        self.pool2 = nn.AvgPool2d(2)                                   # 16 -> 8
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(8 * 8 * 8, num_classes)
        self.softmax = nn.Softmax(dim=1)

    def forward(self, x):
        x = self.pool1(self.act1(self.conv1(x)))
        x = self.pool2(self.act2(self.conv2(x)))
        return self.softmax(self.fc(self.flatten(x)))


@_seeded
def smooth(seed: int = 111) -> nn.Module:
    return _finish(SmoothNet(), (3, 32, 32), seed)


# ----------------------------------------------------------------------------
# regression: single scalar output
# ----------------------------------------------------------------------------
class RegressionNet(nn.Module):
    """3x32x32 -> N x 1 (a single unbounded scalar per image, no softmax).

    Flatten head (not global pooling) so the output genuinely varies with the
    input (std ~1 on randn inputs) and input gradients are not tiny.
    """

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.act1 = nn.ReLU()
        self.pool1 = nn.MaxPool2d(2)                                   # 32 -> 16
        self.conv2 = nn.Conv2d(8, 16, 3, padding=1)
        self.act2 = nn.ReLU()
        self.pool2 = nn.MaxPool2d(2)                                   # 16 -> 8
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(16 * 8 * 8, 1)

    def forward(self, x):
        x = self.pool2(self.act2(self.conv2(self.pool1(self.act1(self.conv1(x))))))
        return self.fc(self.flatten(x))


@_seeded
def regression(seed: int = 112) -> nn.Module:
    return _finish(RegressionNet(), (3, 32, 32), seed)


# ----------------------------------------------------------------------------
# segmentation: N x 3 x H x W logits at input resolution
# ----------------------------------------------------------------------------
class TinyFCN(nn.Module):
    def __init__(self, num_classes=3):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.act1 = nn.ReLU()
        self.conv2 = nn.Conv2d(8, 16, 3, stride=2, padding=1)         # 32 -> 16
        self.act2 = nn.ReLU()
        self.conv3 = nn.Conv2d(16, 16, 3, stride=2, padding=1)        # 16 -> 8
        self.act3 = nn.ReLU()
        self.classifier = nn.Conv2d(16, num_classes, 1)
        self.upsample = nn.Upsample(scale_factor=4, mode="bilinear", align_corners=False)

    def forward(self, x):
        x = self.act3(self.conv3(self.act2(self.conv2(self.act1(self.conv1(x))))))
        return self.upsample(self.classifier(x))


@_seeded
def segmentation(seed: int = 113) -> nn.Module:
    return _finish(TinyFCN(), (3, 32, 32), seed)


# ----------------------------------------------------------------------------
# rectangle toy task (see make_rectangle.py)
# ----------------------------------------------------------------------------
class RectangleCNN(nn.Module):
    """Keras-style NHWC classifier of the LIME-CNN blog toy task.

    Input: N x 64 x 64 x 3 float32 raw pixel values 0..255 (scaled by 1/255
    inside).  Output: N x 1 sigmoid = P(image contains the grey rectangle).
    conv(8, 3x3, same)-relu-maxpool(2)-flatten-dense(16)-relu-dense(1)-sigmoid
    (the blog uses 32 filters / 32 units: 4.2 MB of weights; shrunk to fit the
    size budget).
    """

    def __init__(self, filters=8, hidden=16):
        super().__init__()
        self.conv = nn.Conv2d(3, filters, 3, padding=1)
        self.relu1 = nn.ReLU()
        self.pool = nn.MaxPool2d(2)
        self.flatten = nn.Flatten()
        self.dense1 = nn.Linear(filters * 32 * 32, hidden)
        self.relu2 = nn.ReLU()
        self.dense2 = nn.Linear(hidden, 1)
        self.sigmoid = nn.Sigmoid()

    def logits(self, x):
        x = x.permute(0, 3, 1, 2) * (1.0 / 255.0)
        x = self.pool(self.relu1(self.conv(x)))
        return self.dense2(self.relu2(self.dense1(self.flatten(x))))

    def forward(self, x):
        return self.sigmoid(self.logits(x))


def load_rectangle() -> nn.Module:
    """Torch twin of ``rectangle/rectangle_cnn.onnx``.

    The weights are read from the ONNX initializers (which the TorchScript
    exporter names after the state_dict keys), so no .pt copy is committed.
    """
    import onnx
    from onnx import numpy_helper

    proto = onnx.load(os.path.join(RECT_DIR, "rectangle_cnn.onnx"))
    inits = {t.name: torch.from_numpy(numpy_helper.to_array(t).copy()) for t in proto.graph.initializer}
    m = RectangleCNN()
    m.load_state_dict({k: inits[k] for k in m.state_dict()})
    return m.eval()


# ----------------------------------------------------------------------------
# registry
# ----------------------------------------------------------------------------
@dataclass(frozen=True)
class Spec:
    builder: object
    input_shape: tuple            # per-sample shape (without batch)
    layout: str                   # "NCHW" | "NHWC"
    output: str                   # logits | probabilities | regression | segmentation_logits
    dynamic_batch: bool = True
    dynamic_hw: bool = False      # H, W also exported as dynamic axes
    notes: str = ""
    extra: dict = field(default_factory=dict)


SPECS: "OrderedDict[str, Spec]" = OrderedDict(
    resnet=Spec(resnet, (3, 32, 32), "NCHW", "logits",
                notes="BasicBlocks, BN (folded into Conv by the exporter), residual Add, MaxPool(3,2,1)"),
    resnet_softmax=Spec(resnet_softmax, (3, 32, 32), "NCHW", "probabilities",
                        notes="resnet weights (keys prefixed 'net.') + Softmax(dim=1)"),
    mobilenet=Spec(mobilenet, (3, 32, 32), "NCHW", "logits",
                   notes="depthwise convs, ReLU6, Hardswish, SE with Hardsigmoid, inverted residuals"),
    squeezenet=Spec(squeezenet, (3, 32, 32), "NCHW", "logits",
                    notes="Fire modules (Concat), ceil_mode MaxPool(3,2), LocalResponseNorm, Dropout"),
    vgg=Spec(vgg, (3, 32, 32), "NCHW", "logits", notes="conv-relu stacks, Flatten, Linear-ReLU-Dropout-Linear"),
    densenet=Spec(densenet, (3, 32, 32), "NCHW", "logits",
                  notes="dense blocks (Concat chains), pre-activation BN kept as BatchNormalization, AvgPool(2)"),
    vit=Spec(vit, (3, 32, 32), "NCHW", "logits",
             notes="patch-8 conv, class token, pos-embed, explicit MHA, LayerNorm, exact GELU"),
    tfsame=Spec(tfsame, (3, 32, 32), "NCHW", "logits", dynamic_hw=True,
                notes="TF-SAME padding computed at run time from Shape (asymmetric Pad), dynamic N,H,W"),
    nhwc=Spec(nhwc, (64, 64, 3), "NHWC", "logits", notes="input NHWC, Transpose to NCHW inside"),
    static1=Spec(static1, (3, 32, 32), "NCHW", "logits", dynamic_batch=False,
                 notes="static batch 1, x.view(1, -1) Reshape"),
    relunet=Spec(relunet, (3, 32, 32), "NCHW", "logits",
                 notes="conv-relu-maxpool-conv-relu-avgpool-linear, nn.ReLU modules only"),
    smooth=Spec(smooth, (3, 32, 32), "NCHW", "probabilities",
                notes="Tanh, Softplus, AvgPool, Softmax: smooth everywhere (finite differences)"),
    regression=Spec(regression, (3, 32, 32), "NCHW", "regression", notes="output N x 1, no softmax"),
    segmentation=Spec(segmentation, (3, 32, 32), "NCHW", "segmentation_logits",
                      notes="N x 3 x H x W logits, bilinear Resize x4 (align_corners=False)"),
)

NAMES = list(SPECS)


def onnx_path(name: str) -> str:
    return os.path.join(ZOO_DIR, f"{name}.onnx")


def pt_path(name: str) -> str:
    return os.path.join(ZOO_DIR, f"{name}.pt")


def load(name: str) -> nn.Module:
    """The torch oracle for ``zoo/<name>.onnx``: architecture + exported weights."""
    model = SPECS[name].builder()
    state = torch.load(pt_path(name), map_location="cpu")
    model.load_state_dict(state)
    return model.eval()


def batch_shape(name: str, n: int = 1) -> tuple:
    spec = SPECS[name]
    if not spec.dynamic_batch:
        n = 1
    return (n, *spec.input_shape)
