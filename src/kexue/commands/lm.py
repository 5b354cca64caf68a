"""``kexue lm train / generate / termination``: word-level LMs and the non-termination study.

The study (Welleck et al. 2020; kexue.fm/archives/7500): continue 10-token prefixes of PTB test
sentences with each decoder, up to a cap of L generated tokens, and count the continuations
that never emit eos (non-termination ratio r_L), for a vanilla and a self-terminating model.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict
from pathlib import Path
from typing import Callable

import torch
from tqdm.auto import tqdm

from kexue.analysis.repetition import repetition_metrics
from kexue.data.text import Vocab, load_corpus, token_stream, LMBatches
from kexue.errors import KexueError
from kexue.generation import (Beam, ConsistentTopK, ConsistentTopP, DecodeOutput, Greedy, Sample, Stopping, TopK,
                              TopP, decode)
from kexue.io import make_run_dir, write_json
from kexue.models.lm import LMConfig, build_lm, lm_loss, perplexity
from kexue.results import Figure, write_results
from kexue.training import TrainConfig, fit
from kexue.training.checkpoint import load_weights, save_weights

# Decoders of the study: name -> (processors(eos), search). Paper: top-2/4, nucleus 0.2/0.4.
DECODERS: dict[str, Callable[[int], tuple[list, object]]] = {
    "greedy": lambda eos: ([], Greedy()),
    "beam2": lambda eos: ([], Beam(2, length_penalty=1.0, early_stopping=True)),
    "beam4": lambda eos: ([], Beam(4, length_penalty=1.0, early_stopping=True)),
    "topk": lambda eos: ([TopK(2)], Sample()),
    "topp": lambda eos: ([TopP(0.2)], Sample()),
    "consistent_topk": lambda eos: ([ConsistentTopK(2, eos)], Sample()),
    "consistent_topp": lambda eos: ([ConsistentTopP(0.2, eos)], Sample()),
    "ancestral": lambda eos: ([], Sample()),
}

# Hook for per-decoder metrics computed from the generated token sequences (e.g. the repetition
# metrics of article 7): name -> fn(sequences: list[list[int]], eos_id) -> {metric: float}.
# Each metric lands in the results as termination.<model>.<decoder>.<metric>.
REPETITION_KEYS = ("rep_w", "rep_r", "seq_rep_4", "distinct_2", "loop_fraction")


def repetition_row(sequences: list[list[int]], eos: int) -> dict[str, float]:
    """The repetition metrics of article 7 (kexue.analysis.repetition) for one decoder's outputs."""
    metrics = repetition_metrics(sequences, eos=eos)
    return {k: metrics[k] for k in REPETITION_KEYS}


SEQUENCE_METRICS: dict[str, Callable[[list[list[int]], int], dict[str, float]]] = {"repetition": repetition_row}


def _set_threads(threads: int | None) -> None:
    if threads:
        torch.set_num_threads(threads)


def load_lm(run: str | Path) -> tuple[torch.nn.Module, Vocab, LMConfig]:
    """Model (eval mode), vocabulary and config saved by ``kexue lm train`` in ``run``."""
    run = Path(run)
    if not (run / "model.json").is_file():
        raise KexueError(f"{run} holds no trained LM (model.json missing); run `kexue lm train --out {run}` first")
    cfg = LMConfig(**json.loads((run / "model.json").read_text()))
    model = build_lm(cfg)
    load_weights(model, run / "model.safetensors")
    return model.eval(), Vocab.load(run / "vocab.json"), cfg


def train(arch: str = "lstm", head: str = "softmax", eps: float = 5e-4, dim: int = 256, layers: int = 2,
          heads: int = 4, dropout: float = 0.3, corpus: str = "ptb", steps: int = 2000, batch_size: int = 32,
          bptt: int = 35, lr: float = 2e-3, eval_every: int = 500, eval_tokens: int = 20000,
          max_vocab: int | None = None, seed: int = 0,
          threads: int | None = None, resume: bool = False, out: Path | None = None) -> Path:
    """Train a word-level LM (vanilla or self-terminating) on PTB through the shared fit().

    Args:
        arch: lstm or transformer.
        head: softmax (vanilla) or st (self-terminating output layer).
        eps: rate of the self-terminating layer (greedy stops within -ln2/ln(1-eps) steps).
        dim: embedding and hidden width.
        layers: number of LSTM / Transformer layers.
        heads: attention heads (transformer).
        dropout: dropout rate.
        corpus: "ptb" or a folder with train.txt / valid.txt / test.txt.
        steps: optimizer steps.
        batch_size: parallel rows of the token stream.
        bptt: tokens per window.
        lr: Adam learning rate (cosine decay).
        eval_every: validation perplexity every N steps.
        eval_tokens: validation tokens used during training (the final test uses all).
        max_vocab: keep only the most frequent words (others become <unk>); None keeps all 10k of PTB.
        seed: seed of initialisation and batches.
        threads: torch CPU threads (default: torch's choice).
        resume: continue from the last checkpoint in --out.
        out: run folder (default runs/lm-train-<time>).
    Returns:
        The run folder (model.safetensors, model.json, vocab.json, results.json).
    """
    _set_threads(threads)
    out = make_run_dir(out, "lm-train", {k: v for k, v in locals().items() if k != "out"} | {"out": out})
    torch.manual_seed(seed)
    train_s = load_corpus(corpus, "train")
    vocab = Vocab.build(train_s, max_size=max_vocab)
    cfg = LMConfig(arch=arch, vocab=len(vocab), eos_id=vocab.eos, dim=dim, layers=layers, heads=heads,
                   max_len=max(bptt, 2048), dropout=dropout, head=head, eps=eps)
    model = build_lm(cfg)
    valid = token_stream(load_corpus(corpus, "valid"), vocab)[:eval_tokens]
    data = LMBatches(token_stream(train_s, vocab), batch_size, bptt)
    tc = TrainConfig(steps=steps, lr=lr, schedule="cosine", warmup_steps=min(100, steps // 10), min_lr_ratio=0.05,
                     eval_every=eval_every, ckpt_every=eval_every, seed=seed, clip_norm=0.5, log_every=50)
    t0 = time.perf_counter()
    result = fit(model, lm_loss, data, tc, out, eval_fn=lambda m: {"valid_ppl": perplexity(m, valid)},
                 resume=resume, desc=f"lm {arch}/{head}")
    model.eval()
    test_ppl = perplexity(model, token_stream(load_corpus(corpus, "test"), vocab))
    save_weights(model, out / "model.safetensors")
    write_json(out / "model.json", asdict(cfg))
    vocab.save(out / "vocab.json")
    cmd = (f"kexue lm train --arch {arch} --head {head} --eps {eps} --dim {dim} --steps {steps} "
           f"--max_vocab {max_vocab} --out {out}")
    write_results(out / "results.json", [Figure(f"lm.{arch}_{head}.test_ppl", test_ppl, command=cmd)])
    print(f"lm {arch}/{head}: {result.step} steps in {time.perf_counter() - t0:.0f} s, "
          f"train loss {result.train.get('loss', float('nan')):.3f}, test perplexity {test_ppl:.1f} -> {out}")
    return out


def _prompt_ids(vocab: Vocab, text: str) -> list[int]:
    return [vocab.eos] + vocab.encode(text.split())  # eos marks a sentence start in the stream


def generate(run: Path, prompt: str, decoder: str = "greedy", max_new_tokens: int = 50, samples: int = 1,
             seed: int = 0) -> list[str]:
    """Continue a prompt with a trained LM.

    Args:
        run: folder written by `kexue lm train`.
        prompt: words to continue (space separated, PTB style).
        decoder: one of greedy, beam2, beam4, topk, topp, consistent_topk, consistent_topp, ancestral.
        max_new_tokens: cap on generated tokens.
        samples: continuations to draw (sampling decoders).
        seed: seed of the sampling generator.
    Returns:
        The continuations as text.
    """
    if decoder not in DECODERS:
        raise KexueError(f"unknown decoder {decoder!r}; choose from {', '.join(DECODERS)}")
    model, vocab, cfg = load_lm(run)
    procs, search = DECODERS[decoder](vocab.eos)
    ids = torch.tensor([_prompt_ids(vocab, prompt)] * samples)
    out = decode(model.step, ids, procs, search, Stopping(max_new_tokens, vocab.eos),
                 torch.Generator().manual_seed(seed))
    texts = []
    for seq, reason in zip(out.sequences(), out.stop_reasons):
        text = " ".join(vocab.decode(seq))
        texts.append(text)
        print(f"{prompt} | {text}  [{reason}, {len(seq)} tokens]")
    return texts


def test_prefixes(vocab: Vocab, corpus: str, count: int, length: int = 10) -> torch.Tensor:
    """(count, 1 + length) prompts: eos then the first ``length`` words of test sentences longer than that."""
    sents = [s for s in load_corpus(corpus, "test") if len(s) > length][:count]
    if not sents:
        raise KexueError(f"no test sentence has more than {length} words")
    return torch.tensor([_prompt_ids(vocab, " ".join(s[:length])) for s in sents])


def decode_in_chunks(model, prompts: torch.Tensor, decoder: str, eos: int, cap: int, seed: int,
                     chunk: int) -> DecodeOutput:
    """Decode ``prompts`` with a study decoder, ``chunk`` rows at a time; outputs concatenated."""
    procs, search = DECODERS[decoder](eos)
    g = torch.Generator().manual_seed(seed)
    parts = [decode(model.step, prompts[i: i + chunk], procs, search, Stopping(cap, eos), g)
             for i in range(0, len(prompts), chunk)]
    width = max(p.tokens.shape[1] for p in parts)

    def pad(t, v):
        return torch.nn.functional.pad(t, (0, width - t.shape[1]), value=v)

    return DecodeOutput(torch.cat([pad(p.tokens, eos) for p in parts]), torch.cat([pad(p.log_probs, 0.0) for p in parts]),
                        torch.cat([p.lengths for p in parts]), torch.cat([p.finished for p in parts]),
                        [r for p in parts for r in p.stop_reasons], torch.cat([p.scores for p in parts]))


def termination_rows(out: DecodeOutput, eos: int) -> dict[str, float]:
    """Non-termination ratio, mean length, unique share of non-terminated continuations, + hook metrics."""
    nonterm = ~out.finished
    seqs = out.sequences()
    stuck = [tuple(s) for s, n in zip(seqs, nonterm.tolist()) if n]
    row = {"nonterminating": nonterm.float().mean().item(),
           "mean_length": out.lengths.float().mean().item(),
           "unique_nonterminated": len(set(stuck)) / len(stuck) if stuck else 0.0}
    for fn in SEQUENCE_METRICS.values():
        row.update(fn(seqs, eos))
    return row


def termination(models: str, decoders: str = ",".join(DECODERS), prefixes: int = 200, cap: int = 1500,
                corpus: str = "ptb", seed: int = 0, chunk: int = 100, threads: int | None = None,
                results: Path | None = None, out: Path | None = None) -> dict[str, float]:
    """The non-termination study: each model x decoder on 10-token PTB test prefixes.

    Args:
        models: comma-separated name=run_folder pairs, e.g. vanilla=runs/lm-va,st=runs/lm-st.
        decoders: comma-separated decoders (default: all eight).
        prefixes: number of test prefixes (one continuation each).
        cap: the length cap L on generated tokens.
        corpus: "ptb" or a folder with test.txt.
        seed: seed of the sampling generator.
        chunk: prefixes decoded together.
        threads: torch CPU threads.
        results: also write the figures to this results JSON (e.g. benchmarks/results/termination.json).
        out: run folder (default runs/lm-termination-<time>).
    Returns:
        Flat mapping termination.<model>.<decoder>.<metric> and termination.<model>.ppl.
    """
    _set_threads(threads)
    out = make_run_dir(out, "lm-termination", {k: v for k, v in locals().items() if k != "out"} | {"out": out})
    pairs = [m.split("=", 1) for m in models.split(",") if m.strip()]
    if not pairs or any(len(p) != 2 for p in pairs):
        raise KexueError("--models must be name=run_folder pairs separated by commas")
    names = [d.strip() for d in decoders.split(",") if d.strip()]
    unknown = [d for d in names if d not in DECODERS]
    if unknown:
        raise KexueError(f"unknown decoder(s) {', '.join(unknown)}; choose from {', '.join(DECODERS)}")
    cmd = f"kexue lm termination --models {models} --prefixes {prefixes} --cap {cap}"
    figures, flat = [], {}
    bar = tqdm(total=len(pairs) * len(names), desc="termination", dynamic_ncols=True)
    for name, run in pairs:
        model, vocab, cfg = load_lm(run)
        ppl = perplexity(model, token_stream(load_corpus(corpus, "test"), vocab))
        figures.append(Figure(f"termination.{name}.ppl", ppl, command=cmd))
        prompts = test_prefixes(vocab, corpus, prefixes)
        for dec in names:
            t0 = time.perf_counter()
            o = decode_in_chunks(model, prompts, dec, vocab.eos, cap, seed, chunk)
            row = termination_rows(o, vocab.eos)
            for metric, value in row.items():
                figures.append(Figure(f"termination.{name}.{dec}.{metric}", value, command=cmd))
            bar.update(1)
            bar.write(f"{name:>10} {dec:>16}: non-terminating {row['nonterminating']:.3f}, "
                      f"mean length {row['mean_length']:.1f} ({time.perf_counter() - t0:.0f} s)")
    bar.close()
    write_results(out / "results.json", figures)
    if results is not None:
        write_results(results, figures, merge=True)
    flat = {f.key: f.value for f in figures}
    print(f"termination: {len(pairs)} models x {len(names)} decoders, {prefixes} prefixes, cap {cap} -> {out}")
    return flat
