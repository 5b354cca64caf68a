"""`kexue bench decoding` at toy size: same tokens as HF generate, the documented JSON keys, the
command derived from the call and the machine facts beside the figures."""

import json

import pytest

pytest.importorskip("transformers")

from kexue.bench.decoding import decoding
from kexue.provenance import command_line


def test_bench_decoding_tiny(tmp_path):
    res = tmp_path / "decoding.json"
    args = {
        "layers": 1,
        "width": 32,
        "heads": 2,
        "vocab": 100,
        "batch": 2,
        "prompt_len": 4,
        "new_tokens": 8,
        "repeats": 1,
    }
    flat = decoding(**args, results=res, out=tmp_path / "run", details=tmp_path / "timings.json")
    assert flat["decoding.parity.greedy"] == 1.0 and flat["decoding.parity.beam4"] == 1.0
    data = json.loads(res.read_text())
    command = command_line("bench decoding", decoding, args)
    assert command == (
        "kexue bench decoding --layers 1 --width 32 --heads 2 --vocab 100 --batch 2 --prompt_len 4 "
        "--new_tokens 8 --repeats 1"
    )
    for key in ("decoding.speedup_vs_hf.greedy", "decoding.speedup_vs_hf.beam4", "decoding.speedup_vs_hf.top_p"):
        assert data[key]["value"] > 0 and data[key]["command"] == command and data[key]["published"] is None
    timings = json.loads((tmp_path / "timings.json").read_text())
    assert timings == json.loads((tmp_path / "run" / "timings.json").read_text())
    assert timings["machine"]["torch_threads"] == 1 and timings["machine"]["cores"] >= 1
    assert timings["targets"]["speedup_vs_hf"]["beam4"] == 1.2 and timings["command"] == command
