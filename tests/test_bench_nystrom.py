"""The Nyström benchmark's measuring tools, and parity of our core with the public implementations."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest
import torch

from kexue.bench.nystrom import _call, _qkv, core_functions, peak_memory, relative_errors
from kexue.nn.nystrom import exact_attention


def test_peak_memory_counts_torch_allocations():
    def two_buffers():
        a = torch.ones(256 * 1024)  # 1 MiB
        b = torch.ones(512 * 1024)  # 2 MiB, while a is alive
        del a
        return b

    assert peak_memory(two_buffers) == 3 * 2**20


def test_peers_agree_with_ours_on_the_same_qkv():
    pytest.importorskip("nystrom_attention")
    pytest.importorskip("transformers")
    n, m = 256, 32
    q, k, v = _qkv(n, seed=1)
    with torch.no_grad():
        outs = {name: _call(fn, layout, q, k, v) for name, (fn, layout) in core_functions(n, m).items()}
    torch.testing.assert_close(outs["exact"], exact_attention(q, k, v).transpose(1, 2).flatten(2))
    # same method, different pseudo-inverse starts: close, not equal
    assert float((outs["ours"] - outs["lucidrains"]).norm() / outs["ours"].norm()) < 0.02
    assert float((outs["ours"] - outs["hf"]).norm() / outs["ours"].norm()) < 0.02
    errors = relative_errors(n, [m], q, k, v)[m]
    assert errors["ours"] <= min(errors["lucidrains"], errors["hf"]) * 1.01


def test_bench_writes_its_run_folder_and_only_the_files_it_is_given(tmp_path):
    pytest.importorskip("nystrom_attention")
    pytest.importorskip("transformers")
    import json

    from kexue.bench.nystrom import nystrom

    out, res = tmp_path / "run", tmp_path / "res"
    path = nystrom(
        lengths=[64], error_lengths=[64], error_landmarks=[16, 32], num_landmarks=16, repeats=1, threads=1, out=out
    )
    assert path == out / "results.json"
    assert {p.name for p in out.iterdir()} == {"config.yaml", "results.json", "details.json", "error.png", "time.png"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]
    rows = json.loads(path.read_text())
    keys = set(rows)
    assert {"nystrom.n64.core_speedup_vs_exact", "nystrom.n64.rel_error"} <= keys
    # the command is derived from the call (outputs left out); the machine facts are measured
    command = (
        "kexue bench nystrom --lengths '[64]' --error_lengths '[64]' --error_landmarks '[16, 32]' "
        "--num_landmarks 16 --repeats 1 --threads 1"
    )
    assert {r["command"] for r in rows.values()} == {command}
    machine = json.loads((out / "details.json").read_text())["machine"]
    assert machine["torch_threads"] == 1 and machine["cores"] >= 1 and "load_average_1m" in machine
    nystrom(
        lengths=[64],
        error_lengths=[64],
        error_landmarks=[16],
        num_landmarks=16,
        repeats=1,
        threads=1,
        out=tmp_path / "run2",
        results=res / "nystrom.json",
        details=res / "d.json",
        error_figure=res / "e.png",
        time_figure=res / "t.png",
    )
    assert sorted(p.name for p in res.iterdir()) == ["d.json", "e.png", "nystrom.json", "t.png"]
    assert set(json.loads((res / "nystrom.json").read_text())) == keys
