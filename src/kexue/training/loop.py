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

import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch

from kexue.errors import KexueError
from kexue.io import read_text, write_text
from kexue.progress import progress
from kexue.training import distributed as dist
from kexue.training.checkpoint import clean_checkpoint_temporaries, latest_checkpoint, load_checkpoint, save_checkpoint
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
        find_unused_parameters: under DDP, let a phase leave some parameters without gradient
            (e.g. the VAE's classifier while its autoencoder pre-trains); costs a graph walk.
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
    find_unused_parameters: bool = False

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

    def __init__(
        self, *tensors: torch.Tensor, batch_size: int, seed: int = 0, rank: int | None = None, world: int | None = None
    ):
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
        idx = self._perm[i * self.batch_size : (i + 1) * self.batch_size][self.rank :: self.world]
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


def _diverged(what: str, step: int, ckpt_dir: Path | None) -> KexueError:
    last = latest_checkpoint(ckpt_dir) if ckpt_dir is not None and ckpt_dir.is_dir() else None
    kept = f"; last good checkpoint: {last}" if last else "; no checkpoint was written yet"
    return KexueError(f"training diverged: {what} at step {step}, stopping (try a lower learning rate){kept}")


def _finite_norm(tensors) -> float:
    tensors = [t for t in tensors if t is not None]
    if not tensors:
        return 0.0
    return float(torch.nn.utils.get_total_norm(tensors))


def _rewind_metrics(out_dir: Path, step: int) -> dict:
    """Drop ``metrics.jsonl`` records after ``step`` (written after the checkpoint a resume starts
    from, so they would repeat) and return the last train and eval records up to it."""
    path = out_dir / "metrics.jsonl"
    last: dict = {"train": {}, "evals": []}
    if not path.is_file():
        return last
    kept = []
    for line in read_text(path, "metrics file").splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue  # a line cut by a kill
        if not isinstance(record, dict) or record.get("step", 0) > step:
            continue
        kept.append(line)
        if record.get("split") == "train":
            last["train"] = {k: v for k, v in record.items() if k not in ("step", "split", "lr")}
        elif record.get("split") == "eval":
            last["evals"].append({k: v for k, v in record.items() if k != "split"})
    write_text(path, "".join(line + "\n" for line in kept))
    return last


def fit(
    model: torch.nn.Module,
    loss_fn: LossFn,
    data: BatchSource,
    cfg: TrainConfig,
    out_dir: str | Path | None = None,
    eval_fn: EvalFn | None = None,
    resume: bool = False,
    desc: str = "train",
    until: int | None = None,
) -> FitResult:
    """Train ``model`` for ``cfg.steps`` optimizer steps.

    Args:
        model: the module to train, already on its device.
        loss_fn: ``(model, batch, generator) -> (loss, metrics)``; ``loss`` a scalar to minimise,
            ``metrics`` floats to log; ``generator`` is seeded per step for every random draw.
            A loss_fn with ``state_dict() -> {name: tensor}`` / ``load_state_dict(d)`` (state
            carried across batches, e.g. a recurrent state) is checkpointed with the model.
        data: gives the batch of each micro-step (see :class:`TensorBatches`).
        cfg: optimisation settings.
        out_dir: where ``metrics.jsonl`` and ``checkpoints/`` go; None keeps nothing on disk.
        eval_fn: ``(model) -> metrics``, run on rank 0 every ``cfg.eval_every`` steps and at the end.
        resume: continue from ``out_dir/checkpoints``; there must be a checkpoint to continue from.
        desc: label of the progress bar.
        until: stop (with a checkpoint) after this step instead of ``cfg.steps``; the schedule
            still spans ``cfg.steps``, so a later ``resume`` continues exactly.
    Returns:
        A :class:`FitResult`.
    Raises:
        KexueError: nothing to resume from; or training diverged: a non-finite loss, gradient,
            weight or evaluation metric (the last good checkpoint, always finite, is named).
    """
    device = next(model.parameters()).device
    raw_model = model
    if dist.is_distributed():
        ids = [device.index] if device.type == "cuda" else None
        # every loss calls the model through this wrapper, so gradients are averaged over ranks
        model = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=ids, find_unused_parameters=cfg.find_unused_parameters
        )
    optimizer = make_optimizer(raw_model.parameters(), cfg)
    ckpt_dir = Path(out_dir) / "checkpoints" if out_dir is not None else None
    stateful_loss = hasattr(loss_fn, "state_dict") and hasattr(loss_fn, "load_state_dict")
    start = 0
    sums: dict[str, float] = {}
    count = 0
    result = FitResult(step=0)
    if ckpt_dir is not None and ckpt_dir.is_dir() and dist.is_main():
        clean_checkpoint_temporaries(ckpt_dir)
    if resume:
        path = latest_checkpoint(ckpt_dir) if ckpt_dir is not None and ckpt_dir.is_dir() else None
        if path is None:
            where = ckpt_dir if ckpt_dir is not None else "memory"
            raise KexueError(f"--resume: no checkpoint to resume from in {where}")
        state = load_checkpoint(path, raw_model, optimizer)
        start = int(state["step"])
        if start > cfg.steps:
            raise KexueError(
                f"--resume: the checkpoint {path} is at step {start}, beyond the {cfg.steps} steps asked "
                "for; resume with at least that many steps"
            )
        extra = state.get("extra") or {}
        sums, count = dict(extra.get("log_sums", {})), int(extra.get("log_count", 0))
        if stateful_loss:
            loss_fn.load_state_dict(state.get("tensors", {}))
        if dist.is_main():
            last = _rewind_metrics(Path(out_dir), start)
            result.train, result.evals = last["train"], last["evals"]
        dist.barrier()
    result.step = start
    logger = MetricsLogger(out_dir if dist.is_main() else None)
    amp = cfg.amp and device.type == "cuda"
    generator = torch.Generator(device=device)
    t0 = time.perf_counter()
    bar = progress(total=cfg.steps, initial=start, desc=desc, enabled=cfg.progress and dist.is_main(), leave=False)

    def checkpoint(step: int) -> None:
        if ckpt_dir is not None and dist.is_main():
            tensors = loss_fn.state_dict() if stateful_loss else None
            save_checkpoint(
                ckpt_dir, raw_model, optimizer, step, extra={"log_sums": sums, "log_count": count}, tensors=tensors
            )
        dist.barrier()

    def evaluate(step: int) -> None:
        if eval_fn is None:
            return
        if dist.is_main():
            raw_model.eval()
            with torch.no_grad():
                metrics = eval_fn(raw_model)
            raw_model.train()
            bad = [k for k, v in metrics.items() if not math.isfinite(float(v))]
            if bad:
                raise _diverged(f"{bad[0]} is {metrics[bad[0]]}", step, ckpt_dir)
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
                finite = torch.isfinite(loss.detach()).float()
                if dist.is_distributed():  # every rank decides together, or the others would wait forever
                    finite = dist.all_reduce_mean(finite.reshape(1)).squeeze(0)
                if finite.item() < 1.0:
                    raise _diverged(f"loss is {loss.item()}", step, ckpt_dir)
                (loss / cfg.grad_accum).backward()
                for k, v in {"loss": loss.item(), **metrics}.items():
                    step_metrics[k] = step_metrics.get(k, 0.0) + float(v) / cfg.grad_accum
            if dist.is_distributed():  # log the global batch's averages, not rank 0's shard
                keys = sorted(step_metrics)
                means = dist.all_reduce_mean(torch.tensor([step_metrics[k] for k in keys], dtype=torch.float64))
                step_metrics = dict(zip(keys, means.tolist()))
            params = [p for p in raw_model.parameters() if p.grad is not None]
            if cfg.clip_norm:
                grad_norm = float(torch.nn.utils.clip_grad_norm_(params, cfg.clip_norm))
                step_metrics["grad_norm"] = grad_norm
            else:
                grad_norm = _finite_norm([p.grad for p in params])
            if not math.isfinite(grad_norm):
                raise _diverged(f"the gradient norm is {grad_norm}", step, ckpt_dir)
            optimizer.step()
            weight_norm = _finite_norm([p.detach() for p in raw_model.parameters()])
            if not math.isfinite(weight_norm):
                raise _diverged(f"the weights became {weight_norm}", step, ckpt_dir)
            for k, v in step_metrics.items():
                sums[k] = sums.get(k, 0.0) + v
            count += 1
            done = step + 1
            bar.update(1)
            if done % cfg.log_every == 0 or done == cfg.steps:
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
