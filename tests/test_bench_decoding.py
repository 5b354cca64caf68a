"""`kexue bench decoding` at toy size: same tokens as HF generate, the JSON keys the issue names."""

import json

import pytest

pytest.importorskip("transformers")

from kexue.bench.decoding import decoding  # noqa: E402


def test_bench_decoding_tiny(tmp_path):
    res = tmp_path / "decoding.json"
    flat = decoding(layers=1, width=32, heads=2, vocab=100, batch=2, prompt_len=4, new_tokens=8, repeats=1,
                    results=res, out=tmp_path / "run")
    assert flat["decoding.parity.greedy"] == 1.0 and flat["decoding.parity.beam4"] == 1.0
    data = json.loads(res.read_text())
    for key in ("decoding.speedup_vs_hf.greedy", "decoding.speedup_vs_hf.beam4", "decoding.speedup_vs_hf.top_p"):
        assert data[key]["value"] > 0 and "kexue bench decoding" in data[key]["command"]
