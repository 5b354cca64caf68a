"""One training loop for every model: :func:`fit`, with checkpoints, resume and DDP."""

from kexue.training.loop import FitResult, TensorBatches, TrainConfig, fit

__all__ = ["FitResult", "TensorBatches", "TrainConfig", "fit"]
