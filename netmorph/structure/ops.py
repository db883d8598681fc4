"""The op table every structure finder and pass reads: what an ONNX op does to activations.

One place says which ops are elementwise, which are norms, which pass channels through, which
are layers; the finders (:mod:`.residual`, :mod:`.stages`, :mod:`.channels`, :mod:`.recognise`)
and the passes that place morphs use these sets instead of lists of their own.
"""

from __future__ import annotations

SHAPE_QUERY_OPS = frozenset({"Shape", "Size"})
"""Their outputs are weight plumbing even when they read an activation."""
TYPE_ONLY_INPUTS = {"CastLike": frozenset({1})}
"""Input positions that are read for their type only."""

ACTIVATION_OPS = frozenset({
    "Relu", "Clip", "PRelu", "LeakyRelu", "HardSwish", "HardSigmoid", "Sigmoid", "Tanh", "Elu",
    "Selu", "Gelu", "Mish", "Softplus", "Celu", "ThresholdedRelu", "Erf",
})
"""Pointwise nonlinearities."""
UNARY_OPS = ACTIVATION_OPS | frozenset({
    "Neg", "Abs", "Sqrt", "Exp", "Log", "Identity", "Dropout", "Cast", "Pow", "Reciprocal", "Floor",
    "Ceil", "Round", "Sign", "Sin", "Cos",
})
"""Elementwise ops of one activation (channel ``c`` out depends on channel ``c`` in only)."""
BINARY_OPS = frozenset({"Add", "Mul", "Sub", "Div", "Max", "Min"})
"""Elementwise ops of two operands (broadcasting)."""
JOIN_OPS = frozenset({"Add"})
"""Joins that close a residual unit."""
IDEMPOTENT_OPS = frozenset({"Relu", "Clip"})
"""``f(f(x)) = f(x)``: a copy of a unit may repeat them after an output they already ended."""
GATE_OPS = frozenset({"Sigmoid", "HardSigmoid"})
"""The squashing half of a gate ``x·σ(…)`` (SE, SiLU, HardSwish decomposed)."""
TRANSPARENT_OPS = frozenset({"Identity", "Dropout"})
"""No-ops at inference."""
RESHAPE_OPS = frozenset({"Transpose", "Reshape", "Flatten", "Squeeze", "Unsqueeze"})

CHANNEL_FIRST_NORMS = frozenset({"BatchNormalization", "InstanceNormalization"})
NORM_OPS = CHANNEL_FIRST_NORMS | frozenset({"LayerNormalization", "GroupNormalization", "RMSNormalization"})
"""Normalisations with a scale (input 1) and a bias (input 2)."""
POOL_OPS = frozenset({"MaxPool", "AveragePool", "GlobalAveragePool", "GlobalMaxPool", "LpPool"})
GLOBAL_POOL_OPS = frozenset({"GlobalAveragePool", "GlobalMaxPool"})
REDUCE_OPS = frozenset({"ReduceMean", "ReduceMax", "ReduceMin", "ReduceSum"})

PRODUCER_OPS = frozenset({"Conv", "Gemm", "MatMul"})
"""Ops with a weight whose output rows are channels (convs, linears)."""
LAYER_OPS = PRODUCER_OPS | NORM_OPS | frozenset({"ConvTranspose"})
"""Ops that make a branch a real layer (a branch of only elementwise ops is arithmetic, not a unit,
e.g. the ``x + 0.044715·x³`` inside a tanh-GELU)."""
SLICING_OPS = frozenset({"Split", "Slice"})
"""Ops that take channel pieces of an activation."""

ZERO_PRESERVING_OPS = TRANSPARENT_OPS | RESHAPE_OPS | SLICING_OPS | frozenset({
    "Relu", "LeakyRelu", "PRelu", "Tanh", "HardSwish", "Gelu", "Elu", "Selu", "Mish", "Erf", "Neg",
    "MaxPool", "AveragePool", "Resize", "Upsample", "SpaceToDepth", "DepthToSpace",
})
"""Ops whose output is zero when their (first) activation input is (``f(0) = 0``)."""

# what the axis-role reading (structure/axes.py) does with each op: output axes as the input's,
# broadcast over the inputs, or reduced along its axes
SAME_SHAPE_OPS = frozenset({
    "Relu", "Gelu", "Erf", "Tanh", "Sigmoid", "Softmax", "LogSoftmax", "LayerNormalization",
    "RMSNormalization", "SimplifiedLayerNormalization", "Cast", "CastLike", "Identity", "Dropout", "Neg",
    "Sqrt", "Reciprocal", "Exp", "Log", "Abs", "IsNaN", "IsInf", "Not", "Clip", "Softplus", "HardSwish",
    "HardSigmoid", "LeakyRelu", "Elu", "Selu", "Mish", "Sin", "Cos", "Floor", "Ceil", "Round", "Sign",
    "Trilu", "Celu", "CumSum"})
BROADCAST_OPS = frozenset({"Add", "Sub", "Mul", "Div", "Pow", "Where", "Equal", "And", "Or", "Xor", "Max",
                           "Min", "Greater", "Less", "GreaterOrEqual", "LessOrEqual", "Mod", "PRelu"})
AXIS_REDUCE_OPS = frozenset({"ReduceMean", "ReduceSum", "ReduceMax", "ReduceMin", "ReduceL2", "ReduceProd"})

OP_CLASSES = {
    "Conv": "conv",
    "BatchNormalization": "norm",
    "Relu": "act", "Clip": "act", "PRelu": "act", "LeakyRelu": "act",
    "MaxPool": "pool", "AveragePool": "pool",
    "GlobalAveragePool": "gpool", "GlobalMaxPool": "gpool",
    "Flatten": "flatten", "Reshape": "flatten", "Squeeze": "flatten",
    "Gemm": "fc", "MatMul": "fc",
    "Softmax": "softmax", "LogSoftmax": "softmax",
    "Identity": "transparent", "Dropout": "transparent",
}
"""The layer class of an op in the DynamicNet reading (``"other"`` when absent)."""
