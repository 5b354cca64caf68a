"""``fit()``: the one training loop every model in kexue uses.

Everything a training run does is visible here in one function: per-step seeding, gradient
accumulation, AMP on CUDA, clipping, the learning-rate schedule, evaluation, checkpoints,
exact resume, metrics and DDP.

Exact resume works because nothing random carries over between steps: the batch of step ``s``
is a pure function of ``(seed, s)`` (:class:`TensorBatches`) and the random draws inside step
``s`` come from a generator seeded with ``(seed, s, rank)``. A checkpoint then only needs the
weights, the optimizer state and ``s``.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Protocol

import torch
from tqdm.auto import tqdm

from kexue.errors import KexueError
from kexue.training import distributed as dist
from kexue.training.checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint
from kexue.training.logging import MetricsLogger

LossFn = Callable[[torch.nn.Module, Any, torch.Generator], "tuple[torch.Tensor, dict[str, float]]"]
EvalFn = Callable[[torch.nn.Module], "dict[str, float]"]


@dataclass
class TrainConfig:
    """Optimisation settings shared by every model.

    Attributes:
        steps: optimizer steps to run in total (a resumed run continues up to this number).
        lr: peak learning rate.
        weight_decay: decoupled weight decay (AdamW) or L2 (SGD).
        optimizer: ``adam``, ``adamw`` or ``sgd``.
        betas: Adam betas.
        schedule: ``constant``, ``cosine`` or ``linear`` decay after warm-up.
        warmup_steps: linear warm-up steps.
        min_lr_ratio: floor of the decay as a fraction of ``lr``.
        clip_norm: clip the global gradient norm to this; None or 0 turns clipping off.
        grad_accum: micro-batches per optimizer step.
        eval_every: run ``eval_fn`` every N steps (and at the end); 0 only at the end.
        ckpt_every: checkpoint every N steps (and at the end); 0 only at the end.
        log_every: write averaged training metrics every N steps.
        seed: seeds initial batches and every per-step random draw.
        amp: bfloat16 autocast when the model is on CUDA (ignored on CPU).
        progress: show a tqdm progress bar.
    """

    steps: int = 1000
    lr: float = 1e-3
    weight_decay: float = 0.0
    optimizer: str = "adam"
    betas: tuple[float, float] = (0.9, 0.999)
    schedule: str = "constant"
    warmup_steps: int = 0
    min_lr_ratio: float = 0.0
    clip_norm: float | None = 1.0
    grad_accum: int = 1
    eval_every: int = 0
    ckpt_every: int = 0
    log_every: int = 50
    seed: int = 0
    amp: bool = True
    progress: bool = True

    def __post_init__(self) -> None:
        if self.steps < 1:
            raise KexueError(f"steps must be >= 1, got {self.steps}")
        if self.optimizer not in ("adam", "adamw", "sgd"):
            raise KexueError(f"optimizer must be adam, adamw or sgd, got {self.optimizer!r}")
        if self.schedule not in ("constant", "cosine", "linear"):
            raise KexueError(f"schedule must be constant, cosine or linear, got {self.schedule!r}")
        if self.grad_accum < 1:
            raise KexueError(f"grad_accum must be >= 1, got {self.grad_accum}")


class BatchSource(Protocol):
    """Anything that returns the (local) batch of a given micro-step, deterministically."""

    def batch(self, micro_step: int) -> Any: ...


class TensorBatches:
    """Shuffled mini-batches over aligned tensors; batch ``i`` depends only on ``(seed, i)``.

    Each epoch draws a fresh permutation from ``seed + epoch``; the last incomplete batch of an
    epoch is dropped. Under DDP each rank takes rows ``rank::world`` of the global batch, so N
    ranks with global batch B see exactly what one process with batch B sees.

    Example: ``TensorBatches(x, y, batch_size=100, seed=0).batch(7)`` -> ``(x[idx], y[idx])``.
    """

    def __init__(self, *tensors: torch.Tensor, batch_size: int, seed: int = 0,
                 rank: int | None = None, world: int | None = None):
        if not tensors:
            raise ValueError("TensorBatches needs at least one tensor")
        n = len(tensors[0])
        if any(len(t) != n for t in tensors):
            raise ValueError("all tensors must have the same first dimension")
        if batch_size > n:
            raise KexueError(f"batch size {batch_size} exceeds the number of examples {n}")
        self.tensors, self.batch_size, self.seed, self.n = tensors, batch_size, seed, n
        self.rank = dist.rank() if rank is None else rank
        self.world = dist.world_size() if world is None else world
        if batch_size % self.world:
            raise KexueError(f"batch size {batch_size} is not divisible by {self.world} processes")
        self.per_epoch = n // batch_size
        self._perm_epoch, self._perm = -1, None

    def batch(self, micro_step: int):
        epoch, i = divmod(micro_step, self.per_epoch)
        if epoch != self._perm_epoch:
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            self._perm, self._perm_epoch = torch.randperm(self.n, generator=g), epoch
        idx = self._perm[i * self.batch_size:(i + 1) * self.batch_size][self.rank::self.world]
        out = tuple(t[idx] for t in self.tensors)
        return out if len(out) > 1 else out[0]


@dataclass
class FitResult:
    """What a run ended with: the last step, the last averaged training metrics, evaluations."""

    step: int
    train: dict[str, float] = field(default_factory=dict)
    evals: list[dict[str, float]] = field(default_factory=list)
    seconds: float = 0.0


def lr_factor(step: int, cfg: TrainConfig) -> float:
    """Multiplier of ``cfg.lr`` at optimizer step ``step`` (0-based)."""
    if cfg.warmup_steps and step < cfg.warmup_steps:
        return (step + 1) / cfg.warmup_steps
    if cfg.schedule == "constant":
        return 1.0
    span = max(1, cfg.steps - cfg.warmup_steps)
    t = min(1.0, (step - cfg.warmup_steps) / span)
    decay = 0.5 * (1 + math.cos(math.pi * t)) if cfg.schedule == "cosine" else 1 - t
    return cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * decay


def make_optimizer(params, cfg: TrainConfig) -> torch.optim.Optimizer:
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, weight_decay=cfg.weight_decay, momentum=0.9)
    cls = torch.optim.AdamW if cfg.optimizer == "adamw" else torch.optim.Adam
    return cls(params, lr=cfg.lr, betas=cfg.betas, weight_decay=cfg.weight_decay)


def to_device(batch: Any, device: torch.device) -> Any:
    """Move tensors inside tuples, lists and dicts to ``device``."""
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, (tuple, list)):
        return type(batch)(to_device(b, device) for b in batch)
    if isinstance(batch, dict):
        return {k: to_device(v, device) for k, v in batch.items()}
    return batch


def step_seed(seed: int, step: int, rank: int = 0) -> int:
    """The seed of every random draw inside optimizer step ``step`` on ``rank``."""
    return (seed * 1_000_003 + step) * 1_009 + rank


def fit(model: torch.nn.Module, loss_fn: LossFn, data: BatchSource, cfg: TrainConfig,
        out_dir: str | Path | None = None, eval_fn: EvalFn | None = None, resume: bool = False,
        desc: str = "train", until: int | None = None) -> FitResult:
    """Train ``model`` for ``cfg.steps`` optimizer steps.

    Args:
        model: the module to train, already on its device.
        loss_fn: ``(model, batch, generator) -> (loss, metrics)``; ``loss`` a scalar to minimise,
            ``metrics`` floats to log; ``generator`` is seeded per step for every random draw.
        data: gives the batch of each micro-step (see :class:`TensorBatches`).
        cfg: optimisation settings.
        out_dir: where ``metrics.jsonl`` and ``checkpoints/`` go; None keeps nothing on disk.
        eval_fn: ``(model) -> metrics``, run on rank 0 every ``cfg.eval_every`` steps and at the end.
        resume: continue from ``out_dir/checkpoints/latest`` if there is one.
        desc: label of the progress bar.
        until: stop (with a checkpoint) after this step instead of ``cfg.steps``; the schedule
            still spans ``cfg.steps``, so a later ``resume`` continues exactly.
    Returns:
        A :class:`FitResult`.
    Raises:
        KexueError: the loss became NaN or infinite (the last good checkpoint is kept).
    """
    device = next(model.parameters()).device
    raw_model = model
    if dist.is_distributed():
        ids = [device.index] if device.type == "cuda" else None
        model = torch.nn.parallel.DistributedDataParallel(model, device_ids=ids)
    optimizer = make_optimizer(raw_model.parameters(), cfg)
    ckpt_dir = Path(out_dir) / "checkpoints" if out_dir is not None else None
    start = 0
    if resume and ckpt_dir is not None and (path := latest_checkpoint(ckpt_dir)) is not None:
        start = int(load_checkpoint(path, raw_model, optimizer)["step"])
    logger = MetricsLogger(out_dir if dist.is_main() else None)
    amp = cfg.amp and device.type == "cuda"
    generator = torch.Generator(device=device)
    result = FitResult(step=start)
    sums: dict[str, float] = {}
    count = 0
    t0 = time.perf_counter()
    bar = tqdm(total=cfg.steps, initial=start, desc=desc, disable=not (cfg.progress and dist.is_main()),
               dynamic_ncols=True, leave=False)

    def checkpoint(step: int) -> None:
        if ckpt_dir is not None and dist.is_main():
            save_checkpoint(ckpt_dir, raw_model, optimizer, step)
        dist.barrier()

    def evaluate(step: int) -> None:
        if eval_fn is None:
            return
        if dist.is_main():
            raw_model.eval()
            with torch.no_grad():
                metrics = eval_fn(raw_model)
            raw_model.train()
            logger.log(step, "eval", metrics)
            result.evals.append({"step": step, **metrics})
        dist.barrier()

    end = cfg.steps if until is None else min(until, cfg.steps)
    model.train()
    try:
        for step in range(start, end):
            seed = step_seed(cfg.seed, step, dist.rank())
            torch.manual_seed(seed)  # dropout and other global-RNG draws
            generator.manual_seed(seed)
            for group in optimizer.param_groups:
                group["lr"] = cfg.lr * lr_factor(step, cfg)
            optimizer.zero_grad(set_to_none=True)
            step_metrics: dict[str, float] = {}
            for micro in range(cfg.grad_accum):
                batch = to_device(data.batch(step * cfg.grad_accum + micro), device)
                with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=amp):
                    loss, metrics = loss_fn(model, batch, generator)
                if not torch.isfinite(loss):
                    last = latest_checkpoint(ckpt_dir) if ckpt_dir is not None else None
                    kept = f"; last good checkpoint: {last}" if last else "; no checkpoint was written yet"
                    raise KexueError(f"loss is {loss.item()} at step {step}, stopping{kept}")
                (loss / cfg.grad_accum).backward()
                for k, v in {"loss": loss.item(), **metrics}.items():
                    step_metrics[k] = step_metrics.get(k, 0.0) + float(v) / cfg.grad_accum
            if cfg.clip_norm:
                step_metrics["grad_norm"] = float(torch.nn.utils.clip_grad_norm_(raw_model.parameters(), cfg.clip_norm))
            optimizer.step()
            for k, v in step_metrics.items():
                sums[k] = sums.get(k, 0.0) + v
            count += 1
            done = step + 1
            bar.update(1)
            if done % cfg.log_every == 0 or done == end:
                result.train = {k: v / count for k, v in sums.items()}
                logger.log(done, "train", {**result.train, "lr": optimizer.param_groups[0]["lr"]})
                bar.set_postfix(loss=f"{result.train['loss']:.4g}")
                sums, count = {}, 0
            if cfg.eval_every and done % cfg.eval_every == 0 and done != end:
                evaluate(done)
            if cfg.ckpt_every and done % cfg.ckpt_every == 0 and done != end:
                checkpoint(done)
            result.step = done
        if start < end:
            evaluate(end)
            checkpoint(end)
    finally:
        bar.close()
        logger.close()
    result.seconds = time.perf_counter() - t0
    return result
