"""Training loop: augmentation, schedules, real optimisation, reproducibility, resume, CLI errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from torch import nn

from netmorph.data import Dataset, make_synthetic
from netmorph.errors import NetmorphError
from netmorph.train import (
    CHECKPOINT_NAME,
    METRICS_NAME,
    TrainConfig,
    TrainConfigError,
    crop_flip,
    evaluate,
    fit,
    load_checkpoint,
    lr_factor,
    predict,
    random_crop_flip,
    read_metrics,
)


def small_cnn(classes: int = 4, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        nn.Linear(16, classes),
    )


@pytest.fixture(scope="module")
def tiny():
    return make_synthetic(384, 96, num_classes=4, size=8, seed=1)


def cfg(**kw) -> TrainConfig:
    base = dict(epochs=3, batch_size=32, lr=0.1, device="cpu", pad=2, num_threads=1, seed=7)
    return TrainConfig(**{**base, **kw})


def same_state(a: nn.Module, b: nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


# -- augmentation -------------------------------------------------------------------------------
def test_crop_flip_exact_values():
    x = torch.arange(2 * 3 * 5 * 6, dtype=torch.float32).reshape(2, 3, 5, 6)
    centre = torch.full((2,), 2)
    no = torch.zeros(2, dtype=torch.bool)
    assert torch.equal(crop_flip(x, 2, centre, centre, no), x)  # centred crop = identity
    assert torch.equal(crop_flip(x, 2, centre, centre, ~no), x.flip(3))  # flip is an exact mirror
    padded = torch.nn.functional.pad(x, (2, 2, 2, 2))
    dy, dx = torch.tensor([0, 4]), torch.tensor([3, 1])
    out = crop_flip(x, 2, dy, dx, torch.tensor([False, True]))
    assert torch.equal(out[0], padded[0, :, 0:5, 3:9])
    assert torch.equal(out[1], padded[1, :, 4:9, 1:7].flip(2))
    assert out[0, :, :2].abs().sum() == 0  # shifted down by 2: the top rows are padding


def test_random_crop_flip_stays_within_pad_and_is_seeded():
    x = torch.rand(64, 3, 8, 8) + 1  # strictly positive: padding shows up as zeros
    gen = torch.Generator().manual_seed(0)
    out = random_crop_flip(x, 3, True, gen)
    assert out.shape == x.shape
    padded = torch.nn.functional.pad(x, (3, 3, 3, 3))
    flips = 0
    for b in range(64):  # each output is one window of the padded image, possibly mirrored
        windows = [(padded[b, :, i:i + 8, j:j + 8], f) for i in range(7) for j in range(7) for f in (0, 1)]
        hits = [f for w, f in windows if torch.equal(out[b], w.flip(2) if f else w)]
        assert hits, f"sample {b} is not a crop of its padded image"
        flips += hits[0]
    assert 10 < flips < 54  # both flipped and unflipped samples occur
    again = random_crop_flip(x, 3, True, torch.Generator().manual_seed(0))
    other = random_crop_flip(x, 3, True, torch.Generator().manual_seed(1))
    assert torch.equal(out, again) and not torch.equal(out, other)
    assert torch.equal(random_crop_flip(x, 0, False, gen), x)


# -- schedule and config ------------------------------------------------------------------------
def test_paper_step_schedule_and_variants():
    paper = TrainConfig()
    assert (paper.lr, paper.batch_size, paper.momentum, paper.weight_decay) == (0.1, 256, 0.9, 1e-4)
    f = [lr_factor(e * 10, paper, 10) for e in (0, 159, 160, 239, 240, 319)]
    assert f == pytest.approx([1, 1, 0.1, 0.1, 0.01, 0.01])
    cos = TrainConfig(epochs=10, schedule="cosine")
    assert lr_factor(0, cos, 10) == 1 and lr_factor(50, cos, 10) == pytest.approx(0.5)
    assert lr_factor(99, cos, 10) < 1e-3
    warm = TrainConfig(epochs=10, schedule="constant", warmup_epochs=1)
    assert [lr_factor(s, warm, 4) for s in (0, 1, 3, 4, 30)] == pytest.approx([0.25, 0.5, 1, 1, 1])


@pytest.mark.parametrize("kw, message", [
    ({"optimizer": "rmsprop"}, "optimizer must be one of"),
    ({"schedule": "poly"}, "schedule must be one of"),
    ({"amp": "fp8"}, "amp must be one of"),
    ({"batch_size": 0}, "batch_size must be >= 1"),
    ({"device": "tpu"}, "device must be one of"),
])
def test_config_rejects_bad_values(kw, message):
    with pytest.raises(TrainConfigError, match=message):
        TrainConfig(**kw)


def test_fit_refuses_bad_setups(tiny):
    with pytest.raises(TrainConfigError, match="fp16' needs a CUDA device"):
        fit(small_cnn(), tiny.train, tiny.test, cfg(amp="fp16"), progress=False)
    with pytest.raises(TrainConfigError, match="resume needs an out_dir"):
        fit(small_cnn(), tiny.train, tiny.test, cfg(), resume=True, progress=False)
    other = make_synthetic(40, 8, num_classes=4, size=10, seed=0)
    with pytest.raises(NetmorphError, match="images"):
        fit(small_cnn(), tiny.train, other.test, cfg(), progress=False)
    if not torch.cuda.is_available():
        with pytest.raises(TrainConfigError, match="CUDA is not available"):
            fit(small_cnn(), tiny.train, tiny.test, cfg(device="cuda"), progress=False)


# -- real training --------------------------------------------------------------------------------
def test_short_run_learns_and_logs(tiny, tmp_path, capsys):
    result = fit(small_cnn(), tiny.train, tiny.test, cfg(epochs=3, schedule="constant"), out_dir=tmp_path)
    losses = [r["train_loss"] for r in result.history]
    assert losses[-1] < 0.5 * losses[0], losses
    assert result.test_err < 0.3 and result.test_err == result.history[-1]["test_err"]
    records = read_metrics(tmp_path / METRICS_NAME)
    assert [r["epoch"] for r in records] == [1, 2, 3] and records == result.history
    assert {"lr", "train_err", "test_loss", "images_per_s", "seconds"} <= records[0].keys()
    assert "epoch 3/3" in capsys.readouterr().err  # progress on stderr
    # evaluate/predict agree with the logged final metrics
    loss, err = evaluate(result.module, tiny.test, device="cpu")
    assert err == pytest.approx(result.test_err) and loss == pytest.approx(result.history[-1]["test_loss"])
    assert np.mean(predict(result.module, tiny.test, device="cpu") != tiny.test.labels) == pytest.approx(err)


def test_lossless_error_is_reported(tiny):
    mask = np.arange(len(tiny.test)) % 3 == 0
    test = Dataset(tiny.test.images, tiny.test.labels, 4, tiny.train.mean, tiny.train.std, lossless=mask)
    result = fit(small_cnn(), tiny.train, test, cfg(epochs=1), progress=False)
    model = result.module
    wrong = predict(model, test, device="cpu") != test.labels
    assert result.history[0]["test_err_lossless"] == pytest.approx(wrong[mask].mean())


def test_same_seed_same_weights_other_seed_differs(tiny):
    def run(**kw):
        return fit(small_cnn(), tiny.train, tiny.test, cfg(epochs=2, warmup_epochs=0.5, **kw), progress=False)

    a, b, c = run().module, run().module, run(seed=8).module
    assert same_state(a, b)
    assert not same_state(a, c)


@pytest.mark.parametrize("optimizer", ["nesterov", "adam"])
def test_other_optimizers_and_bf16_train(tiny, optimizer):
    lr = 0.01 if optimizer == "adam" else 0.1
    result = fit(small_cnn(), tiny.train, tiny.test, cfg(epochs=2, optimizer=optimizer, lr=lr, amp="bf16",
                                                          schedule="cosine"), progress=False)
    losses = [r["train_loss"] for r in result.history]
    assert np.isfinite(losses).all() and losses[1] < losses[0]


def test_interrupted_then_resumed_equals_uninterrupted(tiny, tmp_path):
    config = cfg(epochs=3)  # step schedule: the lr drops inside the resumed part
    full = fit(small_cnn(), tiny.train, tiny.test, config, progress=False)
    first = fit(small_cnn(), tiny.train, tiny.test, config, out_dir=tmp_path, progress=False,
                on_epoch=lambda record: "stop" if record["epoch"] == 1 else None)
    assert first.stopped and first.epochs_done == 1
    state = load_checkpoint(tmp_path / CHECKPOINT_NAME)  # weights_only=True inside
    assert state["epoch"] == 1 and isinstance(state["rng"]["torch"], torch.Tensor)
    assert {"model", "optimizer", "scheduler", "history"} <= state.keys()
    resumed = fit(small_cnn(seed=99), tiny.train, tiny.test, config, out_dir=tmp_path, resume=True,
                  progress=False)
    assert not resumed.stopped and resumed.epochs_done == 3
    assert same_state(resumed.module, full.module)
    assert [r["epoch"] for r in read_metrics(tmp_path / METRICS_NAME)] == [1, 2, 3]
    assert [r["test_err"] for r in resumed.history] == [r["test_err"] for r in full.history]


def test_on_epoch_exception_keeps_the_checkpoint(tiny, tmp_path):
    def boom(record):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        fit(small_cnn(), tiny.train, tiny.test, cfg(epochs=2), out_dir=tmp_path, on_epoch=boom,
            progress=False)
    assert load_checkpoint(tmp_path / CHECKPOINT_NAME)["epoch"] == 1
    assert not list(tmp_path.glob(".*tmp"))  # no temporary files left behind


def test_corrupt_checkpoint_is_a_clear_error(tiny, tmp_path):
    (tmp_path / CHECKPOINT_NAME).write_bytes(b"garbage")
    with pytest.raises(TrainConfigError, match="checkpoint.pt: cannot read checkpoint"):
        fit(small_cnn(), tiny.train, tiny.test, cfg(), out_dir=tmp_path, resume=True, progress=False)


# -- CLI ------------------------------------------------------------------------------------------
def run_cli(*args):
    from netmorph.cli.main import cli

    return CliRunner().invoke(cli, ["train", *map(str, args)])


def test_cli_bad_inputs_exit_2_one_line(tmp_path, torch_cnn_onnx):
    out = tmp_path / "out.onnx"
    r = run_cli(torch_cnn_onnx, "--data", "imagenet:/x", "-o", out)
    assert r.exit_code == 2 and "unknown kind 'imagenet'" in r.output
    assert len(r.output.strip().splitlines()) == 1
    r = run_cli(tmp_path / "missing.onnx", "--data", "synthetic", "-o", out)
    assert r.exit_code == 2 and "missing.onnx" in r.output
    (tmp_path / "junk.onnx").write_bytes(b"\x00junk")
    r = run_cli(tmp_path / "junk.onnx", "--data", "synthetic:20", "-o", out)
    assert r.exit_code == 2 and "junk.onnx" in r.output and len(r.output.strip().splitlines()) == 1
    r = run_cli(torch_cnn_onnx, "--data", f"npz:{tmp_path / 'none.npz'}", "-o", out)
    assert r.exit_code == 2 and "none.npz: no such data file" in r.output
    s = make_synthetic(20, 10, size=32, seed=0)  # synthetic data follows the model: mismatch via .npz
    np.savez(tmp_path / "d32.npz", x_train=s.train.images, y_train=s.train.labels, x_test=s.test.images,
             y_test=s.test.labels)
    r = run_cli(torch_cnn_onnx, "--data", f"npz:{tmp_path / 'd32.npz'}", "--epochs", "1", "-o", out)
    assert r.exit_code == 2 and "expects height 16 but the data has 32" in r.output
    r = run_cli(torch_cnn_onnx, "--data", "synthetic:20", "-o", tmp_path / "nodir" / "x.onnx")
    assert r.exit_code == 2 and "output folder does not exist" in r.output
    assert not out.exists()


def test_cli_trains_and_writes_back(tmp_path, torch_cnn_onnx):
    """End to end: ONNX -> lower -> fit -> write_back -> ONNX; ORT reproduces the torch accuracy."""
    import onnxruntime as ort

    import netmorph
    from netmorph.data import load_npz
    from netmorph.train import normalized_inputs

    s = make_synthetic(256, 64, num_classes=10, size=16, seed=2)
    data = tmp_path / "d.npz"
    np.savez(data, x_train=s.train.images, y_train=s.train.labels, x_test=s.test.images, y_test=s.test.labels)
    out = tmp_path / "trained.onnx"
    r = run_cli(torch_cnn_onnx, "--data", f"npz:{data}", "--epochs", "2", "--batch-size", "64",
                "--num-threads", "1", "--out-dir", tmp_path / "run", "-q", "--json", "-o", out)
    assert r.exit_code == 0, r.output
    final = json.loads(r.output.strip().splitlines()[-1])
    assert final["epoch"] == 2 and (tmp_path / "run" / CHECKPOINT_NAME).is_file()
    sess = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    test = load_npz(data).test
    logits = sess.run(None, {sess.get_inputs()[0].name: normalized_inputs(test)})[0]
    ort_pred = logits.argmax(1)
    assert np.mean(ort_pred != test.labels) == pytest.approx(final["test_err"])
    # and the same predictions as the trained torch module (weights from the checkpoint)
    module = netmorph.lower(netmorph.load(torch_cnn_onnx))
    module.load_state_dict(load_checkpoint(tmp_path / "run" / CHECKPOINT_NAME)["model"])
    assert np.array_equal(predict(module, test, device="cpu"), ort_pred)
    assert not np.array_equal(netmorph.load(out).parameters[0].const.array,
                              netmorph.load(torch_cnn_onnx).parameters[0].const.array)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("amp, channels_last, compile_", [("fp16", True, False), ("bf16", False, True)])
def test_cuda_mixed_precision_channels_last_compile(tiny, tmp_path, amp, channels_last, compile_):
    config = cfg(epochs=3, device="cuda", amp=amp, channels_last=channels_last, compile=compile_,
                 schedule="constant")
    result = fit(small_cnn(), tiny.train, tiny.test, config, out_dir=tmp_path, progress=False)
    losses = [r["train_loss"] for r in result.history]
    assert np.isfinite(losses).all() and losses[-1] < 0.7 * losses[0], losses
    assert next(result.module.parameters()).is_cuda
    state = load_checkpoint(tmp_path / CHECKPOINT_NAME)
    assert state["rng"]["cuda"] and state["scaler"] is not None
    resumed = fit(small_cnn(), tiny.train, tiny.test, config.replace(epochs=4), out_dir=tmp_path, resume=True,
                  progress=False)
    assert resumed.epochs_done == 4


def test_schedule_segments_match_the_whole_schedule():
    whole = TrainConfig(epochs=10, schedule="cosine", warmup_epochs=1)
    part = whole.replace(epochs=4, schedule_epochs=10, schedule_offset=6)
    assert [lr_factor(s, part, 5) for s in range(20)] == [lr_factor(30 + s, whole, 5) for s in range(20)]
    step = TrainConfig(epochs=8).replace(epochs=3, schedule_epochs=8, schedule_offset=4)
    assert [lr_factor(s * 2, step, 2) for s in range(3)] == pytest.approx([0.1, 0.1, 0.01])
