"""Metrics to ``metrics.jsonl`` always, and to TensorBoard when it is installed."""

from __future__ import annotations

import json
from pathlib import Path


class _NoTensorBoard:
    """Do-nothing stand-in used when TensorBoard is not installed."""

    def add_scalar(self, *args, **kwargs) -> None:
        pass

    def close(self) -> None:
        pass


def _tensorboard_writer(folder: Path):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except (ImportError, ModuleNotFoundError):
        return _NoTensorBoard()
    return SummaryWriter(log_dir=str(folder / "tensorboard"))


class MetricsLogger:
    """Appends one JSON line per record: ``{"step": s, "split": "train", "loss": ...}``."""

    def __init__(self, folder: str | Path | None, tensorboard: bool = True):
        self.path = None if folder is None else Path(folder) / "metrics.jsonl"
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        self.tb = _tensorboard_writer(Path(folder)) if (folder is not None and tensorboard) else _NoTensorBoard()

    def log(self, step: int, split: str, metrics: dict[str, float]) -> None:
        record = {"step": step, "split": split, **{k: float(v) for k, v in metrics.items()}}
        if self.path is not None:
            with self.path.open("a", encoding="utf-8") as f:
                f.write(json.dumps(record) + "\n")
        for k, v in metrics.items():
            self.tb.add_scalar(f"{split}/{k}", float(v), step)

    def close(self) -> None:
        self.tb.close()


def read_metrics(path: str | Path) -> list[dict]:
    """All records of a ``metrics.jsonl`` file."""
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]
