"""Run under torchrun by tests/test_training.py: the same tiny regression, 1 or N processes."""

import json
import sys

import torch

from kexue.training import TensorBatches, TrainConfig, distributed, fit


def main(out: str) -> None:
    distributed.init_from_env("gloo")
    torch.manual_seed(0)
    x = torch.randn(64, 5, generator=torch.Generator().manual_seed(1))
    y = x @ torch.arange(1.0, 6.0) + 0.1
    model = torch.nn.Sequential(torch.nn.Linear(5, 8), torch.nn.Tanh(), torch.nn.Linear(8, 1))
    cfg = TrainConfig(steps=12, lr=0.05, optimizer="sgd", clip_norm=None, progress=False, log_every=4)
    fit(
        model,
        lambda m, b, g: (((m(b[0]).squeeze(-1) - b[1]) ** 2).mean(), {}),
        TensorBatches(x, y, batch_size=16, seed=3),
        cfg,
    )
    if distributed.is_main():
        with open(out, "w") as f:
            json.dump([p.detach().flatten().tolist() for p in model.parameters()], f)
    distributed.shutdown()


if __name__ == "__main__":
    main(sys.argv[1])
