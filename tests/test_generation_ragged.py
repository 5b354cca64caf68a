"""Prompts of different lengths in one batch: left padding + attention mask.

Every row of a ragged batch must decode exactly as its prompt alone (our LMs and a transformers
GPT-2), and the transformers adapter must be token-identical to ``generate(..., attention_mask=...)``.
"""

import os

import pytest
import torch

from kexue.errors import KexueError
from kexue.generation import Beam, Greedy, Sample, Stopping, TopP, decode, left_pad
from kexue.models.lm import LMConfig, build_lm

EOS = 3
LENGTHS = (5, 2, 4, 1)  # the longest first, one prompt of a single token


def ragged_prompts(vocab: int, seed: int = 1) -> list[list[int]]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(EOS + 1, vocab, (n,), generator=g).tolist() for n in LENGTHS]


# --- left_pad and the mask checks of decode ------------------------------------------------------


def test_left_pad_puts_the_padding_on_the_left():
    ids, mask = left_pad([[5, 6, 7], [8], torch.tensor([9, 10])], pad_id=0)
    assert ids.tolist() == [[5, 6, 7], [0, 0, 8], [0, 9, 10]]
    assert mask.tolist() == [[1, 1, 1], [0, 0, 1], [0, 1, 1]]
    assert ids.dtype == torch.long and mask.dtype == torch.long


@pytest.mark.parametrize(
    "prompts,pad_id,match",
    [
        ([[5, 6], []], 0, "prompt 1 is empty"),
        ([], 0, "at least one prompt"),
        ([[5, 6]], -1, "pad_id"),
        ([[5, 6]], True, "pad_id"),
        ([[5.5, 6]], 0, "integer token ids"),
        ([[[5, 6]]], 0, "flat sequence"),
        ([[5, -2]], 0, "negative"),
        ([["a"]], 0, "token ids"),
    ],
)
def test_left_pad_refuses_what_is_not_a_batch_of_prompts(prompts, pad_id, match):
    with pytest.raises(KexueError, match=match):
        left_pad(prompts, pad_id)


class Echo:
    """A step that takes no attention mask: next token = last token + 1 (mod 10)."""

    def __call__(self, tokens, state):
        return torch.nn.functional.one_hot((tokens[:, -1] + 1) % 10, 10).float() * 10, None


def test_an_all_ones_mask_is_no_padding():
    prompt = torch.tensor([[1, 2], [4, 5]])
    plain = decode(Echo(), prompt, stopping=Stopping(4))
    masked = decode(Echo(), prompt, stopping=Stopping(4), attention_mask=torch.ones_like(prompt))
    assert torch.equal(plain.tokens, masked.tokens) and plain.tokens[0].tolist() == [3, 4, 5, 6]


@pytest.mark.parametrize(
    "mask,match",
    [
        (torch.ones(2, 3, dtype=torch.long), "shape"),
        ([[1, 1], [0, 1]], "tensor"),
        (torch.tensor([[1, 2], [0, 1]]), "only 0"),
        (torch.tensor([[1, 1], [1, 0]]), "left padding"),
        (torch.tensor([[1, 1], [0, 0]]), "left padding"),
        (torch.tensor([[0, 1], [1, 1]]).bool(), None),  # a bool mask is fine
    ],
)
def test_decode_refuses_a_mask_that_is_not_left_padding(mask, match):
    model = build_lm(LMConfig(arch="lstm", vocab=10, eos_id=EOS, dim=8, layers=1, dropout=0.0)).eval()
    prompt = torch.tensor([[4, 5], [0, 6]])
    if match is None:
        decode(model.step, prompt, stopping=Stopping(2), attention_mask=mask)
        return
    with pytest.raises(KexueError, match=match):
        decode(model.step, prompt, stopping=Stopping(2), attention_mask=mask)


def test_decode_refuses_a_mask_with_an_initial_state():
    model = build_lm(LMConfig(arch="lstm", vocab=10, eos_id=EOS, dim=8, layers=1, dropout=0.0)).eval()
    _, state = model.step(torch.tensor([[4], [5]]))
    with pytest.raises(KexueError, match="initial state"):
        decode(model.step, torch.tensor([[4, 5], [0, 6]]), state=state, attention_mask=torch.tensor([[1, 1], [0, 1]]))


# --- the library's LMs ----------------------------------------------------------------------------


# (weight scale, eos bias) per model, chosen so that greedy rows finish with eos at different steps
# (a random-init model is near uniform: scaling makes its choices depend on the prompt)
PEAKED = {("lstm", "softmax"): (4.0, 0.25), ("lstm", "st"): (1.0, 4.0), ("transformer", "softmax"): (1.0, 0.75)}
PEAKED[("transformer", "st")] = (4.0, 3.0)


def tiny_lm(arch: str, head: str):
    torch.manual_seed(0)
    cfg = LMConfig(
        arch=arch, vocab=20, eos_id=EOS, dim=16, layers=2, heads=2, max_len=64, dropout=0.0, head=head, eps=0.05
    )
    model = build_lm(cfg).eval()
    scale, eos_bias = PEAKED[(arch, head)]
    with torch.no_grad():
        model.embed.weight *= scale
        model.head.proj.weight *= scale
        model.head.proj.bias[EOS] += eos_bias
    return model


ARCHS = [("lstm", "softmax"), ("lstm", "st"), ("transformer", "softmax"), ("transformer", "st")]


@pytest.mark.parametrize("arch,head", ARCHS)
def test_prompt_step_of_a_ragged_batch_is_each_prompt_alone(arch, head):
    model = tiny_lm(arch, head)
    prompts = ragged_prompts(20)
    ids, mask = left_pad(prompts, pad_id=0)
    log_p, state = model.step(ids, None, mask)
    for i, p in enumerate(prompts):
        alone_p, alone_state = model.step(torch.tensor([p]))
        assert torch.allclose(log_p[i], alone_p[0], atol=1e-5)
        # the ST product restarted at the last prompt token of this row: same log alpha as alone
        assert torch.allclose(state[-1][i], alone_state[-1][0], atol=1e-6)
        if arch == "lstm":  # padding never touched the recurrent state
            assert torch.allclose(state[0][i], alone_state[0][0], atol=1e-6)
            assert torch.allclose(state[1][i], alone_state[1][0], atol=1e-6)


@pytest.mark.parametrize("arch,head", ARCHS)
@pytest.mark.parametrize(
    "search", [Greedy(), Beam(3, 1.0, False), Beam(2, 0.0, True)], ids=["greedy", "beam3", "beam2"]
)
@pytest.mark.parametrize("eos", [EOS, None], ids=["eos", "no-eos"])
def test_ragged_batch_decodes_each_prompt_as_alone(arch, head, search, eos):
    model = tiny_lm(arch, head)
    prompts = ragged_prompts(20)
    ids, mask = left_pad(prompts, pad_id=0)
    out = decode(model.step, ids, search=search, stopping=Stopping(8, eos), attention_mask=mask)
    for i, p in enumerate(prompts):
        alone = decode(model.step, torch.tensor([p]), search=search, stopping=Stopping(8, eos))
        assert out.sequences()[i] == alone.sequences()[0]
        n = int(alone.lengths[0])
        assert torch.allclose(out.log_probs[i, :n], alone.log_probs[0, :n], atol=1e-5)
        assert out.scores[i].item() == pytest.approx(alone.scores[0].item(), abs=1e-5)
        assert out.stop_reasons[i] == alone.stop_reasons[0]
    if isinstance(search, Greedy) and eos is not None:  # rows finished at different steps and left the batch
        assert len(set(out.lengths.tolist())) > 1 and "eos" in out.stop_reasons


@pytest.mark.parametrize("arch,head", ARCHS)
def test_ragged_sampling_draws_each_row_from_its_prompt_alone(arch, head):
    model = tiny_lm(arch, head)
    prompts = ragged_prompts(20)
    ids, mask = left_pad(prompts, pad_id=0)
    out = decode(
        model.step, ids, [TopP(1.0)], Sample(), Stopping(8, EOS), torch.Generator().manual_seed(0), attention_mask=mask
    )
    assert "eos" in out.stop_reasons
    for i, p in enumerate(prompts):  # the log-prob of each drawn token under the row alone, teacher-forced
        n = int(out.lengths[i])
        seq = torch.tensor([p + out.sequences()[i]])
        reset = torch.zeros_like(seq, dtype=torch.bool)
        reset[0, len(p) - 1] = True  # as step() does for the prompt alone
        full, _ = model(seq[:, :-1], None, reset[:, :-1])
        expected = full[0, len(p) - 1 :].gather(1, seq[0, len(p) :, None])[:, 0]
        assert torch.allclose(out.log_probs[i, :n], expected, atol=1e-5)


def test_transformer_cache_equals_recompute_with_padding():
    model = tiny_lm("transformer", "softmax")
    ids, mask = left_pad(ragged_prompts(20), pad_id=0)
    x = torch.cat([ids, torch.randint(EOS + 1, 20, (len(ids), 4), generator=torch.Generator().manual_seed(2))], 1)
    full_mask = torch.cat([mask, torch.ones(len(ids), 4, dtype=torch.long)], 1)
    full, _ = model(x, None, torch.zeros_like(x, dtype=torch.bool), full_mask)
    T0 = ids.shape[1]
    log_p, state = model.step(x[:, :T0], None, full_mask[:, :T0])
    steps = [log_p]
    for t in range(T0, x.shape[1]):
        log_p, state = model.step(x[:, t : t + 1], state, full_mask[:, : t + 1])
        steps.append(log_p)
    assert torch.allclose(torch.stack(steps, 1), full[:, T0 - 1 :], atol=1e-5)


def test_lm_refuses_padding_after_the_prompt():
    model = tiny_lm("transformer", "softmax")
    _, state = model.step(torch.tensor([[4, 5], [6, 7]]))
    with pytest.raises(KexueError, match="first call"):
        model.step(torch.tensor([[4], [5]]), state, torch.tensor([[1, 1, 1], [1, 1, 0]]))


# --- a transformers causal LM: parity with generate -----------------------------------------------

V, NEW, HF_EOS = 40, 16, 1


@pytest.fixture(scope="module")
def gpt2():
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    cfg = transformers.GPT2Config(
        vocab_size=V,
        n_positions=64,
        n_embd=32,
        n_layer=2,
        n_head=2,
        bos_token_id=0,
        eos_token_id=HF_EOS,
        pad_token_id=HF_EOS,
    )
    m = transformers.GPT2LMHeadModel(cfg).eval()
    with torch.no_grad():  # make eos likely enough that some hypotheses end before the cap
        m.transformer.wte.weight[HF_EOS] *= 2.5
    return m


@pytest.fixture(scope="module")
def batch():
    prompts = ragged_prompts(V, seed=1)
    return prompts, *left_pad(prompts, pad_id=HF_EOS)


def hf_generate(model, ids, mask, **kw):
    return model.generate(
        ids,
        attention_mask=mask,
        max_new_tokens=NEW,
        pad_token_id=HF_EOS,
        return_dict_in_generate=True,
        output_scores=True,
        **kw,
    )


def test_hf_greedy_ragged_matches_generate_and_each_prompt_alone(gpt2, batch):
    from kexue.generation.hf import HFStep

    prompts, ids, mask = batch
    ours = decode(HFStep(gpt2), ids, search=Greedy(), stopping=Stopping(NEW, HF_EOS), attention_mask=mask)
    hf = hf_generate(gpt2, ids, mask, do_sample=False, eos_token_id=HF_EOS)
    assert torch.equal(ours.tokens, hf.sequences[:, ids.shape[1] :])
    assert set(ours.stop_reasons) == {"eos", "max_length"}
    for i, p in enumerate(prompts):
        alone = decode(HFStep(gpt2), torch.tensor([p]), search=Greedy(), stopping=Stopping(NEW, HF_EOS))
        assert ours.sequences()[i] == alone.sequences()[0]


@pytest.mark.parametrize(
    "num_beams,length_penalty,early_stopping", [(4, 1.0, False), (3, 2.0, "never"), (2, 0.0, True), (4, -1.0, False)]
)
def test_hf_beam_ragged_matches_generate_and_each_prompt_alone(gpt2, batch, num_beams, length_penalty, early_stopping):
    from kexue.generation.hf import HFStep

    prompts, ids, mask = batch
    search = Beam(num_beams, length_penalty, early_stopping)
    ours = decode(HFStep(gpt2), ids, search=search, stopping=Stopping(NEW, HF_EOS), attention_mask=mask)
    hf = hf_generate(
        gpt2,
        ids,
        mask,
        do_sample=False,
        eos_token_id=HF_EOS,
        num_beams=num_beams,
        length_penalty=length_penalty,
        early_stopping=early_stopping,
    )
    assert torch.equal(ours.tokens, hf.sequences[:, ids.shape[1] :])
    assert torch.allclose(ours.scores, hf.sequences_scores, atol=1e-5)
    for i, p in enumerate(prompts):
        alone = decode(HFStep(gpt2), torch.tensor([p]), search=search, stopping=Stopping(NEW, HF_EOS))
        assert ours.sequences()[i] == alone.sequences()[0]
        assert ours.scores[i].item() == pytest.approx(alone.scores[0].item(), abs=1e-4)


def test_hf_top_p_sampling_ragged_matches_generate(gpt2, batch):
    """Same seed, same draws: no eos, so that HF's rows and ours stay the same batch at every step."""
    from kexue.generation.hf import HFStep

    _, ids, mask = batch
    torch.manual_seed(5)
    hf = hf_generate(gpt2, ids, mask, do_sample=True, top_k=0, top_p=0.9, eos_token_id=None)
    ours = decode(
        HFStep(gpt2), ids, [TopP(0.9)], Sample(), Stopping(NEW), torch.Generator().manual_seed(5), attention_mask=mask
    )
    assert torch.equal(ours.tokens, hf.sequences[:, ids.shape[1] :])
