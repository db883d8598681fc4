"""DistributedDataParallel training: 2 CPU processes with gloo, real process group, real checkpoints."""

from __future__ import annotations

import functools

import torch
from torch import nn

from netmorph.data import make_synthetic
from netmorph.train import CHECKPOINT_NAME, TrainConfig, epoch_shard, load_checkpoint, read_metrics, spawn_fit


def tiny_model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 4),
    )


def tiny_data():
    return make_synthetic(256, 64, num_classes=4, size=8, seed=3)


def save_rank_state(folder: str, rank: int, module: nn.Module, result) -> None:
    torch.save(module.state_dict(), f"{folder}/rank{rank}.pt")


def test_epoch_shards_partition_the_permutation():
    shards = [epoch_shard(10, epoch=2, seed=5, rank=r, world=3) for r in range(3)]
    assert all(len(s) == 4 for s in shards)  # padded to 12 by wrapping
    joined = torch.cat(shards)
    assert set(joined.tolist()) == set(range(10))
    assert torch.equal(epoch_shard(10, 2, 5, 0, 1).sort().values, torch.arange(10))
    assert not torch.equal(epoch_shard(10, 2, 5, 0, 1), epoch_shard(10, 3, 5, 0, 1))


def test_two_gloo_ranks_end_identical_and_learn(tmp_path):
    config = TrainConfig(epochs=4, batch_size=32, lr=0.05, device="cpu", num_threads=1, schedule="constant")
    result = spawn_fit(
        tiny_model, tiny_data, config, nproc=2, out_dir=tmp_path, progress=False, backend="gloo",
        on_rank_done=functools.partial(save_rank_state, str(tmp_path)),
    )
    s0 = torch.load(tmp_path / "rank0.pt", weights_only=True)
    s1 = torch.load(tmp_path / "rank1.pt", weights_only=True)
    assert s0.keys() == s1.keys()
    for k in s0:  # parameters and BatchNorm running statistics alike
        assert torch.equal(s0[k], s1[k]), k
    # the parent got rank 0's weights back, and the run learned
    for k, v in result.module.state_dict().items():
        assert torch.equal(v, s0[k]), k
    losses = [r["train_loss"] for r in result.history]
    assert len(losses) == 4 and losses[-1] < 0.8 * losses[0], losses
    assert [r["epoch"] for r in read_metrics(tmp_path / "metrics.jsonl")] == [1, 2, 3, 4]
    assert not result.stopped
    assert load_checkpoint(tmp_path / CHECKPOINT_NAME)["world_size"] == 2
