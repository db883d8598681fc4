"""Training hyper-parameters: :class:`TrainConfig`, whose defaults are the paper's CIFAR recipe."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields

from netmorph.errors import NetmorphError
from netmorph.limits import (
    MAX_BATCH,
    MAX_EPOCHS,
    MAX_PROCESSES,
    MAX_SEED,
    LimitError,
    check_float,
    check_int,
)

OPTIMIZERS = ("sgd", "nesterov", "adam", "adamw")
SCHEDULES = ("step", "cosine", "constant")
DEVICES = ("auto", "cpu", "cuda")
AMP_MODES = (None, "bf16", "fp16")


class TrainConfigError(NetmorphError):
    """A training option is out of range or unsupported on the chosen device."""


@dataclass(frozen=True)
class TrainConfig:
    """Everything :func:`~netmorph.train.fit` needs besides the model and the data.

    Defaults follow the paper (He et al. CIFAR recipe): SGD, momentum 0.9, weight decay 1e-4,
    batch 256, lr 0.1 divided by 10 at 50 % and 75 % of the epochs, pad-4 random crop plus
    horizontal flip, per-channel mean/std normalisation, 320 epochs.

    Attributes
    ----------
    epochs, batch_size, lr, momentum, weight_decay
        The usual; ``batch_size`` is the global batch (split across DDP ranks).
    optimizer
        ``"sgd"`` (momentum), ``"nesterov"`` (SGD with Nesterov momentum), ``"adam"`` or ``"adamw"``
        (``torch.optim.Adam`` / ``AdamW``, decoupled weight decay; pass a smaller ``lr`` such as 1e-3).
    schedule
        ``"step"`` (multiply by ``gamma`` at each of ``milestones``, fractions of ``epochs``),
        ``"cosine"`` (to zero at the end) or ``"constant"``; stepped every iteration.
    warmup_epochs
        Linear warm-up from ``lr / (warmup steps)`` to ``lr`` over this many (fractional) epochs.
    schedule_epochs, schedule_offset
        Train one segment of a longer schedule: the schedule (milestones, cosine, warm-up) spans
        ``schedule_epochs`` (``None``: ``epochs``) and this run starts ``schedule_offset`` epochs
        into it. Used by growth pipelines that continue one schedule across stages.
    pad, flip
        Random-crop padding in pixels (0 disables cropping) and random horizontal flips.
    device
        ``"auto"`` (CUDA when available), ``"cpu"`` or ``"cuda"`` / ``"cuda:N"``.
    amp
        ``None``, ``"bf16"`` (autocast; also on CPU) or ``"fp16"`` (autocast + GradScaler; CUDA only).
    channels_last, compile
        CUDA memory format and ``torch.compile`` of the training module.
    seed
        Seeds the epoch permutations and augmentations; equal seeds give equal weights on CPU.
    num_threads
        ``torch.set_num_threads`` for the run (``None`` leaves it).
    eval_batch_size
        Batch size of evaluation passes.
    """

    epochs: int = 320
    batch_size: int = 256
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 1e-4
    optimizer: str = "sgd"
    schedule: str = "step"
    milestones: tuple[float, ...] = (0.5, 0.75)
    gamma: float = 0.1
    warmup_epochs: float = 0.0
    schedule_epochs: int | None = None
    schedule_offset: float = 0.0
    pad: int = 4
    flip: bool = True
    device: str = "auto"
    amp: str | None = None
    channels_last: bool = False
    compile: bool = False
    seed: int = 0
    num_threads: int | None = None
    eval_batch_size: int = 1024

    def __post_init__(self) -> None:
        try:
            self._check_types()
        except LimitError as e:
            raise TrainConfigError(str(e)) from None
        checks = [
            (self.optimizer in OPTIMIZERS, f"optimizer must be one of {OPTIMIZERS}, got {self.optimizer!r}"),
            (self.schedule in SCHEDULES, f"schedule must be one of {SCHEDULES}, got {self.schedule!r}"),
            (isinstance(self.device, str) and (self.device in DEVICES or _cuda_index(self.device)),
             f"device must be one of {DEVICES} or cuda:N, got {self.device!r}"),
            (self.amp in AMP_MODES, f"amp must be one of None, 'bf16', 'fp16', got {self.amp!r}"),
        ]
        for ok, message in checks:
            if not ok:
                raise TrainConfigError(message)

    def _check_types(self) -> None:
        """Every numeric field finite, in range, integer where integer (before any work starts)."""
        def put(name, value):
            object.__setattr__(self, name, value)

        put("epochs", check_int("epochs", self.epochs, 0, MAX_EPOCHS))
        put("batch_size", check_int("batch_size", self.batch_size, 1, MAX_BATCH))
        put("eval_batch_size", check_int("eval_batch_size", self.eval_batch_size, 1, MAX_BATCH))
        put("lr", check_float("lr", self.lr, 0.0, low_open=True))
        put("momentum", check_float("momentum", self.momentum, 0.0))
        put("weight_decay", check_float("weight_decay", self.weight_decay, 0.0))
        if isinstance(self.milestones, str) or not isinstance(self.milestones, tuple | list):
            raise LimitError(f"milestones must be a list of fractions in [0, 1], got {self.milestones!r}")
        put("milestones", tuple(check_float("each milestone", m, 0.0, 1.0) for m in self.milestones))
        put("gamma", check_float("gamma", self.gamma, 0.0, 1.0, low_open=True))
        put("warmup_epochs", check_float("warmup_epochs", self.warmup_epochs, 0.0, MAX_EPOCHS))
        if self.schedule_epochs is not None:
            put("schedule_epochs", check_int("schedule_epochs", self.schedule_epochs, 1, MAX_EPOCHS))
        put("schedule_offset", check_float("schedule_offset", self.schedule_offset, 0.0, MAX_EPOCHS))
        put("pad", check_int("pad", self.pad, 0, 1024))
        put("seed", check_int("seed", self.seed, 0, MAX_SEED))
        if self.num_threads is not None:
            put("num_threads", check_int("num_threads", self.num_threads, 1, MAX_PROCESSES))
        for name in ("flip", "channels_last", "compile"):
            if not isinstance(getattr(self, name), bool):
                raise LimitError(f"{name} must be true or false, got {getattr(self, name)!r}")

    def to_dict(self) -> dict:
        """Plain-data form (for checkpoints and ``metrics.jsonl`` headers)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> TrainConfig:
        """Inverse of :meth:`to_dict`; unknown keys are ignored."""
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})

    def replace(self, **changes) -> TrainConfig:
        """A copy with some fields changed (validated again)."""
        return TrainConfig(**{**self.to_dict(), **changes})


def _cuda_index(device: str) -> bool:
    head, _, index = device.partition(":")
    return head == "cuda" and index.isdigit() and int(index) < 1024
