"""``kexue lm train / generate / termination``: word-level LMs and the non-termination study.

The study (Welleck et al. 2020; kexue.fm/archives/7500): continue 10-token prefixes of PTB test
sentences with each decoder, up to a cap of L generated tokens, and count the continuations
that never emit eos (non-termination ratio r_L), for a vanilla and a self-terminating model.
"""

from __future__ import annotations

import dataclasses
import math
import re
import time
from dataclasses import asdict
from pathlib import Path
from typing import Callable, Literal

import torch
from kexue.progress import progress

from kexue.analysis.repetition import repetition_metrics
from kexue.data.text import LMBatches, Vocab, load_corpus, token_stream
from kexue.errors import KexueError
from kexue.generation import (Beam, ConsistentTopK, ConsistentTopP, DecodeOutput, Greedy, Sample, Stopping, TopK,
                              TopP, decode)
from kexue.io import check_output_dir, check_output_file, make_run_dir, read_json, run_config, write_json
from kexue.models.lm import LMConfig, build_lm, lm_loss, perplexity
from kexue.params import (Dropout, NonNegativeInt, OpenUnitInterval, PositiveFloat, PositiveInt, check,
                          set_threads)
from kexue.results import Figure, write_results
from kexue.training import TrainConfig, fit
from kexue.training.checkpoint import latest_checkpoint, load_weights, save_weights

Arch = Literal["lstm", "transformer"]
Head = Literal["softmax", "st"]
# The names of DECODERS, as a type the parser checks (tests keep the two in step).
DecoderName = Literal["greedy", "beam2", "beam4", "topk", "topp", "consistent_topk", "consistent_topp", "ancestral"]
PREFIX_WORDS = 10  # words of a test sentence that prompt each continuation of the study

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


# What one perplexity batch reads: 16 rows of at least 2 tokens (kexue.models.lm.perplexity).
MIN_PERPLEXITY_TOKENS = 32


def _check_perplexity_stream(stream: torch.Tensor, what: str) -> None:
    check(len(stream) >= MIN_PERPLEXITY_TOKENS,
          f"{what} has {len(stream)} tokens; a perplexity needs at least {MIN_PERPLEXITY_TOKENS}")


def _check_resumable(out: Path | None) -> None:
    """Before anything is written: a --resume needs a complete checkpoint in an existing run folder."""
    if out is None or not (Path(out) / "config.yaml").is_file():
        return  # make_run_dir explains what is wrong with the folder
    found = [p for p in (Path(out) / "checkpoints").glob("step-*")
             if (p / "model.safetensors").is_file() and (p / "state.pt").is_file()]
    check(bool(found), f"--resume: no checkpoint to resume from in {Path(out) / 'checkpoints'}; "
                       "start again with --overwrite")


def _model_config(path: Path) -> LMConfig:
    """The :class:`LMConfig` of a ``model.json``; unknown, missing or bad values name the file."""
    data = read_json(path, "model config")
    fields = {f.name for f in dataclasses.fields(LMConfig)}
    unknown, missing = sorted(set(data) - fields), sorted(fields - set(data))
    if unknown or missing:
        what = "; ".join(part for part in (unknown and f"unknown key(s) {', '.join(unknown)}",
                                           missing and f"missing key(s) {', '.join(missing)}") if part)
        raise KexueError(f"model config {path} does not describe an `lm train` model ({what})")
    try:
        return LMConfig(**data)
    except KexueError as e:
        raise KexueError(f"model config {path}: {e}") from None


def check_run(run: str | Path, label: str | None = None) -> tuple[LMConfig, Vocab]:
    """Config and vocabulary of a finished ``kexue lm train`` run, without loading the weights.

    ``label`` names the run in messages (default ``--run RUN``).

    Raises:
        KexueError: ``run`` is not a run folder of ``lm train`` (e.g. a vae-cluster run), is not
            finished, or its model.json / vocab.json is malformed or does not match.
    """
    run = Path(run)
    label = label or f"--run {run}"
    if not run.is_dir():
        raise KexueError(f"{label}: {'not found' if not run.exists() else 'is not a folder'}")
    if not (run / "config.yaml").is_file():
        raise KexueError(f"{label} is not a kexue run folder (no config.yaml); "
                         f"train one with `kexue lm train --out {run}`")
    command, _ = run_config(run)
    if command != "lm-train":
        raise KexueError(f"{label} was written by {command or 'an unknown command'}, not by lm-train")
    if not (run / "model.json").is_file() or not (run / "model.safetensors").is_file():
        raise KexueError(f"{label} holds no trained LM yet (model.json or model.safetensors missing); "
                         f"finish it with `kexue lm train --resume --out {run}`")
    cfg = _model_config(run / "model.json")
    vocab = Vocab.load(run / "vocab.json")
    check(len(vocab) == cfg.vocab and vocab.eos == cfg.eos_id,
          f"{label}: vocab.json ({len(vocab)} words) does not match model.json (vocab {cfg.vocab})")
    return cfg, vocab


def load_lm(run: str | Path, label: str | None = None) -> tuple[torch.nn.Module, Vocab, LMConfig]:
    """Model (eval mode), vocabulary and config saved by ``kexue lm train`` in ``run``."""
    cfg, vocab = check_run(run, label)
    model = build_lm(cfg)
    load_weights(model, Path(run) / "model.safetensors")
    return model.eval(), vocab, cfg


def train(arch: Arch = "lstm", head: Head = "softmax", eps: OpenUnitInterval = 5e-4, dim: PositiveInt = 256,
          layers: PositiveInt = 2, heads: PositiveInt = 4, dropout: Dropout = 0.3, corpus: str = "ptb",
          steps: PositiveInt = 2000, batch_size: PositiveInt = 32, bptt: PositiveInt = 35, lr: PositiveFloat = 2e-3,
          eval_every: NonNegativeInt = 500, eval_tokens: PositiveInt = 20000, max_vocab: PositiveInt | None = None,
          seed: NonNegativeInt = 0, threads: PositiveInt | None = None, resume: bool = False, overwrite: bool = False,
          out: Path | None = None) -> Path:
    """Train a word-level LM (vanilla or self-terminating) on PTB through the shared fit().

    Args:
        arch: lstm or transformer.
        head: softmax (vanilla) or st (self-terminating output layer).
        eps: rate of the self-terminating layer, in (0, 1) (greedy stops within -ln2/ln(1-eps) steps).
        dim: embedding and hidden width (a multiple of heads for the transformer).
        layers: number of LSTM / Transformer layers.
        heads: attention heads (transformer).
        dropout: dropout rate, in [0, 1).
        corpus: "ptb" or a folder with train.txt / valid.txt / test.txt.
        steps: optimizer steps.
        batch_size: parallel rows of the token stream.
        bptt: tokens per window.
        lr: Adam learning rate (cosine decay).
        eval_every: validation perplexity (and a checkpoint) every N steps; 0 only at the end.
        eval_tokens: validation tokens used during training (at least 32; the final test uses all).
        max_vocab: keep only the most frequent words (others become <unk>); None keeps all 10k of PTB.
        seed: seed of initialisation and batches.
        threads: torch CPU threads (default: torch's choice).
        resume: continue from the last checkpoint in --out (steps, lr, eval_every, eval_tokens and
            threads may change; anything else is refused).
        overwrite: replace the run in a non-empty --out.
        out: run folder (default runs/lm-train-<time>).
    Returns:
        The run folder (model.safetensors, model.json, vocab.json, results.json).
    """
    config = dict(locals())
    check(arch != "transformer" or dim % heads == 0, f"--dim {dim} must be a multiple of --heads {heads}")
    check(eval_tokens >= MIN_PERPLEXITY_TOKENS,
          f"--eval_tokens {eval_tokens}: a perplexity needs at least {MIN_PERPLEXITY_TOKENS} tokens")
    check_output_dir(out)
    set_threads(threads)
    train_s, valid_s, test_s = (load_corpus(corpus, split) for split in ("train", "valid", "test"))
    vocab = Vocab.build(train_s, max_size=max_vocab)
    valid = token_stream(valid_s, vocab)[:eval_tokens]
    test = token_stream(test_s, vocab)
    _check_perplexity_stream(valid, f"the valid split of {corpus}")
    _check_perplexity_stream(test, f"the test split of {corpus}")
    data = LMBatches(token_stream(train_s, vocab), batch_size, bptt)
    cfg = LMConfig(arch=arch, vocab=len(vocab), eos_id=vocab.eos, dim=dim, layers=layers, heads=heads,
                   max_len=max(bptt, 2048), dropout=dropout, head=head, eps=eps)
    if resume:
        _check_resumable(out)
    out = make_run_dir(out, "lm-train", config, resume=resume, overwrite=overwrite)
    torch.manual_seed(seed)
    model = build_lm(cfg)
    tc = TrainConfig(steps=steps, lr=lr, schedule="cosine", warmup_steps=min(100, steps // 10), min_lr_ratio=0.05,
                     eval_every=eval_every, ckpt_every=eval_every, seed=seed, clip_norm=0.5, log_every=50)
    t0 = time.perf_counter()
    result = fit(model, lm_loss, data, tc, out, eval_fn=lambda m: {"valid_ppl": perplexity(m, valid)},
                 resume=resume, desc=f"lm {arch}/{head}")
    model.eval()
    test_ppl = perplexity(model, test)
    if not math.isfinite(test_ppl):
        last = latest_checkpoint(out / "checkpoints")
        raise KexueError(f"training diverged: test perplexity is {test_ppl} after step {result.step} "
                         f"(try a lower --lr); last checkpoint: {last}")
    save_weights(model, out / "model.safetensors")
    write_json(out / "model.json", asdict(cfg))
    vocab.save(out / "vocab.json")
    cmd = (f"kexue lm train --arch {arch} --head {head} --eps {eps} --dim {dim} --steps {steps}"
           + (f" --max_vocab {max_vocab}" if max_vocab is not None else "") + f" --out {out}")
    write_results(out / "results.json", [Figure(f"lm.{arch}_{head}.test_ppl", test_ppl, command=cmd)])
    loss = f", train loss {result.train['loss']:.3f}" if "loss" in result.train else ""
    print(f"lm {arch}/{head}: {result.step} steps in {time.perf_counter() - t0:.0f} s{loss}, "
          f"test perplexity {test_ppl:.1f} -> {out}")
    return out


def _prompt_ids(vocab: Vocab, text: str) -> list[int]:
    return [vocab.eos] + vocab.encode(text.split())  # eos marks a sentence start in the stream


def _check_length(cfg: LMConfig, prompt: int, new: int, flag: str, run: str | Path) -> None:
    """A transformer LM reads at most ``max_len`` positions: refuse a longer decoding up front."""
    check(cfg.arch != "transformer" or prompt + new <= cfg.max_len,
          f"{flag} {new}: the transformer of {run} reads at most {cfg.max_len} tokens and the prompt takes {prompt}")


def generate(run: Path, prompt: str, decoder: DecoderName = "greedy", max_new_tokens: PositiveInt = 50,
             samples: PositiveInt = 1, seed: NonNegativeInt = 0) -> list[str]:
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
    check(decoder in DECODERS, f"--decoder {decoder!r}: choose one of {', '.join(DECODERS)}")
    cfg, vocab = check_run(run)
    ids = _prompt_ids(vocab, prompt)
    _check_length(cfg, len(ids), max_new_tokens, "--max_new_tokens", run)
    model, vocab, cfg = load_lm(run)
    procs, search = DECODERS[decoder](vocab.eos)
    out = decode(model.step, torch.tensor([ids] * samples), procs, search, Stopping(max_new_tokens, vocab.eos),
                 torch.Generator().manual_seed(seed))
    texts = []
    for seq, reason in zip(out.sequences(), out.stop_reasons):
        text = " ".join(vocab.decode(seq))
        texts.append(text)
        print(f"{prompt} | {text}  [{reason}, {len(seq)} tokens]")
    return texts


def test_prefixes(vocab: Vocab, corpus: str, count: int, length: int = PREFIX_WORDS,
                  sentences: list[list[str]] | None = None) -> torch.Tensor:
    """(count, 1 + length) prompts: eos then the first ``length`` words of test sentences longer than that.

    ``sentences``: the test split of ``corpus``, when it is already read.
    """
    sents = [s for s in (sentences or load_corpus(corpus, "test")) if len(s) > length][:count]
    if not sents:
        raise KexueError(f"no test sentence of {corpus} has more than {length} words")
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


def parse_models(models: str) -> list[tuple[str, str]]:
    """``"a=runs/x,b=runs/y"`` -> ``[("a", "runs/x"), ("b", "runs/y")]``; a malformed list is a KexueError."""
    pairs = []
    for item in models.split(","):
        name, sep, run = (part.strip() for part in item.partition("="))
        check(bool(sep and name and run), f"--models {models!r}: give name=run_folder pairs separated by commas, "
                                           "e.g. vanilla=runs/lm-va,st=runs/lm-st")
        check(re.fullmatch(r"[A-Za-z0-9_-]+", name) is not None,
              f"--models: the model name {name!r} may hold only letters, digits, _ and -")
        pairs.append((name, run))
    names = [name for name, _ in pairs]
    check(len(set(names)) == len(names), f"--models {models!r}: a model name is given twice")
    return pairs


def parse_decoders(decoders: str) -> list[str]:
    """``"greedy,topp"`` -> ``["greedy", "topp"]``; unknown or repeated names are a KexueError."""
    names = [d.strip() for d in decoders.split(",") if d.strip()]
    check(bool(names), f"--decoders: choose one or more of {', '.join(DECODERS)}")
    unknown = [d for d in names if d not in DECODERS]
    check(not unknown, f"--decoders: unknown decoder(s) {', '.join(unknown)}; choose from {', '.join(DECODERS)}")
    check(len(set(names)) == len(names), f"--decoders {decoders!r}: a decoder is given twice")
    return names


def termination(models: str, decoders: str = ",".join(DECODERS), prefixes: PositiveInt = 200,
                cap: PositiveInt = 1500, corpus: str = "ptb", seed: NonNegativeInt = 0, chunk: PositiveInt = 100,
                threads: PositiveInt | None = None, results: Path | None = None, overwrite: bool = False,
                out: Path | None = None) -> dict[str, float]:
    """The non-termination study: each model x decoder on 10-token PTB test prefixes.

    Every run folder, the decoders and the corpus are checked before any model is loaded.

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
        overwrite: replace what a non-empty --out holds.
        out: run folder (default runs/lm-termination-<time>).
    Returns:
        Flat mapping termination.<model>.<decoder>.<metric> and termination.<model>.ppl.
    """
    config = dict(locals())
    pairs = parse_models(models)
    names = parse_decoders(decoders)
    check_output_file(results)
    check_output_dir(out)
    for name, run in pairs:
        cfg, _ = check_run(run, f"--models {name}={run}")
        _check_length(cfg, 1 + PREFIX_WORDS, cap, "--cap", run)
    test_s = load_corpus(corpus, "test")
    check(any(len(s) > PREFIX_WORDS for s in test_s),
          f"the test split of {corpus} has no sentence of more than {PREFIX_WORDS} words to take a prefix from")
    tokens = sum(len(s) + 1 for s in test_s)
    check(tokens >= MIN_PERPLEXITY_TOKENS,
          f"the test split of {corpus} has {tokens} tokens; a perplexity needs at least {MIN_PERPLEXITY_TOKENS}")
    set_threads(threads)
    out = make_run_dir(out, "lm-termination", config, overwrite=overwrite)
    cmd = f"kexue lm termination --models {models} --prefixes {prefixes} --cap {cap}"
    figures = []
    bar = progress(total=len(pairs) * len(names), desc="termination")
    for name, run in pairs:
        model, vocab, cfg = load_lm(run, f"--models {name}={run}")
        ppl = perplexity(model, token_stream(test_s, vocab))
        check(math.isfinite(ppl), f"--models {name}={run}: the test perplexity is {ppl} (a diverged model)")
        figures.append(Figure(f"termination.{name}.ppl", ppl, command=cmd))
        prompts = test_prefixes(vocab, corpus, prefixes, sentences=test_s)
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
