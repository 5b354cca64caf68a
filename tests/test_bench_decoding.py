"""`kexue bench decoding` at toy size: same tokens as HF generate, the documented JSON keys, the
command derived from the call and the machine facts beside the figures."""

import json

import pytest
import torch

pytest.importorskip("transformers")

from kexue.bench.decoding import decoding, parse_grid
from kexue.errors import KexueError
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
    assert flat["decoding.parity.top_p"] == 1.0  # same seed, same draws: the sampled tokens match generate's
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


def test_bench_decoding_grid_cells_are_measured_against_generate_in_the_same_run(tmp_path):
    args = {"layers": 1, "width": 32, "heads": 2, "vocab": 100, "batch": 2, "prompt_len": 4, "new_tokens": 4}
    flat = decoding(**args, repeats=1, modes="greedy,beam4", grid="1x4,2x12", out=tmp_path / "run")
    for cell in ("", "b1_n4.", "b2_n12."):
        for mode in ("greedy", "beam4"):
            assert flat[f"decoding.speedup_vs_hf.{cell}{mode}"] > 0
            assert flat[f"decoding.parity.{cell}{mode}"] == 1.0  # same tokens as generate in every cell
        # our reorders copy part of what generate's copy (the beams share the prompt at least)
        assert 0 < flat[f"decoding.cache_copy_share.{cell}beam4"] < 1
    raw = json.loads((tmp_path / "run" / "timings.json").read_text())["raw"]
    assert raw["b2_n12.beam4"]["batch"] == 2 and raw["b2_n12.beam4"]["new_tokens"] == 12
    assert (
        "--grid 1x4,2x12"
        in json.loads((tmp_path / "run" / "results.json").read_text())["decoding.parity.b1_n4.greedy"]["command"]
    )


def test_bench_decoding_refuses_a_bad_grid(tmp_path):
    assert parse_grid(None) == [] and parse_grid("1x128, 8X512") == [(1, 128), (8, 512)]
    for bad in ("1x", "0x8", "8", "ax2", "1x2x3", "-1x4"):
        with pytest.raises(KexueError, match="--grid"):
            parse_grid(bad)
    with pytest.raises(KexueError, match="positions"):
        decoding(grid="1x1020", out=tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_sampled_parity_holds_up_to_the_first_eos():
    """A row that ends leaves our batch but not generate's: the random streams part there, not before."""
    from kexue.bench.decoding import build_gpt2, run_hf, run_ours, token_parity

    model = build_gpt2(1, 32, 2, 20, 0)
    prompt = torch.randint(0, 20, (4, 4), generator=torch.Generator().manual_seed(0))
    ours, hf = run_ours(model, prompt, "top_p", 30, 3, 0), run_hf(model, prompt, "top_p", 30, 3, 0)
    assert (ours == 3).any() and ours.shape != hf.shape  # eos was drawn: the full comparison fails
    assert token_parity(ours, hf, 3, sampled=True) == 1.0
    assert token_parity(ours, hf, 3) == 0.0
    changed = ours.clone()
    changed[0, 0] = (changed[0, 0] + 1) % 20
    assert token_parity(changed, hf, 3, sampled=True) == 0.75  # a difference before the eos still counts
