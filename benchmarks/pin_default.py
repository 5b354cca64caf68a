"""When a command's default changes, pin the old default into the committed rows measured under it.

A results row's ``command`` names only the flags that differ from the defaults
(:func:`kexue.provenance.command_line`), so a changed default would silently change what an old row's
command runs. Each change is recorded below and applied once: every row of its files whose command
runs that command and does not name the flag gets ``<flag> <old value>``, placed where
``command_line`` puts it (in the order of its settings class: before the first named flag of a field
that follows it there, else after the other ``--settings.*`` flags, before the parameters that follow
the settings). Values stay as measured; nothing is rerun. The rows pinned, with their values (and, since
the second change, their pinned commands), go to ``results/pinned_defaults.json``; rows written later
by the same command (under the new default) are never touched, and a pinned row that a new measurement
has replaced (its value, or its other flags, changed) is no longer checked.

Changes:

- ``anchor-2026-12-02`` (issue 15): ``kexue vae-cluster study|train`` ``--settings.anchor`` 0.0 -> 10.0
  (the ablation's winning lever became our default), in vae_cluster.json (the author's preset ran with
  anchor 0: it has no mixture initialisation, and the preset now names it; the earlier 5-seed
  studies), vae_ablation.json (the levers other than ``anchor``) and vae_su_init.json.
- ``anchor-epochs-2026-12-03`` (issue 15): ``--settings.anchor_epochs`` null (the anchor held for the
  whole VAE phase) -> 10 (released over the first 10 VAE epochs: the 5-seed studies' winner), in
  vae_cluster.json, vae_ablation.json, vae_release.json and (added to the change after it was applied)
  reproduce_quick.json, whose quick report ran before the release existed. The setting comes just before ``anchor``
  in its class, so it goes before a named ``--settings.anchor``; rows that turn the anchor off
  (``--settings.anchor 0.0``) are left alone: there, when the anchor is released changes nothing.

Usage: ``python benchmarks/pin_default.py`` applies the changes not yet applied (and a change to a file
added to its list later); ``--check`` changes nothing, and exits 1 if a change is not applied to one of
its files or a pinned row no longer names its flag with the old value.
"""

from __future__ import annotations

import json
import shlex
import sys
from pathlib import Path
from typing import NamedTuple

from kexue.io import write_json
from kexue.results import load_results

RESULTS = Path(__file__).resolve().parent / "results"
LEDGER = RESULTS / "pinned_defaults.json"

VAE_COMMANDS = ("kexue vae-cluster study", "kexue vae-cluster train")


class Change(NamedTuple):
    """A changed default: the commands it applies to, the flag, its old default, the results files
    measured under it; ``later``: the flags of the fields after it in its settings class (the pin goes
    before the first of them a command names); ``moot``: (flag, values) of rows the change cannot
    affect, left alone."""

    commands: tuple[str, ...]
    flag: str
    old: str
    files: tuple[str, ...]
    later: tuple[str, ...] = ()
    moot: tuple[str, tuple[str, ...]] | None = None


CHANGES = {
    "anchor-2026-12-02": Change(
        VAE_COMMANDS, "--settings.anchor", "0.0", ("vae_cluster.json", "vae_ablation.json", "vae_su_init.json")
    ),
    "anchor-epochs-2026-12-03": Change(
        VAE_COMMANDS,
        "--settings.anchor_epochs",
        "null",
        ("vae_cluster.json", "vae_ablation.json", "vae_release.json", "reproduce_quick.json"),
        later=("--settings.anchor",),
        moot=("--settings.anchor", ("0", "0.0")),
    ),
}
# parameters that command_line writes after the settings (those of run_study / train_run that follow them)
AFTER_SETTINGS = ("--device", "--resume", "--overwrite", "--preset", "--pretrained", "--jobs")


def _last(words: list[str], flag: str) -> str | None:
    """The value of the last ``flag`` in ``words`` (the one that wins on a command line), or None."""
    named = [words[i + 1] for i, w in enumerate(words[:-1]) if w == flag]
    return named[-1] if named else None


def pin(command: str, change: Change) -> str:
    """``command`` with ``change.flag change.old`` added when it runs one of ``change.commands``, does not
    name the flag, and is not a row the change cannot affect (``change.moot``)."""
    words = shlex.split(command)
    if not any(command.startswith(p + " ") or command == p for p in change.commands) or change.flag in words:
        return command
    if change.moot is not None:
        flag, values = change.moot
        if _last(words, flag) in values:
            return command
    later_fields = [i for i, w in enumerate(words) if w in change.later]
    settings = [i for i, w in enumerate(words) if w.startswith("--settings.")]
    after = [i for i, w in enumerate(words) if w in AFTER_SETTINGS]
    if later_fields:  # just before the first later field of its class that the command names
        at = later_fields[0]
    elif settings:  # after the last setting's value
        at = settings[-1] + 2
    else:
        at = after[0] if after else len(words)
    return shlex.join(words[:at] + [change.flag, change.old] + words[at:])


def apply(name: str, files: tuple[str, ...] | None = None) -> dict[str, dict[str, dict]]:
    """Pin change ``name`` into ``files`` (default: all of its files); returns file -> {key: {"value",
    "command"}} of the rows pinned (the command as pinned), every file listed even with none."""
    change = CHANGES[name]
    pinned: dict[str, dict[str, dict]] = {}
    for file in change.files if files is None else files:
        rows = load_results(RESULTS / file)
        done = {}
        for key, row in rows.items():
            command = pin(row["command"], change)
            if command != row["command"]:
                rows[key] = {**row, "command": command}
                done[key] = {"value": row["value"], "command": command}
        if done:
            write_json(RESULTS / file, rows)
        pinned[file] = done
    return pinned


def _without(command: str, flag: str) -> list[str]:
    words = shlex.split(command)
    while flag in words:
        at = words.index(flag)
        del words[at : at + 2]
    return words


def _names(command: str, flag: str, value: str) -> bool:
    return _last(shlex.split(command), flag) == value


def problems(name: str, pinned: dict[str, dict]) -> list[str]:
    """Pinned rows of change ``name`` still measured as then whose command no longer names the flag with its
    old value. A row is still as then when its value is (and, where the ledger holds the pinned command,
    its other flags are) unchanged: a new measurement that replaced it, under the new default, is not checked."""
    flag, old = CHANGES[name].flag, CHANGES[name].old
    out = []
    for file, keys in pinned.items():
        rows = load_results(RESULTS / file)
        for key, then in keys.items():
            row = rows.get(key)
            if row is None or _names(row["command"], flag, old):
                continue
            value, command = (then["value"], then["command"]) if isinstance(then, dict) else (then, None)
            if row["value"] == value and (command is None or _without(command, flag) == _without(row["command"], flag)):
                out.append(f"{file}: {key} no longer names {flag} {old}")
    return out


def main(argv: list[str]) -> int:
    check_only = "--check" in argv
    ledger = json.loads(LEDGER.read_text(encoding="utf-8")) if LEDGER.is_file() else {}
    failed = False
    for name, change in CHANGES.items():
        missing = tuple(f for f in change.files if f not in ledger.get(name, {}))  # files added to a change later
        if missing and check_only:
            print(f"{name}: not applied to {', '.join(missing)}")
            failed = True
        elif missing:
            done = apply(name, missing)
            ledger[name] = ledger.get(name, {}) | done
            write_json(LEDGER, ledger)
            print(f"{name}: pinned {sum(map(len, done.values()))} rows in {', '.join(missing)}")
        for line in problems(name, ledger.get(name, {})):
            print(line)
            failed = True
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
