"""Files in and out: the one reader of user-named files, atomic writes, and safe run folders.

Reading: every file or folder a user names goes through :func:`reading` (or the helpers built on
it: :func:`read_text`, :func:`read_json`, :func:`read_yaml`), which turns I/O, decode and format
errors into one :class:`KexueError` naming the file (and the line, where there is one).

Writing: :func:`atomic_path` writes under a temporary name and renames, so no half-written file
is ever left; files get the user's umask. :func:`check_output_file` and :func:`check_output_dir`
refuse paths that cannot be written before any work starts.

Run folders: :func:`make_run_dir` validates ``--out`` (refuses a non-empty folder unless
``resume`` or ``overwrite``; on resume compares the new config with the saved one), cleans
temporaries left by an interrupted run, and only then creates the folder and writes
``config.yaml``. A folder this process created that holds no weights (nor measured results) is removed again when the
command fails (:func:`discard_failed_runs`, called by the CLI), so a failed command never
leaves something that looks like a trained run.
"""

from __future__ import annotations

import gzip
import json
import os
import shutil
import sys
import tempfile
import time
import zipfile
import zlib
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml

from kexue.errors import KexueError

# ---- reading -------------------------------------------------------------------------------

# Errors that mean "this file cannot be read as what it should be"; each becomes a KexueError.
_READ_ERRORS = (
    OSError,
    UnicodeDecodeError,
    zlib.error,
    gzip.BadGzipFile,
    zipfile.BadZipFile,
    EOFError,
    json.JSONDecodeError,
    yaml.YAMLError,
)


def _describe(e: BaseException) -> str:
    if isinstance(e, FileNotFoundError):
        return "not found"
    if isinstance(e, IsADirectoryError):
        return "is a folder, not a file"
    if isinstance(e, NotADirectoryError):
        return "a part of the path is not a folder"
    if isinstance(e, PermissionError):
        return "permission denied"
    if isinstance(e, UnicodeDecodeError):
        line = getattr(e, "line", None)  # known when the whole file was decoded at once (_utf8)
        where = f"line {line}, byte {e.column} of the line" if line is not None else f"offset {e.start}"
        return f"is not UTF-8 text (byte 0x{e.object[e.start]:02x} at {where})"
    if isinstance(e, json.JSONDecodeError):
        return f"is not valid JSON (line {e.lineno}, column {e.colno}: {e.msg})"
    if isinstance(e, yaml.YAMLError):
        mark = getattr(e, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        return f"is not valid YAML{where}: {problem}"
    if isinstance(e, (zlib.error, gzip.BadGzipFile)):
        return f"is a corrupt compressed file ({e})"
    if isinstance(e, zipfile.BadZipFile):
        return f"is a corrupt zip/npz file ({e})"
    if isinstance(e, EOFError):
        return "ends too early (truncated or empty)"
    if isinstance(e, OSError):
        return e.strerror or str(e)
    return str(e)


@contextmanager
def reading(path: str | os.PathLike, what: str = "file") -> Iterator[Path]:
    """Read a user-named file inside this block; any read or decode error becomes one KexueError.

    Example::

        with reading(path, "IDX file") as p:
            data = gzip.open(p).read()   # a corrupt stream -> "kexue: error: IDX file x.gz is a corrupt ..."
    """
    path = Path(path)
    try:
        yield path
    except KexueError:
        raise
    except _READ_ERRORS as e:
        raise KexueError(f"{what} {path} {_describe(e)}") from None


def read_bytes(path: str | os.PathLike, what: str = "file") -> bytes:
    with reading(path, what) as p:
        return p.read_bytes()


class _NotUtf8(UnicodeDecodeError):
    """A UnicodeDecodeError of a whole file's bytes, which knows the line of the bad byte and its place in
    that line (1-based, in bytes)."""

    line: int
    column: int


def _utf8(data: bytes) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        err = _NotUtf8(e.encoding, e.object, e.start, e.end, e.reason)
        err.line = data.count(b"\n", 0, e.start) + 1
        err.column = e.start - data.rfind(b"\n", 0, e.start)
        raise err from None


def read_text(path: str | os.PathLike, what: str = "file") -> str:
    """The UTF-8 text of a user-named file; a missing, unreadable or non-UTF-8 file is a KexueError."""
    with reading(path, what) as p:
        return _utf8(p.read_bytes())


def read_json(path: str | os.PathLike, what: str = "JSON file", kind: type | None = dict) -> Any:
    """Parsed JSON of a user-named file; with ``kind``, the top level must be of that type."""
    with reading(path, what) as p:
        data = json.loads(_utf8(p.read_bytes()))
    if kind is not None and not isinstance(data, kind):
        raise KexueError(f"{what} {path} should hold a JSON {kind.__name__}, not {type(data).__name__}")
    return data


def read_yaml(path: str | os.PathLike, what: str = "YAML file") -> dict:
    """A YAML mapping from a user-named file (safe loader: no Python tags); empty file -> {}."""
    with reading(path, what) as p:
        data = yaml.safe_load(_utf8(p.read_bytes()))
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise KexueError(f"{what} {path} should hold a mapping of keys to values, not a {type(data).__name__}")
    return data


# ---- writing -------------------------------------------------------------------------------


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` only if the block succeeds.

    The file gets the permissions a plain ``open(path, "w")`` would (0666 less the umask).
    Example: ``with atomic_path("w.safetensors") as tmp: save_file(tensors, tmp)``.
    """
    path = Path(path)
    if not _writes_here():  # under DDP only rank 0 writes: the others write into a scratch file
        fd, tmp = tempfile.mkstemp(prefix=".kexue-rank-", suffix=".tmp")
        os.close(fd)
        try:
            yield Path(tmp)
        finally:
            os.unlink(tmp)
        return
    if path.is_dir():
        raise KexueError(f"cannot write {path}: it is a folder")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as e:
        raise KexueError(f"cannot write {path}: {_describe(e)}") from None
    os.close(fd)
    os.chmod(tmp, 0o666 & ~_umask())
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _writes_here() -> bool:
    """False on DDP ranks other than 0 (they compute the same results; rank 0 writes them)."""
    dist = sys.modules.get("kexue.training.distributed")
    return dist is None or dist.is_main()


def write_text(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` to ``path`` atomically; returns the path."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def write_json(path: str | os.PathLike, obj: Any) -> Path:
    """Write ``obj`` as indented, key-sorted JSON, atomically (NaN and infinity are refused)."""
    return write_text(path, json.dumps(obj, indent=2, sort_keys=True, allow_nan=False) + "\n")


def save_figure(fig, path: str | os.PathLike, dpi: int = 120) -> Path:
    """Save a matplotlib figure as PNG atomically and close it."""
    import matplotlib.pyplot as plt

    try:
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format="png", dpi=dpi, bbox_inches="tight")
    finally:
        plt.close(fig)
    return Path(path)


def _nearest_existing(path: Path) -> Path:
    p = path.absolute()
    while not p.exists() and p != p.parent:
        p = p.parent
    return p


def _probe_writable_dir(folder: Path, target: Path, flag: str) -> None:
    """Create and remove a temporary entry in ``folder`` (the only test that never lies, e.g. on /proc)."""
    if not folder.is_dir():
        raise KexueError(f"{flag} {target}: {folder} is not a folder")
    try:
        probe = tempfile.mkdtemp(dir=folder, prefix=".kexue-probe-")
        os.rmdir(probe)
    except OSError as e:
        raise KexueError(f"{flag} {target}: cannot write in {folder} ({_describe(e)})") from None


def check_output_file(path: str | os.PathLike | None, flag: str = "--results") -> None:
    """Refuse, before any work, an output file path that names a folder or cannot be written."""
    if path is None:
        return
    path = Path(path)
    if path.is_dir():
        raise KexueError(f"{flag} {path} is a folder; give a file name")
    if path.exists() and not path.is_file():
        raise KexueError(f"{flag} {path} is not a regular file")
    _probe_writable_dir(_nearest_existing(path.parent), path, flag)


def check_output_dir(path: str | os.PathLike | None, flag: str = "--out") -> None:
    """Refuse, before any work, an output folder path that is a file or cannot be created."""
    if path is None:
        return
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise KexueError(f"{flag} {path} exists and is not a folder")
    _probe_writable_dir(_nearest_existing(path), path, flag)


# ---- run folders ---------------------------------------------------------------------------

CONFIG_HEADER = "# kexue run config: "
# Config keys that say where and how a run is done, not what it is; never compared or saved.
_PLACE_KEYS = ("out", "resume", "overwrite", "config")
# Keys a resume may change (with a word): how long and how it trains, not the model or the data.
RESUME_MAY_CHANGE = frozenset(
    {
        "steps",
        "epochs",
        "lr",
        "eval_every",
        "ckpt_every",
        "log_every",
        "threads",
        "device",
        "results",
        "eval_tokens",
        "max_valid_tokens",
        "progress",
        "settings.epochs",
        "settings.lr",
        "settings.eval_every_epochs",
        "figure",
    }
)

_created_runs: list[Path] = []
# (config.yaml, its text before a resume rewrote it): put back if the resumed command fails, so that
# the config keeps describing the weights.
_resumed_configs: list[tuple[Path, str]] = []


def _plain(value: Any) -> Any:
    if isinstance(value, os.PathLike):
        return str(value)
    for base in (bool, int, float, str):  # constrained parser types (PositiveInt, ...) are subclasses
        if isinstance(value, base):
            return base(value)
    if isinstance(value, tuple):
        return [_plain(v) for v in value]
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


def _flatten(d: dict, prefix: str = "") -> dict[str, Any]:
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and v:
            out.update(_flatten(v, key + "."))
        else:
            out[key] = v
    return out


def config_command(path: str | os.PathLike, what: str = "run config") -> str | None:
    """The command named in a config file's header line (``# kexue run config: <command>``), else None."""
    text = read_text(path, what)
    first = text.splitlines()[0] if text else ""
    return first[len(CONFIG_HEADER) :].strip() if first.startswith(CONFIG_HEADER) else None


def run_config(folder: str | os.PathLike) -> tuple[str | None, dict]:
    """``(command, config)`` saved in a run folder's ``config.yaml`` (command None if unknown)."""
    path = Path(folder) / "config.yaml"
    command = config_command(path)
    data = read_yaml(path, "run config")
    command = command or data.pop("command", None)
    data.pop("command", None)
    return command, data


def with_added_defaults(command: str | None, config: dict) -> dict:
    """A saved run ``config`` of ``command`` with every setting added since (:data:`ADDED_SETTINGS`) at the
    default it had before, so that rerunning an old run's config.yaml runs what that run ran."""
    out = {k: dict(v) if isinstance(v, dict) else v for k, v in config.items()}
    for (cmd, key), default in ADDED_SETTINGS.items():
        if cmd != command:
            continue
        *parents, leaf = key.split(".")
        node = out
        for part in parents:
            node = node.get(part) if isinstance(node.get(part), dict) else None
            if node is None:
                break
        if node is not None:
            node.setdefault(leaf, default)
    return out


def clean_temporaries(folder: str | os.PathLike) -> int:
    """Remove ``.*.tmp`` files and folders an interrupted run left anywhere under ``folder``."""
    n = 0
    for p in sorted(Path(folder).rglob(".*.tmp"), key=lambda p: len(p.parts), reverse=True):
        if p.is_dir():
            shutil.rmtree(p, ignore_errors=True)
        else:
            p.unlink(missing_ok=True)
        n += 1
    return n


def _is_run_folder(folder: Path) -> bool:
    """A folder kexue wrote: its ``config.yaml`` names a kexue command (a stranger's config.yaml does not)."""
    if not (folder / "config.yaml").is_file():
        return False
    try:
        return run_config(folder)[0] is not None
    except KexueError:
        return False


# Settings a command gained after runs were made with it: (command, flattened key) -> the default, which
# is what those runs used. A resume of such a run sees the key as unchanged when the new value equals it.
ADDED_SETTINGS: dict[tuple[str, str], Any] = {}


def register_added_settings(command: str, defaults: dict[str, Any]) -> None:
    """Declare settings added to ``command`` later (flattened keys, e.g. ``settings.batching``) with their defaults."""
    ADDED_SETTINGS.update({(command, k): v for k, v in defaults.items()})


def _compare_for_resume(folder: Path, command: str, config: dict, may_change: Iterable[str]) -> None:
    saved_command, saved = run_config(folder)
    if saved_command is not None and saved_command != command:
        raise KexueError(f"--resume: {folder} is a `{saved_command}` run, not `{command}`")
    old = {k: v for k, v in _flatten(saved).items() if k.split(".")[0] not in _PLACE_KEYS}
    new = {k: v for k, v in _flatten(config).items() if k.split(".")[0] not in _PLACE_KEYS}
    for k in set(new) - set(old):  # a run made before the setting existed ran with its default
        if (command, k) in ADDED_SETTINGS and _plain(ADDED_SETTINGS[(command, k)]) == new[k]:
            old[k] = new[k]
    changed = sorted(k for k in set(old) | set(new) if old.get(k, "<unset>") != new.get(k, "<unset>"))
    allowed = set(may_change)
    refused = [k for k in changed if k not in allowed]
    if refused:
        diffs = ", ".join(f"{k} {old.get(k, '<unset>')!r} -> {new.get(k, '<unset>')!r}" for k in refused)
        raise KexueError(
            f"--resume: the new settings change what {folder} trained ({diffs}); "
            "resume with the saved settings or start a new --out"
        )
    for k in changed:
        # stdout: a note on what happens, not an error (a failure later stays one line on stderr)
        print(f"kexue: resume changes {k}: {old.get(k)!r} -> {new.get(k)!r}")


def make_run_dir(
    out: str | os.PathLike | None,
    command: str,
    config: dict[str, Any],
    resume: bool = False,
    overwrite: bool = False,
    may_change: Iterable[str] = RESUME_MAY_CHANGE,
) -> Path:
    """Validate ``--out``, then create the run folder and save the resolved config.

    Args:
        out: folder to use, or None for ``runs/<command>-<timestamp>/``.
        command: e.g. ``"vae-cluster-train"``; names the default folder and heads ``config.yaml``.
        config: the command's arguments (their names as on the command line); saved as
            ``config.yaml`` so that ``--config out/config.yaml`` reruns the same command. ``out``,
            ``resume`` and ``overwrite`` are dropped.
        resume: the folder must hold a run of the same command; a change to a key outside
            ``may_change`` is refused, a change inside it is printed.
        overwrite: an existing run folder is emptied first (only a kexue run folder).
    Returns:
        The folder.
    Raises:
        KexueError: ``out`` is not writable, is a non-empty folder without ``resume`` or
            ``overwrite``, or the resume check fails. Nothing is written then.
    """
    dist = sys.modules.get("kexue.training.distributed")
    if dist is not None and dist.is_distributed():  # rank 0 checks and creates; every rank gets its answer
        answer = None
        if dist.is_main():
            try:
                answer = ("ok", str(_make_run_dir(out, command, config, resume, overwrite, may_change)))
            except KexueError as e:
                answer = ("error", str(e))
        kind, value = dist.broadcast_object(answer)
        if kind == "error":
            raise KexueError(value)
        return Path(value)
    return _make_run_dir(out, command, config, resume, overwrite, may_change)


def _make_run_dir(
    out: str | os.PathLike | None,
    command: str,
    config: dict[str, Any],
    resume: bool,
    overwrite: bool,
    may_change: Iterable[str],
) -> Path:
    if out is None:
        out = Path("runs") / f"{command}-{time.strftime('%Y%m%d-%H%M%S')}"
    out = Path(out)
    check_output_dir(out)
    plain = {k: _plain(v) for k, v in config.items() if k not in _PLACE_KEYS}
    exists = out.is_dir() and any(out.iterdir())
    created = not out.exists()
    if resume and overwrite:
        raise KexueError("choose one of --resume and --overwrite")
    if resume:
        if not exists:
            raise KexueError(f"--resume: {out} holds no run to resume")
        if not _is_run_folder(out):
            raise KexueError(f"--resume: {out} is not a kexue run folder (no kexue config.yaml)")
        if not _holds_work(out):
            raise KexueError(f"--resume: {out} holds no checkpoint, weights or results to resume from")
        _compare_for_resume(out, command, plain, may_change)
        clean_temporaries(out)
        _resumed_configs.append((out / "config.yaml", read_text(out / "config.yaml", "run config")))
    elif exists:
        if not overwrite:
            raise KexueError(
                f"--out {out} is not empty; add --resume to continue that run or --overwrite to "
                "replace it, or choose another folder"
            )
        if not _is_run_folder(out):
            raise KexueError(f"--overwrite: {out} is not a kexue run folder (no kexue config.yaml); not deleting it")
        shutil.rmtree(out)
        created = True
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise KexueError(f"--out {out}: cannot create it ({_describe(e)})") from None
    if created:
        _created_runs.append(out)
    body = yaml.safe_dump(plain, sort_keys=False, allow_unicode=True)
    write_text(out / "config.yaml", f"{CONFIG_HEADER}{command}\n{body}")
    return out


def _holds_work(folder: Path) -> bool:
    """Weights, a checkpoint, or figures already measured (a study writes each as it lands)."""
    return any(folder.rglob("*.safetensors")) or (folder / "results.json").is_file()


def discard_failed_runs() -> None:
    """Undo what a failed command did to run folders (called by the CLI when a command fails).

    Removes the run folders this process created that hold no weights or results.json, and puts back the
    ``config.yaml`` of a resumed run as it was before the resume.
    """
    while _resumed_configs:
        path, text = _resumed_configs.pop()
        if path.parent.is_dir():
            write_text(path, text)
    while _created_runs:
        folder = _created_runs.pop()
        if folder.is_dir() and not _holds_work(folder):
            shutil.rmtree(folder, ignore_errors=True)


def forget_created_runs() -> None:
    """Forget the run folders created so far (a command finished: they are its results)."""
    _created_runs.clear()
    _resumed_configs.clear()
