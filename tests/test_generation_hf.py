"""Parity with HF ``generate`` and HF's logits processors on a random-init GPT-2-shape model."""

import os

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
transformers = pytest.importorskip("transformers")
from transformers.generation import logits_process as hfp

from kexue.generation import (
    Beam,
    EosLengthBoost,
    ForceEosAtMaxLength,
    Greedy,
    MinLength,
    MinP,
    NoRepeatNGram,
    RepetitionPenalty,
    Stopping,
    Temperature,
    TopK,
    TopP,
    Typical,
    decode,
)
from kexue.generation.hf import HFStep

EOS, V, T0, NEW = 1, 40, 4, 16


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    cfg = transformers.GPT2Config(
        vocab_size=V, n_positions=64, n_embd=32, n_layer=2, n_head=2, bos_token_id=0, eos_token_id=EOS, pad_token_id=EOS
    )
    m = transformers.GPT2LMHeadModel(cfg).eval()
    with torch.no_grad():  # make eos likely enough that some hypotheses end before the cap
        m.transformer.wte.weight[EOS] *= 2.5
    return m


@pytest.fixture(scope="module")
def prompt():
    return torch.randint(2, V, (4, T0), generator=torch.Generator().manual_seed(1))


def hf_generate(model, prompt, **kw):
    out = model.generate(
        prompt,
        attention_mask=torch.ones_like(prompt),
        max_new_tokens=NEW,
        pad_token_id=EOS,
        eos_token_id=EOS,
        do_sample=False,
        return_dict_in_generate=True,
        output_scores=True,
        **kw,
    )
    return out


def test_greedy_matches_generate(model, prompt):
    ours = decode(HFStep(model), prompt, search=Greedy(), stopping=Stopping(NEW, EOS))
    hf = hf_generate(model, prompt).sequences[:, T0:]
    assert torch.equal(ours.tokens, hf)
    assert set(ours.stop_reasons) == {"eos", "max_length"}  # both ways of stopping are exercised


@pytest.mark.parametrize(
    "num_beams,length_penalty,early_stopping",
    [(4, 1.0, False), (4, 0.0, True), (3, 2.0, "never"), (2, -1.0, False), (4, 1.0, "never")],
)
def test_beam_matches_generate(model, prompt, num_beams, length_penalty, early_stopping):
    ours = decode(
        HFStep(model), prompt, search=Beam(num_beams, length_penalty, early_stopping), stopping=Stopping(NEW, EOS)
    )
    hf = hf_generate(model, prompt, num_beams=num_beams, length_penalty=length_penalty, early_stopping=early_stopping)
    assert torch.equal(ours.tokens, hf.sequences[:, T0:])
    assert torch.allclose(ours.scores, hf.sequences_scores, atol=1e-5)


def test_processors_match_hf():
    g = torch.Generator().manual_seed(3)
    scores = torch.randn(5, V, generator=g) * 3
    scores[0, :10] = -scores[0, :10].abs()  # negative logits for the repetition penalty
    tokens = torch.randint(0, 6, (5, 12), generator=g)  # small alphabet: repeated n-grams occur
    pairs = [
        (Temperature(0.7), hfp.TemperatureLogitsWarper(0.7)),
        (TopK(5), hfp.TopKLogitsWarper(5)),
        (TopP(0.8), hfp.TopPLogitsWarper(0.8)),
        (MinP(0.1), hfp.MinPLogitsWarper(0.1)),
        (Typical(0.6), hfp.TypicalLogitsWarper(0.6)),
        (RepetitionPenalty(1.7), hfp.RepetitionPenaltyLogitsProcessor(1.7)),
        (NoRepeatNGram(2), hfp.NoRepeatNGramLogitsProcessor(2)),
        (NoRepeatNGram(3), hfp.NoRepeatNGramLogitsProcessor(3)),
        (MinLength(13, EOS), hfp.MinLengthLogitsProcessor(13, EOS)),
        (ForceEosAtMaxLength(13, EOS), hfp.ForcedEOSTokenLogitsProcessor(13, EOS)),
        (EosLengthBoost(2, 1.3, EOS, prompt_length=4), hfp.ExponentialDecayLengthPenalty((2, 1.3), EOS, 4)),
    ]
    for ours, theirs in pairs:
        expected = theirs(tokens, scores.clone())
        got = ours(tokens, scores)
        assert torch.equal(torch.isinf(got), torch.isinf(expected)), type(ours).__name__
        assert torch.allclose(got, expected, atol=1e-6), type(ours).__name__
    assert torch.isinf(NoRepeatNGram(2)(tokens, scores)).any()  # the n-gram case is not vacuous
