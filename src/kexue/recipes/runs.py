"""Run folders of trained models: the checks every recipe that trains or loads a model shares.

A finished training run folder holds ``config.yaml`` (first line: the command that wrote it),
``model.json`` (the model's config dataclass), ``model.safetensors`` and, for text models,
``vocab.json``. These helpers answer every way such a folder can be wrong with one
:class:`~kexue.errors.KexueError` that names the folder or the file, before any weights load.

Example::

    run = check_trained_run("runs/lm-st", "lm-train", "--run runs/lm-st")
    cfg = read_model_config(run / "model.json", LMConfig, "lm-train")
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import TypeVar

from kexue.errors import KexueError
from kexue.io import read_json, run_config
from kexue.params import check

Config = TypeVar("Config")


def cli_name(command: str) -> str:
    """``"lm-train"`` (a run folder's command) -> ``"lm train"`` (as typed after ``kexue``)."""
    group, _, sub = command.rpartition("-")
    return f"{group} {sub}" if group else command


def check_trained_run(run: str | Path, command: str, label: str) -> Path:
    """``run`` as a finished run folder of ``command`` (e.g. ``"lm-train"``); ``label`` names it in messages.

    Raises:
        KexueError: ``run`` is missing, not a folder, not a kexue run folder, a run of another
            command, or holds no model.json / model.safetensors yet.
    """
    run = Path(run)
    if not run.is_dir():
        raise KexueError(f"{label}: {'not found' if not run.exists() else 'is not a folder'}")
    if not (run / "config.yaml").is_file():
        raise KexueError(
            f"{label} is not a kexue run folder (no config.yaml); "
            f"train one with `kexue {cli_name(command)} --out {run}`"
        )
    found, _ = run_config(run)
    if found != command:
        raise KexueError(f"{label} was written by {found or 'an unknown command'}, not by {command}")
    if not (run / "model.json").is_file() or not (run / "model.safetensors").is_file():
        raise KexueError(
            f"{label} holds no trained model yet (model.json or model.safetensors missing); "
            f"finish it with `kexue {cli_name(command)} --resume --out {run}`"
        )
    return run


def read_model_config(path: Path, config_type: type[Config], command: str) -> Config:
    """The ``config_type`` dataclass saved in ``path`` (a run's model.json).

    Unknown, missing or bad values are one KexueError naming the file.
    """
    data = read_json(path, "model config")
    fields = {f.name for f in dataclasses.fields(config_type)}
    unknown, missing = sorted(set(data) - fields), sorted(fields - set(data))
    if unknown or missing:
        what = "; ".join(
            part
            for part in (
                unknown and f"unknown key(s) {', '.join(unknown)}",
                missing and f"missing key(s) {', '.join(missing)}",
            )
            if part
        )
        raise KexueError(f"model config {path} does not describe a `{cli_name(command)}` model ({what})")
    try:
        return config_type(**data)
    except KexueError as e:
        raise KexueError(f"model config {path}: {e}") from None


def check_resumable(out: str | Path | None) -> None:
    """Before anything is written: ``--resume`` needs a complete checkpoint in an existing run folder."""
    if out is None or not (Path(out) / "config.yaml").is_file():
        return  # make_run_dir explains what is wrong with the folder
    found = [
        p
        for p in (Path(out) / "checkpoints").glob("step-*")
        if (p / "model.safetensors").is_file() and (p / "state.pt").is_file()
    ]
    check(
        bool(found),
        f"--resume: no checkpoint to resume from in {Path(out) / 'checkpoints'}; start again with --overwrite",
    )


def check_settings(
    settings: object,
    integers: dict[str, int] | None = None,
    fractions: dict[str, str] | None = None,
    numbers: dict[str, str] | None = None,
    choices: dict[str, tuple] | None = None,
    flag: str = "--settings",
) -> None:
    """Type and range checks of a settings dataclass for Python callers (the parser checks the CLI).

    Args:
        settings: the dataclass instance; its int / float fields are made plain ``int`` / ``float``.
        integers: field -> least value.
        fractions: field -> ``"[0,1)"`` (a dropout) or ``"(0,1)"`` (an open rate).
        numbers: field -> ``">0"`` or ``">=0"`` (finite floats).
        choices: field -> the allowed values.
        flag: prefix of the field in messages (``--settings.dim``).
    """
    for name, low in (integers or {}).items():
        value = getattr(settings, name)
        if value is None:
            continue
        check(
            isinstance(value, int) and not isinstance(value, bool) and value >= low,
            f"{flag}.{name} must be an integer >= {low}, got {value!r}",
        )
        setattr(settings, name, int(value))
    for name, rule in {**(fractions or {}), **(numbers or {})}.items():
        value = getattr(settings, name)
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
        ok = ok and {
            "[0,1)": lambda v: 0 <= v < 1,
            "(0,1)": lambda v: 0 < v < 1,
            ">0": lambda v: v > 0,
            ">=0": lambda v: v >= 0,
        }[rule](value)
        check(ok, f"{flag}.{name} must be a finite number in {rule}, got {value!r}")
        setattr(settings, name, float(value))
    for name, allowed in (choices or {}).items():
        value = getattr(settings, name)
        check(value in allowed, f"{flag}.{name} must be one of {', '.join(map(str, allowed))}, got {value!r}")
        setattr(settings, name, str(value))
