"""``kexue <command>``: dispatch to plain typed functions (jsonargparse builds the parsers).

Every command takes ``--config FILE.yaml`` and flags, writes into ``--out DIR`` and saves its
resolved config there. A :class:`KexueError` becomes a one-line message and exit status 2.
"""

from __future__ import annotations

import os
import sys

from jsonargparse import auto_cli

from kexue.bench.decoding import decoding as bench_decoding
from kexue.bench.nystrom import nystrom as bench_nystrom
from kexue.bench.onlstm import onlstm as bench_onlstm
from kexue.bench.repetition import repetition as bench_repetition
from kexue.commands import lm, nystrom, onlstm, repetition, vae_cluster
from kexue.errors import KexueError
from kexue.reproduce import reproduce

COMMANDS = {
    "reproduce": reproduce,
    "vae-cluster": {"train": vae_cluster.train, "eval": vae_cluster.evaluate, "sample": vae_cluster.sample,
                    "study": vae_cluster.study},
    "onlstm": {"train": onlstm.train, "parse": onlstm.parse, "eval": onlstm.eval},
    "lm": {"train": lm.train, "generate": lm.generate, "termination": lm.termination},
    "repetition": {"theory": repetition.theory, "measure": repetition.measure, "rebalance": repetition.rebalance},
    "nystrom": {"listops": nystrom.listops, "errors": nystrom.errors},
    "bench": {"decoding": bench_decoding, "nystrom": bench_nystrom, "onlstm": bench_onlstm,
              "repetition": bench_repetition},
}

# Boolean options that may be given bare (``--quick``) as well as ``--quick true``.
FLAGS = {"--quick", "--full", "--resume", "--draw", "--replot", "--exact_conv"}


def _bare_flags(argv: list[str]) -> list[str]:
    out = []
    for i, arg in enumerate(argv):
        out.append(arg)
        nxt = argv[i + 1] if i + 1 < len(argv) else None
        if arg in FLAGS and (nxt is None or nxt.startswith("-")):
            out.append("true")
    return out


def main(argv: list[str] | None = None) -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    args = _bare_flags(sys.argv[1:] if argv is None else list(argv))
    try:
        auto_cli(COMMANDS, args=args, as_positional=False)
    except KexueError as e:
        print(f"kexue: error: {e}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("kexue: interrupted", file=sys.stderr)
        sys.exit(130)


if __name__ == "__main__":
    main()
