"""DynamicNet builder: PlainNet and ResNet(r) models as IR graphs (paper §3.2).

>>> g = build("resnet", blocks=2, residual_ratio=0.5)   # ResNet-14, r = 0.5, CIFAR-10
"""

from .build import build, build_from_config
from .config import ConfigError, DynamicNetConfig, make_config

__all__ = ["ConfigError", "DynamicNetConfig", "build", "build_from_config", "make_config"]
