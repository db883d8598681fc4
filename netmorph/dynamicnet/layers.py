"""A small layer writer: appends named, initialised Conv/BN/ReLU/... nodes to an IR graph.

Initialisation (seeded, reproducible):

* Conv weights: He normal with ``fan_out`` (``std = sqrt(2 / (C_out · k · k))``), as torch's
  ResNets do (``kaiming_normal_(mode="fan_out", nonlinearity="relu")``); no bias (BN follows).
* BatchNorm: ``scale 1, bias 0, mean 0, var 1`` — or, with ``bn_stats``, random affine
  parameters and running statistics (scale, var in [0.5, 1.5), bias, mean ~ N(0, 0.1²)).
* Gemm: torch's ``nn.Linear`` default, uniform in ``±1/sqrt(fan_in)`` for weight and bias.
"""

from __future__ import annotations

import numpy as np

from ..ir import Graph, TensorType, Value

BN_EPSILON = 1e-5


class LayerWriter:
    """Appends layers to ``graph`` in order, drawing weights from one seeded generator."""

    def __init__(self, graph: Graph, seed: int, *, bn_stats: bool = False):
        self.graph = graph
        self.rng = np.random.default_rng(seed)
        self.bn_stats = bn_stats

    def _append(self, op: str, name: str, inputs, attributes=None, output_name: str | None = None) -> Value:
        node = self.graph.create_node(
            op, inputs, attributes, name=name, output_names=[output_name or name]
        )
        self.graph.insert_before(None, node)
        return node.output

    def _param(self, name: str, array: np.ndarray) -> Value:
        return self.graph.add_parameter(name, np.array(array, dtype=np.float32, order="C"))

    def conv(self, x: Value, name: str, cin: int, cout: int, k: int, stride: int = 1) -> Value:
        std = np.sqrt(2.0 / (cout * k * k))
        w = self._param(f"{name}.weight", self.rng.normal(0.0, std, size=(cout, cin, k, k)))
        attrs = {"kernel_shape": [k, k], "pads": [k // 2] * 4, "strides": [stride, stride]}
        return self._append("Conv", name, [x, w], attrs)

    def bn(self, x: Value, name: str, c: int) -> Value:
        if self.bn_stats:
            scale = self.rng.uniform(0.5, 1.5, c)
            bias = self.rng.normal(0.0, 0.1, c)
            mean = self.rng.normal(0.0, 0.1, c)
            var = self.rng.uniform(0.5, 1.5, c)
        else:
            scale, bias, mean, var = np.ones(c), np.zeros(c), np.zeros(c), np.ones(c)
        ps = [self._param(f"{name}.{p}", a) for p, a in
              (("scale", scale), ("bias", bias), ("mean", mean), ("var", var))]
        return self._append("BatchNormalization", name, [x, *ps], {"epsilon": BN_EPSILON})

    def relu(self, x: Value, name: str) -> Value:
        return self._append("Relu", name, [x])

    def scale(self, x: Value, name: str, r: float) -> Value:
        return self._append("Mul", name, [x, self._param(f"{name}.r", np.array(r))])

    def add(self, a: Value, b: Value, name: str) -> Value:
        return self._append("Add", name, [a, b])

    def maxpool(self, x: Value, name: str, k: int = 3, stride: int = 2) -> Value:
        attrs = {"kernel_shape": [k, k], "pads": [k // 2] * 4, "strides": [stride, stride]}
        return self._append("MaxPool", name, [x], attrs)

    def global_pool(self, x: Value, name: str) -> Value:
        return self._append("GlobalAveragePool", name, [x])

    def flatten(self, x: Value, name: str) -> Value:
        return self._append("Flatten", name, [x], {"axis": 1})

    def fc(self, x: Value, name: str, cin: int, cout: int, output_name: str | None = None) -> Value:
        bound = 1.0 / np.sqrt(cin)
        w = self._param(f"{name}.weight", self.rng.uniform(-bound, bound, (cout, cin)))
        b = self._param(f"{name}.bias", self.rng.uniform(-bound, bound, cout))
        return self._append("Gemm", name, [x, w, b], {"transB": 1}, output_name)

    def softmax(self, x: Value, name: str, output_name: str | None = None) -> Value:
        return self._append("Softmax", name, [x], {"axis": 1}, output_name)

    def input(self, name: str, shape) -> Value:
        return self.graph.add_input(name, TensorType.float32("N", *shape))
