"""Shared fixtures: offline, seeded, few threads (tests must be fast on 2 cores)."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import pytest
import torch

torch.set_num_threads(min(2, torch.get_num_threads()))


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    yield


def _snapshot(folder):
    """Relative paths and sizes of everything under ``folder`` (None when it does not exist)."""
    if folder is None or not folder.exists():
        return None
    return sorted((str(p.relative_to(folder)), p.stat().st_size if p.is_file() else -1) for p in folder.rglob("*"))


@pytest.fixture
def cli_error(capsys):
    """Run ``kexue ARGS`` in-process and assert the bad-input contract; returns the error line.

    Contract: exit status 2, exactly one line on stderr, starting ``kexue: error:``, no traceback,
    and the output folder ``out`` (if given) left as it was (absent stays absent).
    Example: ``cli_error(["lm", "train", "--dim", "0", "--out", str(out)], out=out, match="--dim")``.
    """
    from kexue.cli import main

    def run(args, out=None, match=None):
        before = _snapshot(out)
        capsys.readouterr()
        with pytest.raises(SystemExit) as e:
            main([str(a) for a in args])
        io = capsys.readouterr()
        lines = [ln for ln in io.err.splitlines() if ln.strip()]
        assert e.value.code == 2, f"exit {e.value.code} for {args}: {io.err}"
        assert len(lines) == 1 and lines[0].startswith("kexue: error: "), f"not one error line for {args}: {io.err!r}"
        assert "Traceback" not in io.err and "internal error" not in io.err
        assert _snapshot(out) == before, f"{out} changed for {args}"
        if match is not None:
            assert match in lines[0], f"{match!r} not in {lines[0]!r}"
        return lines[0]

    return run
