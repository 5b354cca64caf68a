"""Checkpoints: safetensors weights + a small ``weights_only`` state file, written atomically.

Layout of a checkpoint folder::

    checkpoints/step-000400/model.safetensors   # weights (safetensors)
    checkpoints/step-000400/state.pt            # optimizer state and step (torch.save, loaded weights_only)
    checkpoints/latest                          # text: name of the newest complete folder

A folder is written under a temporary name and renamed when complete; ``latest`` is then
replaced atomically, so a crash never leaves a half-written checkpoint in use.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from kexue.errors import KexueError
from kexue.io import atomic_path, read_text, write_text


def save_weights(module: torch.nn.Module, path: str | Path, metadata: dict[str, str] | None = None) -> Path:
    """Save a module's state dict as safetensors, atomically (shared tensors are stored once each)."""
    state = {k: v.detach().contiguous().cpu() for k, v in module.state_dict().items()}
    with atomic_path(path) as tmp:
        save_file(_dedupe(state), str(tmp), metadata=metadata)
    return Path(path)


def _dedupe(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    # safetensors refuses tensors that share memory (tied weights): clone the later ones.
    seen: set[int] = set()
    out = {}
    for k, v in state.items():
        ptr = v.untyped_storage().data_ptr() if v.numel() else -1
        out[k] = v.clone() if ptr in seen else v
        seen.add(ptr)
    return out


def read_tensors(path: str | Path, what: str = "weights") -> dict[str, torch.Tensor]:
    """``{name: tensor}`` of a safetensors file; a missing or unreadable file is one KexueError naming ``what``."""
    path = Path(path)
    if not path.is_file():
        raise KexueError(f"{what} file not found: {path}")
    try:
        return load_file(str(path))
    except Exception as e:  # safetensors raises several types for a corrupt header
        raise KexueError(f"cannot read {what} {path}: {e}") from None


def load_weights(module: torch.nn.Module, path: str | Path, strict: bool = True) -> torch.nn.Module:
    """Load safetensors weights into ``module``; a missing or unreadable file is a KexueError."""
    path = Path(path)
    state = read_tensors(path)
    device = next((p.device for p in module.parameters()), torch.device("cpu"))
    try:
        module.load_state_dict({k: v.to(device) for k, v in state.items()}, strict=strict)
    except RuntimeError as e:
        first = str(e).strip().splitlines()[0]
        raise KexueError(f"weights {path} do not fit this model: {first}") from None
    return module


def _step_of(path: Path) -> int:
    try:
        return int(path.name.split("-", 1)[1])
    except (IndexError, ValueError):
        return -1


def _finite(module: torch.nn.Module) -> bool:
    return all(bool(torch.isfinite(t).all()) for t in module.state_dict().values() if t.is_floating_point())


def save_checkpoint(
    folder: str | Path,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    step: int,
    extra: dict | None = None,
    keep: int = 2,
    tensors: dict[str, torch.Tensor] | None = None,
) -> Path:
    """Write ``folder/step-XXXXXX/`` completely, then point ``folder/latest`` at it.

    Keeps the one just written and the ``keep - 1`` newest older ones. Checkpoints of later
    steps (left by an earlier, longer run in the same folder) are removed: they are not on this
    run's path. Non-finite weights are refused, so a kept checkpoint is always usable.
    """
    if not _finite(model):
        raise KexueError(f"refusing to checkpoint step {step}: the weights hold NaN or infinity")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    name = f"step-{step:06d}"
    tmp = folder / f".{name}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    save_weights(model, tmp / "model.safetensors")
    torch.save({"step": int(step), "optimizer": optimizer.state_dict(), "extra": extra or {}}, tmp / "state.pt")
    if tensors:
        with atomic_path(tmp / "extra.safetensors") as t:
            save_file(_dedupe({k: v.detach().contiguous().cpu() for k, v in tensors.items()}), str(t))
    final = folder / name
    shutil.rmtree(final, ignore_errors=True)
    tmp.rename(final)
    write_text(folder / "latest", name + "\n")
    others = sorted((p for p in folder.glob("step-*") if p.is_dir() and p != final), key=_step_of)
    older = [p for p in others if _step_of(p) < step]
    stale = [p for p in others if _step_of(p) > step] + older[: max(0, len(older) - (keep - 1))]
    for old in stale:
        shutil.rmtree(old, ignore_errors=True)
    return final


def clean_checkpoint_temporaries(folder: str | Path) -> None:
    """Remove half-written ``.step-*.tmp`` folders an interrupted save left behind."""
    for tmp in Path(folder).glob(".step-*.tmp"):
        shutil.rmtree(tmp, ignore_errors=True)


def _complete(path: Path) -> bool:
    return (path / "model.safetensors").is_file() and (path / "state.pt").is_file()


def latest_checkpoint(folder: str | Path) -> Path | None:
    """The newest complete checkpoint folder, or None when there is none.

    Follows ``latest``; if it names a missing or incomplete folder, falls back (with a warning)
    to the newest complete ``step-*`` folder.
    """
    folder = Path(folder)
    pointer = folder / "latest"
    named = None
    if pointer.is_file():
        named = folder / read_text(pointer, "checkpoint pointer").strip()
        if named.name.startswith("step-") and _complete(named):
            return named
    found = sorted((p for p in folder.glob("step-*") if p.is_dir() and _complete(p)), key=_step_of)
    if named is not None and found:
        print(
            f"kexue: warning: {pointer} names {named.name}, which is missing or incomplete; using {found[-1].name}",
            file=sys.stderr,
        )
    return found[-1] if found else None


def load_checkpoint(path: str | Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer | None = None) -> dict:
    """Restore weights (and optimizer state) from a checkpoint folder; returns its state dict."""
    path = Path(path)
    load_weights(model, path / "model.safetensors")
    state_path = path / "state.pt"
    if not state_path.is_file():
        raise KexueError(f"checkpoint state not found: {state_path}")
    try:
        state = torch.load(state_path, map_location="cpu", weights_only=True)
        if not isinstance(state, dict) or "step" not in state:
            raise ValueError("no step recorded")
        if optimizer is not None:
            optimizer.load_state_dict(state["optimizer"])
    except Exception:  # torch.load raises many types, with long messages, on a corrupt or foreign file
        raise KexueError(
            f"cannot read checkpoint state {state_path}: corrupt, truncated, or not written by "
            "kexue (delete that checkpoint folder to resume from the one before)"
        ) from None
    extra_path = path / "extra.safetensors"
    if extra_path.is_file():
        state["tensors"] = read_tensors(extra_path, "checkpoint tensors")
    return state
