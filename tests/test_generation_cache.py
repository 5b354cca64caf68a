"""The in-place KV cache of ``HFStep`` (``InPlaceLayer``) ≡ a full recompute ≡ transformers' own
``DynamicCache``: step by step through beam-like reorders, dropped rows, left padding and buffer
growth (logits), and through ``decode`` for greedy and beam search with rows that finish early
(tokens, scores)."""

import os

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
transformers = pytest.importorskip("transformers")

from kexue.errors import KexueError
from kexue.generation import Beam, Greedy, Sample, Stopping, TopP, decode, left_pad
from kexue.generation import hf as hfmod
from kexue.generation.hf import HFStep
from kexue.generation.kvcache import KVBuffer

V, EOS, NEW = 40, 1, 24


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    cfg = transformers.GPT2Config(
        vocab_size=V, n_positions=64, n_embd=32, n_layer=2, n_head=2, bos_token_id=0, eos_token_id=EOS, pad_token_id=EOS
    )
    m = transformers.GPT2LMHeadModel(cfg).eval()
    with torch.no_grad():  # eos likely enough that some rows and hypotheses end before the cap
        m.transformer.wte.weight[EOS] *= 2.5
    return m


def prompts(n_rows: int, ragged: bool):
    g = torch.Generator().manual_seed(1)
    lengths = [5, 2, 4, 1, 3, 5][:n_rows] if ragged else [4] * n_rows
    return left_pad([torch.randint(2, V, (n,), generator=g).tolist() for n in lengths], pad_id=EOS)


@torch.no_grad()
def recompute(model, ids, mask):
    """Next-token logits from the whole sequence, no cache (positions as generate counts them)."""
    pos = (mask.cumsum(-1) - 1).clamp(min=0)
    return model(input_ids=ids, attention_mask=mask, position_ids=pos, use_cache=False).logits[:, -1]


def test_the_inplace_cache_uses_inplace_layers_and_dynamic_keeps_transformers(model):
    state_in = HFStep(model, lean=False)(torch.tensor([[3, 4]]), None)[1]
    state_dyn = HFStep(model, cache="dynamic")(torch.tensor([[3, 4]]), None)[1]
    state_lean = HFStep(model)(torch.tensor([[3, 4]]), None)[1]  # a plain GPT-2: the lean step's buffers
    assert all(type(buf) is KVBuffer for buf in state_lean.cache) and len(state_lean.cache) == 2
    assert state_lean.cache[0].length == 2
    assert all(type(layer) is hfmod.InPlaceLayer for layer in state_in.cache.layers)
    assert all(type(layer) is transformers.cache_utils.DynamicLayer for layer in state_dyn.cache.layers)
    assert state_in.cache.get_seq_length() == state_dyn.cache.get_seq_length() == 2


@pytest.mark.parametrize("ragged", [False, True])
def test_inplace_cache_equals_recompute_and_dynamic_through_reorders(model, ragged):
    """Rows reordered as beam search does (repeats, swaps, identity), rows dropped as greedy does,
    capacity exceeded (the buffers grow): every step's logits agree three ways, and the lean GPT-2
    step's (the model's forward for the padded batch) equal the in-place cache's bit for bit."""
    ids, mask = prompts(6, ragged)
    steps = {c: HFStep(model, cache=c, capacity=8, lean=False) for c in ("inplace", "dynamic")}
    steps["lean"] = HFStep(model, capacity=8)
    states = dict.fromkeys(steps)
    logits = {c: steps[c](ids, None, attention_mask=mask if ragged else None) for c in steps}
    g = torch.Generator().manual_seed(0)
    reorders = {
        2: torch.tensor([0, 0, 2, 1, 4, 4]),  # beam-like: repeats and a swap
        3: torch.arange(6),  # identity: nothing moves
        5: torch.tensor([0, 1, 3, 4, 5]),  # greedy: row 2 finished and left
        7: torch.tensor([4, 0, 1, 2]),  # a cycle and a drop
    }
    for t in range(12):
        for c in steps:
            states[c] = logits[c][1]
        assert torch.equal(logits["lean"][0], logits["inplace"][0])
        assert torch.allclose(logits["inplace"][0], logits["dynamic"][0], atol=1e-5)
        assert torch.allclose(logits["inplace"][0], recompute(model, ids, mask), atol=1e-5)
        nxt = torch.randint(2, V, (len(ids), 1), generator=g)
        if t in reorders:
            index = reorders[t]
            ids, mask, nxt = ids[index], mask[index], nxt[index]
            for c in steps:
                states[c] = states[c].reorder(index)
        ids, mask = torch.cat([ids, nxt], 1), torch.cat([mask, torch.ones_like(nxt)], 1)
        for c in steps:
            logits[c] = steps[c](nxt, states[c], attention_mask=mask if ragged else None)
    layer = states["inplace"].cache.layers[0]
    assert layer.buf.allocated >= ids.shape[1] > 8  # grew past the preallocated capacity
    assert layer.keys.shape[:3] == (4, 2, ids.shape[1])
    lean = states["lean"].cache
    assert isinstance(lean, list) != ragged  # the lean step for plain prompts, the model's forward for padded ones
    if not ragged:
        assert lean[0].allocated >= ids.shape[1] and lean[0].keys.shape[:3] == (4, 2, ids.shape[1])


def test_a_reorder_that_moves_no_row_copies_nothing(model):
    state = HFStep(model, lean=False)(torch.randint(2, V, (4, 3)), None)[1]
    layer = state.cache.layers[0]
    before = layer.keys.clone(), layer.buf._k.data_ptr()
    state.reorder(torch.arange(4))
    assert layer.buf._k.data_ptr() == before[1] and layer.buf._k2 is None  # no spare buffer was even needed
    state.reorder(torch.arange(3))  # the last row finished: dropped from the end, in place
    assert layer.buf._k.data_ptr() == before[1] and torch.equal(layer.keys, before[0][:3])
    state.reorder(torch.tensor([1, 1, 0]))
    assert torch.equal(layer.keys, before[0][[1, 1, 0]])


def test_transformers_cache_methods_work_on_inplace_layers(model):
    state = HFStep(model, lean=False)(torch.randint(2, V, (2, 5)), None)[1]
    full = state.cache.layers[0].keys.clone()
    state.cache.batch_repeat_interleave(2)
    assert torch.equal(state.cache.layers[0].keys, full.repeat_interleave(2, 0))
    state.cache.batch_select_indices(torch.tensor([0, 3]))
    assert torch.equal(state.cache.layers[0].keys, full)
    state.cache.crop(-2)
    assert state.cache.get_seq_length() == 3 and torch.equal(state.cache.layers[0].keys, full[:, :, :3])
    state.cache.reset()
    assert state.cache.get_seq_length() == 0


SEARCHES = [
    Greedy(),
    Beam(4, 1.0, False),
    Beam(3, 1.0, "never"),
    Beam(4, 0.0, True),
]


@pytest.mark.parametrize("search", SEARCHES, ids=lambda s: type(s).__name__ + str(getattr(s, "num_beams", "")))
@pytest.mark.parametrize("ragged", [False, True])
def test_decode_is_identical_with_the_inplace_and_the_dynamic_cache(model, search, ragged):
    ids, mask = prompts(4, ragged)
    kw = {"attention_mask": mask} if ragged else {}
    out = {
        c: decode(HFStep(model, cache=c, lean=False), ids, search=search, stopping=Stopping(NEW, EOS), **kw)
        for c in ("inplace", "dynamic")
    }
    out["lean"] = decode(HFStep(model), ids, search=search, stopping=Stopping(NEW, EOS), **kw)
    assert torch.equal(out["lean"].tokens, out["inplace"].tokens) and torch.equal(
        out["lean"].scores, out["inplace"].scores
    )
    assert torch.equal(out["inplace"].tokens, out["dynamic"].tokens)
    assert torch.allclose(out["inplace"].scores, out["dynamic"].scores, atol=1e-5)
    assert out["inplace"].stop_reasons == out["dynamic"].stop_reasons
    assert "eos" in out["inplace"].stop_reasons  # rows (or hypotheses) finished before the cap
    if isinstance(search, Greedy):
        assert len(set(out["inplace"].lengths.tolist())) > 1  # rows left the batch at different steps


def test_sampling_is_identical_with_the_inplace_and_the_dynamic_cache(model):
    ids, mask = prompts(4, True)
    out = [
        decode(
            HFStep(model, cache=c),
            ids,
            [TopP(0.9)],
            Sample(),
            Stopping(NEW, EOS),
            torch.Generator().manual_seed(4),
            attention_mask=mask,
        )
        for c in ("inplace", "dynamic")
    ]
    assert torch.equal(out[0].tokens, out[1].tokens)


def test_the_fast_head_and_the_model_head_agree(model, monkeypatch):
    ids = torch.randint(2, V, (12, 4), generator=torch.Generator().manual_seed(5))
    expected = model(input_ids=ids).logits[:, -1]
    for rows in (0, 100):  # the model's layout for every batch, then W @ h^T for every batch
        monkeypatch.setattr(hfmod, "FAST_HEAD_ROWS", rows)
        logits, _ = HFStep(model)(ids, None)
        assert torch.allclose(logits, expected, atol=1e-5)


@pytest.mark.parametrize(
    "kw,match",
    [({"cache": "static"}, "cache must be"), ({"capacity": -1}, "capacity"), ({"capacity": True}, "capacity")],
)
def test_hfstep_refuses_bad_cache_settings(model, kw, match):
    with pytest.raises(KexueError, match=match):
        HFStep(model, **kw)


@torch.no_grad()
def test_the_lean_gpt2_step_reproduces_the_models_hidden_states_bit_for_bit(model):
    """Prompt, single steps and a multi-token continuation after a cached past: the lean forward
    against ``GPT2Model`` with transformers' own cache (equal, not close), and the continuation
    against a full recompute."""
    lean = hfmod._lean_gpt2(model)
    assert lean is not None
    g = torch.Generator().manual_seed(3)
    ids = torch.randint(2, V, (3, 5), generator=g)
    cache, ref_cache, seen = lean.new_cache(), None, torch.empty(3, 0, dtype=torch.long)
    for t in (5, 1, 1, 3, 1):
        new = ids if seen.shape[1] == 0 else torch.randint(2, V, (3, t), generator=g)
        mine = lean(new, cache, seen.shape[1])
        out = model.transformer(input_ids=new, cache=ref_cache, use_cache=True)
        ref_cache = out.cache if hasattr(out, "cache") else out.past_key_values
        if t == 1 or seen.shape[1] == 0:
            assert torch.equal(mine, out.last_hidden_state[:, -1])
        seen = torch.cat([seen, new], 1)
        full = model.transformer(input_ids=seen, use_cache=False).last_hidden_state[:, -1]
        assert torch.allclose(mine, full, atol=1e-5)


def test_the_lean_step_is_used_only_where_it_reproduces_the_model(model):
    """Eager attention (another softmax rounding) and forward hooks (which only module calls run)
    keep the model's own forward; a decode started without a mask refuses one later."""
    assert HFStep(model).lean is not None
    assert HFStep(model, lean=False).lean is None and HFStep(model, cache="dynamic").lean is None
    cfg = model.config.__class__(**{**model.config.to_dict(), "_attn_implementation": "eager"})
    eager = transformers.GPT2LMHeadModel._from_config(cfg, attn_implementation="eager").eval()
    assert hfmod._lean_gpt2(eager) is None
    handle = model.transformer.h[0].mlp.register_forward_hook(lambda *a: None)
    try:
        assert hfmod._lean_gpt2(model) is None
    finally:
        handle.remove()
    step = HFStep(model)
    handle = model.transformer.h[0].mlp.register_forward_hook(lambda *a: None)  # added after HFStep was made
    try:
        _, state = step(torch.tensor([[3, 4]]), None)
        assert not isinstance(state.cache, list)  # checked again at the start of a decode: the model's forward
    finally:
        handle.remove()
    model.train()
    try:
        assert not isinstance(step(torch.tensor([[3, 4]]), None)[1].cache, list)  # dropout: the model's forward
    finally:
        model.eval()
    _, state = step(torch.tensor([[3, 4]]), None)
    assert isinstance(state.cache, list)
    with pytest.raises(KexueError, match="cannot take one later"):
        step(torch.tensor([[5]]), state, attention_mask=torch.ones(1, 3, dtype=torch.long))
