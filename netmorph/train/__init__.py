"""Training: the paper's recipe as :class:`TrainConfig`, :func:`fit`, :func:`evaluate`, DDP helpers.

Example::

    from netmorph.data import make_synthetic
    from netmorph.train import TrainConfig, fit

    train, test = make_synthetic(2000)
    result = fit(model, train, test, TrainConfig(epochs=5, batch_size=128), out_dir="run")
    print(result.test_err)
"""

from .augment import crop_flip, normalize, random_crop_flip
from .checkpoint import CHECKPOINT_NAME, load_checkpoint, save_checkpoint
from .config import TrainConfig, TrainConfigError
from .ddp import init_from_env, launched_by_torchrun, spawn_fit
from .evaluate import evaluate, normalized_inputs, predict
from .loop import METRICS_NAME, epoch_shard, fit
from .metrics import TrainResult, read_metrics
from .optim import build_optimizer, build_scheduler, lr_factor

__all__ = [
    "CHECKPOINT_NAME", "METRICS_NAME", "TrainConfig", "TrainConfigError", "TrainResult",
    "build_optimizer", "build_scheduler", "crop_flip", "epoch_shard", "evaluate", "fit",
    "init_from_env", "launched_by_torchrun", "load_checkpoint", "lr_factor", "normalize",
    "normalized_inputs", "predict", "random_crop_flip", "read_metrics", "save_checkpoint", "spawn_fit",
]
