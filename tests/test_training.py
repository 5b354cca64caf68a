import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from kexue.errors import KexueError
from kexue.training import TensorBatches, TrainConfig, fit
from kexue.training.checkpoint import latest_checkpoint, load_checkpoint
from kexue.training.logging import read_metrics
from kexue.training.loop import lr_factor


def _problem():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(96, 6, generator=g)
    y = (x[:, :3].sum(1) > 0).long()
    return x, y


def _model():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(6, 16), torch.nn.ReLU(), torch.nn.Dropout(0.3), torch.nn.Linear(16, 2))


def _loss(m, batch, g):
    x, y = batch
    noise = 0.01 * torch.randn(x.shape, generator=g)  # a per-step random draw, like a VAE's ε
    loss = torch.nn.functional.cross_entropy(m(x + noise), y)
    return loss, {"acc": (m(x).argmax(-1) == y).float().mean().item()}


CFG = dict(steps=20, lr=3e-3, schedule="cosine", warmup_steps=3, clip_norm=1.0, progress=False, log_every=5)


def test_resume_is_bit_identical(tmp_path):
    x, y = _problem()
    straight = _model()
    fit(straight, _loss, TensorBatches(x, y, batch_size=16, seed=1), TrainConfig(**CFG), tmp_path / "a")

    resumed = _model()
    fit(resumed, _loss, TensorBatches(x, y, batch_size=16, seed=1), TrainConfig(**CFG), tmp_path / "b", until=10)
    assert latest_checkpoint(tmp_path / "b" / "checkpoints").name == "step-000010"
    fresh = _model()  # a new process would start from fresh weights
    result = fit(
        fresh, _loss, TensorBatches(x, y, batch_size=16, seed=1), TrainConfig(**CFG), tmp_path / "b", resume=True
    )
    assert result.step == 20
    for p, q in zip(straight.parameters(), fresh.parameters()):
        assert torch.equal(p, q)


def test_training_learns_and_logs(tmp_path):
    x, y = _problem()
    model = _model()
    evals = []
    res = fit(
        model,
        _loss,
        TensorBatches(x, y, batch_size=16, seed=1),
        TrainConfig(**{**CFG, "steps": 120, "lr": 1e-2, "eval_every": 40}),
        tmp_path,
        eval_fn=lambda m: evals.append(1) or {"acc": (m(x).argmax(-1) == y).float().mean().item()},
    )
    records = read_metrics(tmp_path / "metrics.jsonl")
    train = [r for r in records if r["split"] == "train"]
    assert train[-1]["loss"] < 0.5 * train[0]["loss"]
    assert [r["step"] for r in records if r["split"] == "eval"] == [40, 80, 120]
    assert res.evals[-1]["acc"] > 0.9
    state = load_checkpoint(latest_checkpoint(tmp_path / "checkpoints"), _model())
    assert state["step"] == 120


def test_nan_loss_stops_and_keeps_last_good_checkpoint(tmp_path):
    x, y = _problem()

    calls = []

    def loss_fn(m, batch, g):
        calls.append(1)
        loss, metrics = _loss(m, batch, g)
        return (loss * float("nan") if len(calls) > 5 else loss), metrics

    with pytest.raises(KexueError, match=r"loss is nan at step 5.*step-000004"):
        fit(_model(), loss_fn, TensorBatches(x, y, batch_size=16), TrainConfig(**{**CFG, "ckpt_every": 2}), tmp_path)
    assert latest_checkpoint(tmp_path / "checkpoints").name == "step-000004"
    assert not list((tmp_path / "checkpoints").glob(".*tmp"))


def test_batches_are_deterministic_and_shard_the_global_batch():
    x = torch.arange(40).float()
    full = TensorBatches(x, batch_size=8, seed=5, rank=0, world=1)
    halves = [TensorBatches(x, batch_size=8, seed=5, rank=r, world=2) for r in range(2)]
    for step in (0, 3, 7, 12):
        b = full.batch(step)
        assert torch.equal(torch.sort(torch.cat([h.batch(step) for h in halves])).values, torch.sort(b).values)
    epoch = torch.cat([full.batch(i) for i in range(5)])
    assert torch.equal(torch.sort(epoch).values, x)  # one epoch visits every example once


def test_lr_schedule_values():
    cfg = TrainConfig(steps=10, schedule="linear", warmup_steps=2, progress=False)
    assert [round(lr_factor(s, cfg), 6) for s in (0, 1, 2, 6, 10)] == [0.5, 1.0, 1.0, 0.5, 0.0]
    cos = TrainConfig(steps=4, schedule="cosine", progress=False)
    assert lr_factor(2, cos) == pytest.approx(0.5)


def test_bad_config_is_a_clear_error():
    with pytest.raises(KexueError, match="optimizer"):
        TrainConfig(optimizer="lion")
    with pytest.raises(KexueError, match="exceeds"):
        TensorBatches(torch.zeros(4), batch_size=8)


@pytest.mark.slow
def test_ddp_two_gloo_processes_match_one(tmp_path):
    worker = Path(__file__).with_name("ddp_worker.py")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    outs = {}
    for n in (1, 2):
        out = tmp_path / f"p{n}.json"
        cmd = [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--nproc_per_node",
            str(n),
            "--master_port",
            str(29500 + n + os.getpid() % 1000),
            str(worker),
            str(out),
        ]
        subprocess.run(cmd, check=True, env=env, capture_output=True, timeout=120)
        outs[n] = json.loads(out.read_text())
    for a, b in zip(outs[1], outs[2]):
        assert torch.allclose(torch.tensor(a), torch.tensor(b), atol=1e-5)


def test_gradient_accumulation_matches_the_large_batch():
    x, y = _problem()

    def loss_fn(m, batch, g):
        return torch.nn.functional.cross_entropy(m(batch[0]), batch[1]), {}

    def model():
        torch.manual_seed(0)
        return torch.nn.Sequential(torch.nn.Linear(6, 16), torch.nn.Tanh(), torch.nn.Linear(16, 2))

    big, small = model(), model()
    cfg = dict(steps=10, lr=1e-2, clip_norm=None, progress=False)
    fit(big, loss_fn, TensorBatches(x, y, batch_size=16, seed=2), TrainConfig(**cfg))
    fit(small, loss_fn, TensorBatches(x, y, batch_size=8, seed=2), TrainConfig(**cfg, grad_accum=2))
    for p, q in zip(big.parameters(), small.parameters()):
        assert torch.allclose(p, q, atol=1e-6)
