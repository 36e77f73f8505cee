"""Build the ONNX graph of a convolutional network straight from its weights,
with ``onnx.helper``: no torch. Batch norm is folded into the convolution before
it (as an exporter and onnxruntime would), so the graph is convolutions with
bias, ReLU6 (Clip), additions and the pooling head.

A backbone (efficientnet_lite.py, mobilenet_v2.py) calls ``conv_bn`` layer by
layer and hands the last feature map to ``embedding_model``, which adds the
pooling, the L2 normalisation and, where the checkpoint has a classifier, the
ImageNet logits, and returns the model onnxruntime serves.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 17
GEM_POWER = 3.0


class GraphBuilder:
    """Nodes and weights of one graph whose input is ``pixels`` (batch, 3, H, W)."""

    def __init__(self, weights: dict[str, np.ndarray], image_size: int):
        self.weights = weights
        self.image_size = image_size
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []
        self._count = 0

    def _name(self, stem: str) -> str:
        self._count += 1
        return f"{stem}_{self._count}"

    def constant(self, value: np.ndarray, stem: str = "const") -> str:
        name = self._name(stem)
        self.initializers.append(numpy_helper.from_array(np.asarray(value), name))
        return name

    def node(self, op: str, inputs: list[str], **attributes) -> str:
        output = self._name(op.lower())
        self.nodes.append(helper.make_node(op, inputs, [output], name=output, **attributes))
        return output

    def conv_bn(self, x: str, conv: str, bn: str, *, stride: int = 1, pads: tuple[int, int, int, int] = (0, 0, 0, 0),
                groups: int = 1, relu6: bool = True, eps: float = 1e-5) -> str:
        """Conv (weights ``conv.weight``, no bias) then batch norm (``bn.*``) folded into it, then ReLU6 if asked.
        ``pads`` are (top, left, bottom, right)."""
        weight = self.weights[f"{conv}.weight"].astype(np.float64)
        scale = self.weights[f"{bn}.weight"] / np.sqrt(self.weights[f"{bn}.running_var"].astype(np.float64) + eps)
        bias = self.weights[f"{bn}.bias"] - self.weights[f"{bn}.running_mean"] * scale
        folded_weight = (weight * scale[:, None, None, None]).astype(np.float32)
        kernel = list(weight.shape[2:])
        out = self.node("Conv", [x, self.constant(folded_weight, "w"), self.constant(bias.astype(np.float32), "b")],
                        kernel_shape=kernel, strides=[stride, stride], group=groups,
                        pads=[pads[0], pads[1], pads[2], pads[3]])
        return self.relu6(out) if relu6 else out

    def relu6(self, x: str) -> str:
        return self.node("Clip", [x, self.constant(np.float32(0.0)), self.constant(np.float32(6.0))])

    def add(self, a: str, b: str) -> str:
        return self.node("Add", [a, b])

    def embedding_model(self, feature_map: str, pooling: str, classifier: str | None = None) -> onnx.ModelProto:
        """The model: pixels -> (L2-normalised pooled embedding[, logits from ``classifier.weight/bias``])."""
        average = self.node("Flatten", [self.node("GlobalAveragePool", [feature_map])], axis=1)
        if pooling == "gem":
            clamped = self.node("Clip", [feature_map, self.constant(np.float32(1e-6))])
            powered = self.node("Pow", [clamped, self.constant(np.float32(GEM_POWER))])
            mean = self.node("Flatten", [self.node("GlobalAveragePool", [powered])], axis=1)
            pooled = self.node("Pow", [mean, self.constant(np.float32(1.0 / GEM_POWER))])
        else:
            pooled = average
        norm = self.node("Max", [self.node("ReduceL2", [pooled], axes=[1], keepdims=1), self.constant(np.float32(1e-12))])
        self.nodes.append(helper.make_node("Div", [pooled, norm], ["embedding"], name="embedding"))
        outputs = [helper.make_tensor_value_info("embedding", TensorProto.FLOAT, ["batch", None])]
        if classifier is not None:
            weight, bias = self.weights[f"{classifier}.weight"], self.weights[f"{classifier}.bias"]
            self.nodes.append(helper.make_node("Gemm", [average, self.constant(weight.astype(np.float32)),
                                                        self.constant(bias.astype(np.float32))], ["logits"],
                                               name="logits", transB=1))
            outputs.append(helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", weight.shape[0]]))
        pixels = helper.make_tensor_value_info("pixels", TensorProto.FLOAT, ["batch", 3, self.image_size, self.image_size])
        graph = helper.make_graph(self.nodes, "lookalike", [pixels], outputs, self.initializers)
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="lookalike")
        model.ir_version = 8
        onnx.checker.check_model(model)
        return model
