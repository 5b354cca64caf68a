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
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from kexue.errors import KexueError
from kexue.io import atomic_path, write_text


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


def load_weights(module: torch.nn.Module, path: str | Path, strict: bool = True) -> torch.nn.Module:
    """Load safetensors weights into ``module``; a missing or unreadable file is a KexueError."""
    path = Path(path)
    if not path.is_file():
        raise KexueError(f"weights file not found: {path}")
    try:
        state = load_file(str(path))
    except Exception as e:  # safetensors raises several types for a corrupt header
        raise KexueError(f"cannot read weights {path}: {e}") from None
    device = next((p.device for p in module.parameters()), torch.device("cpu"))
    try:
        module.load_state_dict({k: v.to(device) for k, v in state.items()}, strict=strict)
    except RuntimeError as e:
        first = str(e).strip().splitlines()[0]
        raise KexueError(f"weights {path} do not fit this model: {first}") from None
    return module


def save_checkpoint(folder: str | Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                    step: int, extra: dict | None = None, keep: int = 2) -> Path:
    """Write ``folder/step-XXXXXX/`` completely, then point ``folder/latest`` at it.

    Keeps the ``keep`` newest checkpoints and removes older ones.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    name = f"step-{step:06d}"
    tmp = folder / f".{name}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    save_weights(model, tmp / "model.safetensors")
    torch.save({"step": step, "optimizer": optimizer.state_dict(), "extra": extra or {}}, tmp / "state.pt")
    final = folder / name
    shutil.rmtree(final, ignore_errors=True)
    tmp.rename(final)
    write_text(folder / "latest", name + "\n")
    for old in sorted(p for p in folder.glob("step-*") if p.is_dir())[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def latest_checkpoint(folder: str | Path) -> Path | None:
    """The newest complete checkpoint folder, or None when there is none."""
    pointer = Path(folder) / "latest"
    if not pointer.is_file():
        return None
    path = Path(folder) / pointer.read_text().strip()
    return path if (path / "model.safetensors").is_file() else None


def load_checkpoint(path: str | Path, model: torch.nn.Module,
                    optimizer: torch.optim.Optimizer | None = None) -> dict:
    """Restore weights (and optimizer state) from a checkpoint folder; returns its state dict."""
    path = Path(path)
    load_weights(model, path / "model.safetensors")
    try:
        state = torch.load(path / "state.pt", map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise KexueError(f"checkpoint state not found: {path / 'state.pt'}") from None
    if optimizer is not None:
        optimizer.load_state_dict(state["optimizer"])
    return state
