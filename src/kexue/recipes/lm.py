"""Article 5, decoding that stops (kexue.fm/archives/7500; Welleck et al., EMNLP 2020): the recipes.

- :func:`train_lm`: a word-level LM (LSTM or Transformer; vanilla softmax or self-terminating
  head) on PTB or any corpus folder, through the shared :func:`kexue.training.fit`, into a run
  folder (``model.safetensors``, ``model.json``, ``vocab.json``, ``results.json``);
- :func:`load_lm`: the model, vocabulary and config of such a run folder;
- :func:`generate`: continue a prompt with one of the study's decoders;
- :func:`termination_study`: continue 10-word prefixes of test sentences with each decoder, up to
  a cap of L generated tokens, and count the continuations that never emit eos (the
  non-termination ratio r_L), for every model given, with per-decoder repetition metrics. The
  decoders are the ten of Welleck et al. (2020) (:data:`DECODER_LABELS`); "ST greedy"
  is ``greedy`` on a self-terminating model.

``kexue lm train / generate / termination`` call these functions with the same arguments, and
``kexue reproduce`` does too. Example::

    from kexue.recipes.lm import LMTrainSettings, train_lm, termination_study
    st = train_lm(corpus="ptb", settings=LMTrainSettings(head="st", eps=5e-4, steps=400), out="runs/lm-st")
    study = termination_study(models=f"st={st.out}", decoders="greedy,consistent_topp", prefixes=50)
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

import torch
import torch.nn.functional as F

from kexue.analysis.perplexity import min_tokens, perplexity
from kexue.analysis.text import repetition_metrics
from kexue.data.text import (
    IGNORE,
    LMBatches,
    SentenceBatches,
    Vocab,
    load_corpus,
    pad_sentences,
    sentence_ids,
    token_stream,
)
from kexue.errors import KexueError
from kexue.generation import (
    Beam,
    ConsistentTopK,
    ConsistentTopP,
    DecodeOutput,
    Greedy,
    Sample,
    Stopping,
    TopK,
    TopP,
    decode,
)
from kexue.io import (
    RESUME_MAY_CHANGE,
    check_output_dir,
    check_output_file,
    make_run_dir,
    register_added_settings,
    run_config,
    write_json,
)
from kexue.models.lm import LMConfig, build_lm, lm_loss
from kexue.params import Dropout, NonNegativeInt, OpenUnitInterval, PositiveFloat, PositiveInt, check, set_threads
from kexue.progress import progress
from kexue.provenance import command_line
from kexue.recipes.runs import check_resumable, check_settings, check_trained_run, read_model_config
from kexue.results import Figure, load_results, write_results
from kexue.training import TrainConfig, fit
from kexue.training import distributed as dist
from kexue.training.checkpoint import latest_checkpoint, load_weights, save_weights
from kexue.training.loop import FitResult

TRAIN_COMMAND = "lm-train"  # the command named in a run folder's config.yaml
register_added_settings(  # runs made before sentence batching and early stopping existed resume unchanged
    TRAIN_COMMAND,
    {"settings.batching": "stream", "settings.max_sentence_len": 80, "settings.length_pool": 0, "settings.patience": 0},
)
TERMINATION_COMMAND = "lm-termination"
Arch = Literal["lstm", "transformer"]
Head = Literal["softmax", "st"]
Batching = Literal["stream", "sentence"]
# The names of DECODERS, as a type the parser checks (a test keeps the two in step).
DecoderName = Literal[
    "greedy", "beam2", "beam4", "topk", "topk4", "topp", "topp04", "consistent_topk", "consistent_topp", "ancestral"
]
PREFIX_WORDS = 10  # words of a test sentence that prompt each continuation (the paper's prefix k = 10)
EVAL_ROWS, EVAL_WINDOW = 16, 64  # how a perplexity reads a stream: 16 parallel rows, windows of 64
EVAL_SENTENCES = 64  # sentences per forward call of a sentence-level perplexity
BEST_WEIGHTS = "best.safetensors"  # early stopping: the best weights so far (metadata: step, valid_ppl)
MIN_PERPLEXITY_TOKENS = min_tokens(EVAL_ROWS)
# What a resume may change: how long and how it trains, never the model or the data.
RESUME_MAY_CHANGE_LM = RESUME_MAY_CHANGE | {
    "settings.steps",
    "settings.lr",
    "settings.eval_every",
    "settings.eval_tokens",
    "settings.patience",
}

# Decoders of the study: name -> (processors(eos), search). The paper's (Welleck et al. 2020, its
# non-termination tables): greedy, beam-2/4, top-2/4, nucleus-0.2/0.4, ancestral, consistent top-k /
# nucleus (here k = 2, mu = 0.2), and greedy on the self-terminating model. The names
# topk / topp (top-2, nucleus-0.2) are those of the committed results keys; topk4 / topp04 came later.
DECODERS: dict[str, Callable[[int], tuple[list, object]]] = {
    "greedy": lambda eos: ([], Greedy()),
    "beam2": lambda eos: ([], Beam(2, length_penalty=1.0, early_stopping=True)),
    "beam4": lambda eos: ([], Beam(4, length_penalty=1.0, early_stopping=True)),
    "topk": lambda eos: ([TopK(2)], Sample()),
    "topk4": lambda eos: ([TopK(4)], Sample()),
    "topp": lambda eos: ([TopP(0.2)], Sample()),
    "topp04": lambda eos: ([TopP(0.4)], Sample()),
    "consistent_topk": lambda eos: ([ConsistentTopK(2, eos)], Sample()),
    "consistent_topp": lambda eos: ([ConsistentTopP(0.2, eos)], Sample()),
    "ancestral": lambda eos: ([], Sample()),
}
# The paper's name of each decoder, for tables.
DECODER_LABELS = {
    "greedy": "greedy",
    "beam2": "beam-2",
    "beam4": "beam-4",
    "topk": "top-2",
    "topk4": "top-4",
    "topp": "nucleus-0.2",
    "topp04": "nucleus-0.4",
    "consistent_topk": "consistent top-2",
    "consistent_topp": "consistent nucleus-0.2",
    "ancestral": "ancestral",
}

# Hook for per-decoder metrics computed from the generated token sequences (e.g. the repetition
# metrics of article 7): name -> fn(sequences: list[list[int]], eos_id) -> {metric: float}.
# Each metric lands in the results as termination.<model>.<decoder>.<metric>.
REPETITION_KEYS = ("rep_w", "rep_r", "seq_rep_4", "distinct_2", "loop_fraction")


def repetition_row(sequences: list[list[int]], eos: int) -> dict[str, float]:
    """The repetition metrics of article 7 (:func:`kexue.analysis.text.repetition_metrics`) of one decoder's outputs."""
    metrics = repetition_metrics(sequences, eos=eos)
    return {k: metrics[k] for k in REPETITION_KEYS}


SEQUENCE_METRICS: dict[str, Callable[[list[list[int]], int], dict[str, float]]] = {"repetition": repetition_row}


@dataclass(kw_only=True)
class LMTrainSettings:
    """Settings of one ``kexue lm train`` run: the model, the vocabulary, the optimisation.

    On the command line each is a flag ``--settings.<name>`` (or ``--settings FILE.yaml``).

    Attributes:
        arch: lstm or transformer.
        head: softmax (vanilla) or st (the self-terminating output layer).
        eps: rate of the self-terminating layer, in (0, 1) (greedy stops within -ln2/ln(1-eps) steps).
        dim: embedding and hidden width (a multiple of heads for the transformer).
        layers: number of LSTM / Transformer layers.
        heads: attention heads (transformer).
        dropout: dropout rate, in [0, 1).
        steps: optimizer steps (the most; early stopping may end sooner).
        batching: stream (one token stream cut into windows of bptt tokens) or sentence (each row one
            sentence, inputs <eos> w1 .. wn and targets w1 .. wn <eos>, from a fresh state, padding
            ignored by the loss; the setting of Welleck et al. 2020). Valid and test perplexity are read the same way.
        batch_size: parallel rows (stream) or sentences (sentence) per batch.
        bptt: tokens per window (stream).
        max_sentence_len: sentence batching: a sentence of more tokens (its eos counted) keeps its first
            max_sentence_len and loses its eos (4 of 42,068 PTB train sentences at 80; no valid/test one).
        length_pool: sentence batching: 0 makes every batch a random draw of sentences (about 2.2x
            its real tokens in padding on PTB); N > 0 sorts each pool of N batches by length before
            cutting it into batches, then shuffles the batches (fairseq-like, little padding, faster).
        lr: Adam learning rate (cosine decay).
        eval_every: validation perplexity (and a checkpoint) every N steps; 0 only at the end.
        eval_tokens: validation tokens used during training (at least 32; the final test uses all); in
            sentence batching, the first valid sentences holding at most this many tokens.
        patience: early stopping: stop when the valid perplexity has not improved for this many
            evaluations and keep the best weights; 0 turns it off (train all steps, keep the last).
        max_vocab: keep only the most frequent words (others become <unk>); None keeps all 10k of PTB.
        seed: seed of initialisation and batches.
    """

    arch: Arch = "lstm"
    head: Head = "softmax"
    eps: OpenUnitInterval = 5e-4
    dim: PositiveInt = 256
    layers: PositiveInt = 2
    heads: PositiveInt = 4
    dropout: Dropout = 0.3
    steps: PositiveInt = 2000
    batching: Batching = "stream"
    batch_size: PositiveInt = 32
    bptt: PositiveInt = 35
    max_sentence_len: PositiveInt = 80
    length_pool: NonNegativeInt = 0
    lr: PositiveFloat = 2e-3
    eval_every: NonNegativeInt = 500
    eval_tokens: PositiveInt = 20000
    patience: NonNegativeInt = 0
    max_vocab: PositiveInt | None = None
    seed: NonNegativeInt = 0

    def __post_init__(self) -> None:
        # The parser enforces the annotations on the command line; these checks are for Python callers.
        check_settings(
            self,
            integers={
                "dim": 1,
                "layers": 1,
                "heads": 1,
                "steps": 1,
                "batch_size": 1,
                "bptt": 1,
                "max_sentence_len": 1,
                "length_pool": 0,
                "eval_every": 0,
                "eval_tokens": 1,
                "patience": 0,
                "max_vocab": 1,
                "seed": 0,
            },
            fractions={"eps": "(0,1)", "dropout": "[0,1)"},
            numbers={"lr": ">0"},
            choices={"arch": ("lstm", "transformer"), "head": ("softmax", "st"), "batching": ("stream", "sentence")},
        )
        check(
            self.patience == 0 or self.eval_every > 0,
            f"--settings.patience {self.patience} needs evaluations: give --settings.eval_every > 0",
        )
        check(
            self.arch != "transformer" or self.dim % self.heads == 0,
            f"--settings.dim {self.dim} must be a multiple of --settings.heads {self.heads}",
        )
        check(
            self.eval_tokens >= MIN_PERPLEXITY_TOKENS,
            f"--settings.eval_tokens {self.eval_tokens}: a perplexity needs at least {MIN_PERPLEXITY_TOKENS} tokens",
        )


@dataclass
class LMRun:
    """What :func:`train_lm` made: the run folder and its figures."""

    out: Path
    test_ppl: float
    steps: int
    train_loss: float | None
    seconds: float
    figures: list[Figure]
    best_step: int | None = None  # early stopping: the step of the kept weights (None: the last step)


def lm_perplexity(model: torch.nn.Module, stream: torch.Tensor) -> float:
    """The perplexity every ``lm`` figure reports: 16 parallel rows, windows of 64 tokens."""
    return perplexity(model, stream, batch_size=EVAL_ROWS, window=EVAL_WINDOW)


def _check_perplexity_stream(stream: torch.Tensor | list[torch.Tensor], what: str) -> None:
    tokens = sum(len(s) for s in stream) if isinstance(stream, list) else len(stream)
    check(
        tokens >= MIN_PERPLEXITY_TOKENS,
        f"{what} has {tokens} tokens; a perplexity needs at least {MIN_PERPLEXITY_TOKENS}",
    )


def sentence_loss(model: torch.nn.Module, batch, generator=None):
    """``fit()`` loss of :class:`SentenceBatches`: NLL summed over real targets / the batch's tokens; metric ``ppl``.

    ``batch`` = (inputs (b, T), targets (b, T) with :data:`IGNORE` on padding, tokens). Each row
    starts from a fresh state (``model(inputs)``, no state), so no sentence sees another.
    """
    x, y, tokens = batch
    log_p = model(x)[0]  # (b, T, V)
    nll = F.nll_loss(log_p.reshape(-1, log_p.shape[-1]).float(), y.reshape(-1), ignore_index=IGNORE, reduction="sum")
    nll = nll / tokens
    return nll, {"ppl": math.exp(min(nll.item(), 50.0))}


@torch.no_grad()
def sentence_perplexity(
    model: torch.nn.Module, sentences: list[torch.Tensor], eos: int, pad: int, batch_size: int = EVAL_SENTENCES
) -> float:
    """exp(mean NLL per real token, eos included) of ``sentences`` (each ``w1 .. wn <eos>``), each read alone.

    Sentences are batched by length (only the sum matters, so the order does not change the
    value beyond rounding, and padding is small). ``math.inf`` when the mean overflows.
    Example: ``sentence_perplexity(model, sentence_ids(load_ptb("test"), vocab, 80), vocab.eos, vocab.pad)``.
    """
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    order = sorted(range(len(sentences)), key=lambda i: len(sentences[i]))
    total, count = 0.0, 0
    try:
        for start in range(0, len(order), batch_size):
            x, y = pad_sentences([sentences[i] for i in order[start : start + batch_size]], eos, pad)
            log_p = model(x.to(device))[0]  # (b, T, V)
            y = y.to(device)
            total += F.nll_loss(
                log_p.reshape(-1, log_p.shape[-1]).float(), y.reshape(-1), ignore_index=IGNORE, reduction="sum"
            ).item()
            count += int((y != IGNORE).sum())
    finally:
        model.train(was_training)
    mean = total / count
    return math.exp(mean) if mean < 709.0 else math.inf


def first_tokens(sentences: list[torch.Tensor], tokens: int) -> list[torch.Tensor]:
    """The first sentences holding at most ``tokens`` tokens in all (at least one sentence)."""
    kept, total = [], 0
    for s in sentences:
        if kept and total + len(s) > tokens:
            break
        kept.append(s)
        total += len(s)
    return kept


@dataclass
class EarlyStop:
    """Where early stopping stands after a list of evaluations: the best one and how long ago it was."""

    best_step: int | None
    best: float
    waited: int  # evaluations since the best one


def early_stop_state(evals: list[dict[str, float]], key: str = "valid_ppl") -> EarlyStop:
    """The best (lowest ``key``) of ``evals`` (``[{"step": s, key: value}, ...]`` in order) and the evaluations since.

    Only a strictly lower value counts as an improvement. Example: values 10, 8, 9, 9 at steps
    1..4 -> ``EarlyStop(best_step=2, best=8, waited=2)``.
    """
    state = EarlyStop(None, math.inf, 0)
    for e in evals:
        if e[key] < state.best:
            state = EarlyStop(int(e["step"]), float(e[key]), 0)
        else:
            state.waited += 1
    return state


def _saved_step(path: Path) -> int | None:
    """The step stored in the metadata of the best weights at ``path`` (None: missing or unreadable)."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), "pt") as f:
            return int((f.metadata() or {})["step"])
    except Exception:  # missing, cut by a kill, or without the step: not the best weights of this run
        return None


def fit_with_patience(
    model: torch.nn.Module,
    loss_fn,
    data,
    tc: TrainConfig,
    out: Path,
    eval_fn,
    patience: int,
    resume: bool = False,
    desc: str = "train",
    key: str = "valid_ppl",
) -> tuple[FitResult, EarlyStop]:
    """:func:`fit` with early stopping: stop once ``key`` has not improved for ``patience`` evaluations.

    Runs ``fit`` in segments of ``tc.eval_every`` steps (``until=``; the schedule spans ``tc.steps``
    and every segment resumes from the checkpoint the last one ended with, so the run is the same
    as one ``fit``). After each evaluation that improves, the weights go to ``out/best.safetensors``
    (its metadata names the step). The best step and the patience counter are read again from the
    evaluations in ``metrics.jsonl`` (which ``fit`` rewinds to the checkpoint on resume), so a
    resumed run stops where the straight run stops. Ends with the best weights in ``model``.

    Returns:
        The last segment's :class:`FitResult` (``step``: where training stopped) and the
        :class:`EarlyStop` state (``best_step``: the step of the weights kept).
    """
    best_path = Path(out) / BEST_WEIGHTS
    ckpt = latest_checkpoint(Path(out) / "checkpoints") if resume and (Path(out) / "checkpoints").is_dir() else None
    step = int(ckpt.name.split("-", 1)[1]) if ckpt is not None else 0
    until = step if resume else None  # a resume first only reloads: the stopping rule is checked again
    while True:
        if until is None:
            until = min(tc.steps, (step // tc.eval_every + 1) * tc.eval_every)
        result = fit(model, loss_fn, data, tc, out, eval_fn=eval_fn, resume=resume, desc=desc, until=until)
        resume, step, until = True, result.step, None
        state = dist.broadcast_object(early_stop_state(result.evals, key) if dist.is_main() else None)
        if state.best_step == step and dist.is_main() and _saved_step(best_path) != step:
            save_weights(model, best_path, metadata={"step": str(step), key: repr(state.best)})
        if state.waited >= patience or step >= tc.steps:
            break
    if dist.is_main() and _saved_step(best_path) != state.best_step:
        raise KexueError(
            f"{best_path} does not hold the weights of step {state.best_step}, the best evaluation "
            "(deleted or from another run?); start again with --overwrite"
        )
    dist.barrier()
    load_weights(model, best_path)
    return result, state


def train_lm(
    corpus: str = "ptb",
    settings: LMTrainSettings = LMTrainSettings(),
    threads: PositiveInt | None = None,
    results: Path | None = None,
    resume: bool = False,
    overwrite: bool = False,
    out: Path | None = None,
) -> LMRun:
    """Train a word-level LM (vanilla or self-terminating) through the shared fit(), into a run folder.

    Everything is checked (settings, output paths, the corpus, batch sizes) before the run folder
    is made. The test perplexity goes to ``OUT/results.json`` as ``lm.<arch>_<head>.test_ppl``
    (and into ``results`` when given), with the command that reruns it; with early stopping
    (``settings.patience``) also ``.stop_step``, ``.best_step`` and ``.best_valid_ppl``.

    Args:
        corpus: "ptb" or a folder with train.txt / valid.txt / test.txt (one sentence per line).
        settings: the model and training settings.
        threads: torch CPU threads (default: torch's choice).
        results: also merge the figure into this results JSON.
        resume: continue from the last checkpoint in ``out`` (settings.steps, .lr, .eval_every,
            .eval_tokens, .patience, threads and results may change; anything else is refused).
        overwrite: replace the run in a non-empty ``out``.
        out: run folder (default runs/lm-train-<time>).
    Returns:
        An :class:`LMRun` (the run folder, test perplexity, steps, seconds, figures).
    Raises:
        KexueError: a bad setting, corpus or folder (before any work), or training diverged.
    """
    arguments = dict(locals())
    check_output_file(results)
    check_output_dir(out)
    set_threads(threads)
    train_s, valid_s, test_s = (load_corpus(corpus, split) for split in ("train", "valid", "test"))
    vocab = Vocab.build(train_s, max_size=settings.max_vocab)
    if settings.batching == "sentence":
        cap = settings.max_sentence_len
        valid = first_tokens(sentence_ids(valid_s, vocab, cap), settings.eval_tokens)
        test = sentence_ids(test_s, vocab, cap)
        train = sentence_ids(train_s, vocab, cap)
        data = SentenceBatches(train, vocab.eos, vocab.pad, settings.batch_size, settings.seed, settings.length_pool)
        loss_fn = sentence_loss

        def evaluate(m: torch.nn.Module, split: list[torch.Tensor]) -> float:
            return sentence_perplexity(m, split, vocab.eos, vocab.pad)
    else:
        valid = token_stream(valid_s, vocab)[: settings.eval_tokens]
        test = token_stream(test_s, vocab)
        data = LMBatches(token_stream(train_s, vocab), settings.batch_size, settings.bptt)
        loss_fn, evaluate = lm_loss, lm_perplexity
    _check_perplexity_stream(valid, f"the valid split of {corpus}")
    _check_perplexity_stream(test, f"the test split of {corpus}")
    cfg = LMConfig(
        arch=settings.arch,
        vocab=len(vocab),
        eos_id=vocab.eos,
        dim=settings.dim,
        layers=settings.layers,
        heads=settings.heads,
        max_len=max(settings.bptt, settings.max_sentence_len, 2048),
        dropout=settings.dropout,
        head=settings.head,
        eps=settings.eps,
    )
    if resume:
        check_resumable(out)
        saved = (run_config(out)[1].get("settings") or {}) if (Path(out) / "config.yaml").is_file() else {}
        check(
            not settings.patience or not saved or saved.get("patience", 0) > 0,
            f"--settings.patience {settings.patience}: {out} was trained without early stopping, so its best "
            "weights were not kept; resume it without --settings.patience or start a new run with it",
        )
    config = {"corpus": corpus, "settings": asdict(settings), "threads": threads, "results": results}
    out = make_run_dir(out, TRAIN_COMMAND, config, resume=resume, overwrite=overwrite, may_change=RESUME_MAY_CHANGE_LM)
    torch.manual_seed(settings.seed)
    model = build_lm(cfg)
    steps = settings.steps
    tc = TrainConfig(
        steps=steps,
        lr=settings.lr,
        schedule="cosine",
        warmup_steps=min(100, steps // 10),
        min_lr_ratio=0.05,
        eval_every=settings.eval_every,
        ckpt_every=settings.eval_every,
        seed=settings.seed,
        clip_norm=0.5,
        log_every=50,
    )
    t0 = time.perf_counter()
    desc = f"lm {settings.arch}/{settings.head}"

    def eval_fn(m: torch.nn.Module) -> dict[str, float]:
        return {"valid_ppl": evaluate(m, valid)}

    best_step = None
    if settings.patience:
        result, stop = fit_with_patience(model, loss_fn, data, tc, out, eval_fn, settings.patience, resume, desc)
        best_step = stop.best_step
    else:
        result = fit(model, loss_fn, data, tc, out, eval_fn=eval_fn, resume=resume, desc=desc)
    test_ppl = evaluate(model, test)
    if not math.isfinite(test_ppl):
        raise KexueError(
            f"training diverged: test perplexity is {test_ppl} after step {result.step} "
            f"(try a lower --settings.lr); last checkpoint: {latest_checkpoint(out / 'checkpoints')}"
        )
    save_weights(model, out / "model.safetensors")
    write_json(out / "model.json", asdict(cfg))
    vocab.save(out / "vocab.json")
    name, cmd = f"lm.{settings.arch}_{settings.head}", command_line("lm train", train_lm, arguments)
    figures = [Figure(f"{name}.test_ppl", test_ppl, command=cmd)]
    if best_step is not None:  # early stopping: where it stopped and which weights it kept
        figures += [
            Figure(f"{name}.stop_step", result.step, command=cmd),
            Figure(f"{name}.best_step", best_step, command=cmd),
            Figure(f"{name}.best_valid_ppl", stop.best, command=cmd),
        ]
    write_results(out / "results.json", figures)
    if results is not None:
        write_results(results, figures, merge=True)
    seconds = time.perf_counter() - t0
    return LMRun(out, test_ppl, result.step, result.train.get("loss"), seconds, figures, best_step)


def check_run(run: str | Path, label: str | None = None) -> tuple[LMConfig, Vocab]:
    """Config and vocabulary of a finished ``kexue lm train`` run, without loading the weights.

    ``label`` names the run in messages (default ``--run RUN``).

    Raises:
        KexueError: ``run`` is not a run folder of ``lm train`` (e.g. a vae-cluster run), is not
            finished, or its model.json / vocab.json is malformed or does not match.
    """
    label = label or f"--run {run}"
    run = check_trained_run(run, TRAIN_COMMAND, label)
    cfg = read_model_config(run / "model.json", LMConfig, TRAIN_COMMAND)
    vocab = Vocab.load(run / "vocab.json")
    check(
        len(vocab) == cfg.vocab and vocab.eos == cfg.eos_id,
        f"{label}: vocab.json ({len(vocab)} words) does not match model.json (vocab {cfg.vocab})",
    )
    return cfg, vocab


def load_lm(run: str | Path, label: str | None = None) -> tuple[torch.nn.Module, Vocab, LMConfig]:
    """Model (eval mode), vocabulary and config saved by ``kexue lm train`` in ``run``.

    Example: ``model, vocab, cfg = load_lm("runs/lm-st")``.
    """
    cfg, vocab = check_run(run, label)
    model = build_lm(cfg)
    load_weights(model, Path(run) / "model.safetensors")
    return model.eval(), vocab, cfg


def prompt_ids(vocab: Vocab, text: str) -> list[int]:
    """eos (a sentence starts in the training stream after eos) then the words of ``text``."""
    return [vocab.eos] + vocab.encode(text.split())


def check_length(cfg: LMConfig, prompt: int, new: int, flag: str, run: str | Path) -> None:
    """A transformer LM reads at most ``max_len`` positions: refuse a longer decoding up front."""
    check(
        cfg.arch != "transformer" or prompt + new <= cfg.max_len,
        f"{flag} {new}: the transformer of {run} reads at most {cfg.max_len} tokens and the prompt takes {prompt}",
    )


@dataclass
class Continuation:
    """One generated continuation: its words, why it stopped (eos / max_length) and its length."""

    text: str
    reason: str
    tokens: int


def generate(
    run: Path,
    prompt: str,
    decoder: DecoderName = "greedy",
    max_new_tokens: PositiveInt = 50,
    samples: PositiveInt = 1,
    seed: NonNegativeInt = 0,
) -> list[Continuation]:
    """Continue a prompt with a trained LM.

    Args:
        run: folder written by `kexue lm train`.
        prompt: words to continue (space separated, PTB style).
        decoder: one of greedy, beam2, beam4, topk (top-2), topk4, topp (nucleus-0.2), topp04, consistent_topk,
            consistent_topp, ancestral.
        max_new_tokens: cap on generated tokens.
        samples: continuations to draw (sampling decoders).
        seed: seed of the sampling generator.
    Returns:
        The continuations.
    """
    check(decoder in DECODERS, f"--decoder {decoder!r}: choose one of {', '.join(DECODERS)}")
    cfg, vocab = check_run(run)
    ids = prompt_ids(vocab, prompt)
    check_length(cfg, len(ids), max_new_tokens, "--max_new_tokens", run)
    model, vocab, cfg = load_lm(run)
    procs, search = DECODERS[decoder](vocab.eos)
    out = decode(
        model.step,
        torch.tensor([ids] * samples),
        procs,
        search,
        Stopping(max_new_tokens, vocab.eos),
        torch.Generator().manual_seed(seed),
    )
    return [
        Continuation(" ".join(vocab.decode(seq)), reason, len(seq))
        for seq, reason in zip(out.sequences(), out.stop_reasons)
    ]


def prefix_sentences(sentences: list[list[str]], length: int = PREFIX_WORDS) -> list[list[str]]:
    """The sentences a prefix of ``length`` words is taken from: those longer than that, in corpus order."""
    return [s for s in sentences if len(s) > length]


def prefix_prompts(
    vocab: Vocab, corpus: str, count: int, length: int = PREFIX_WORDS, sentences: list[list[str]] | None = None
) -> torch.Tensor:
    """(count, 1 + length) prompts: eos then the first ``length`` words of the first ``count`` test sentences
    longer than that.

    Each prompt is read from a fresh state, as a sentence-trained model (``--settings.batching
    sentence``) read every training sentence (``<eos> w1 .. wn``): the paper's setting, a prefix of
    k = 10 tokens of a test sentence. ``sentences``: the test split of ``corpus``, when it is already read.
    Example: ``prefix_prompts(vocab, "ptb", 1000)`` -> a (1000, 11) tensor.
    """
    sents = prefix_sentences(sentences or load_corpus(corpus, "test"), length)[:count]
    if not sents:
        raise KexueError(f"no test sentence of {corpus} has more than {length} words")
    return torch.tensor([prompt_ids(vocab, " ".join(s[:length])) for s in sents])


def decode_in_chunks(
    model, prompts: torch.Tensor, decoder: str, eos: int, cap: int, seed: int, chunk: int
) -> DecodeOutput:
    """Decode ``prompts`` with a study decoder, about ``chunk`` model rows at a time; outputs concatenated.

    A beam of K takes K rows per prompt, so beam search decodes ``chunk // K`` prompts together:
    every decoder then runs batches of the same size, and a prompt whose beam never ends keeps only
    its own small batch running to the cap (a beam batch runs until all its rows end). Greedy and
    sampling drop finished rows, so there only the stuck ones run on. One generator for all chunks.
    """
    procs, search = DECODERS[decoder](eos)
    g = torch.Generator().manual_seed(seed)
    per = max(1, chunk // search.num_beams)
    parts = [
        decode(model.step, prompts[i : i + per], procs, search, Stopping(cap, eos), g)
        for i in range(0, len(prompts), per)
    ]
    width = max(p.tokens.shape[1] for p in parts)

    def pad(t, v):
        return torch.nn.functional.pad(t, (0, width - t.shape[1]), value=v)

    return DecodeOutput(
        torch.cat([pad(p.tokens, eos) for p in parts]),
        torch.cat([pad(p.log_probs, 0.0) for p in parts]),
        torch.cat([p.lengths for p in parts]),
        torch.cat([p.finished for p in parts]),
        [r for p in parts for r in p.stop_reasons],
        torch.cat([p.scores for p in parts]),
    )


def termination_rows(out: DecodeOutput, eos: int) -> dict[str, float]:
    """Non-termination ratio, mean length, unique share of non-terminated continuations, + hook metrics."""
    nonterm = ~out.finished
    seqs = out.sequences()
    stuck = [tuple(s) for s, n in zip(seqs, nonterm.tolist()) if n]
    row = {
        "nonterminating": nonterm.float().mean().item(),
        "mean_length": out.lengths.float().mean().item(),
        "unique_nonterminated": len(set(stuck)) / len(stuck) if stuck else 0.0,
    }
    for fn in SEQUENCE_METRICS.values():
        row.update(fn(seqs, eos))
    return row


def parse_models(models: str) -> list[tuple[str, str]]:
    """``"a=runs/x,b=runs/y"`` -> ``[("a", "runs/x"), ("b", "runs/y")]``; a malformed list is a KexueError."""
    pairs = []
    for item in models.split(","):
        name, sep, run = (part.strip() for part in item.partition("="))
        check(
            bool(sep and name and run),
            f"--models {models!r}: give name=run_folder pairs separated by commas, "
            "e.g. vanilla=runs/lm-va,st=runs/lm-st",
        )
        check(
            re.fullmatch(r"[A-Za-z0-9_-]+", name) is not None,
            f"--models: the model name {name!r} may hold only letters, digits, _ and -",
        )
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


def run_perplexity(model: torch.nn.Module, vocab: Vocab, run: str | Path, sentences: list[list[str]]) -> float:
    """Perplexity of ``sentences`` under the model of ``run``, read the way it was trained (its config.yaml):
    one stream (:func:`lm_perplexity`), or each sentence alone (:func:`sentence_perplexity`)."""
    settings = run_config(run)[1].get("settings")
    if isinstance(settings, dict) and settings.get("batching") == "sentence":
        ids = sentence_ids(sentences, vocab, int(settings.get("max_sentence_len", 80)))
        return sentence_perplexity(model, ids, vocab.eos, vocab.pad)
    return lm_perplexity(model, token_stream(sentences, vocab))


def _same_corpus(a: object, b: str) -> bool:
    if not isinstance(a, str):
        return False
    return a == b if "ptb" in (a, b) else Path(a).resolve() == Path(b).resolve()


def reported_test_ppl(run: str | Path, cfg: LMConfig, corpus: str, label: str) -> float | None:
    """The test perplexity ``kexue lm train`` reported for ``run`` (``lm.<arch>_<head>.test_ppl`` of its
    results.json), or None when the run was trained on another corpus than ``corpus`` or reported none.

    Raises:
        KexueError: the run's results.json is malformed (named with ``label``).
    """
    run = Path(run)
    if not _same_corpus(run_config(run)[1].get("corpus"), corpus) or not (run / "results.json").is_file():
        return None
    try:
        row = load_results(run / "results.json").get(f"lm.{cfg.arch}_{cfg.head}.test_ppl")
    except KexueError as e:
        raise KexueError(f"{label}: {e}") from None
    value = None if row is None else row["value"]
    check(
        value is None or (isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0),
        f"{label}: results.json holds a test perplexity that is not a positive number: {value!r}",
    )
    return None if value is None else float(value)


@dataclass
class TerminationRun:
    """What :func:`termination_study` made: the run folder and its figures."""

    out: Path
    figures: list[Figure]

    def values(self) -> dict[str, float]:
        """Flat mapping termination.<model>.<decoder>.<metric> / termination.<model>.{ppl,test_ppl} -> value."""
        return {f.key: f.value for f in self.figures}


def _not_yet_read(done: dict[str, dict], figures: list[Figure]) -> list[Figure]:
    """Figures of the resumed run not re-read yet (kept in the run's results.json meanwhile)."""
    have = {f.key for f in figures}
    return [Figure(k, v["value"], command=v["command"]) for k, v in done.items() if k not in have]


def termination_study(
    models: str,
    decoders: str = ",".join(DECODERS),
    prefixes: PositiveInt = 200,
    cap: PositiveInt = 1500,
    corpus: str = "ptb",
    seed: NonNegativeInt = 0,
    chunk: PositiveInt = 100,
    threads: PositiveInt | None = None,
    results: Path | None = None,
    overwrite: bool = False,
    out: Path | None = None,
    resume: bool = False,
) -> TerminationRun:
    """The non-termination study: each model x decoder on 10-word test prefixes, into a run folder.

    The paper's setting (Welleck et al. 2020): one continuation per test prefix of k = 10 words
    (eos + the words, from a fresh state: how a sentence-trained model reads a sentence), cap
    L = 1,500, the ten decoders of :data:`DECODERS` (ST greedy is ``greedy`` on a self-terminating
    model). Every run folder, the decoders and the corpus (enough sentences for ``prefixes``) are
    checked before any model is loaded. The figures go to ``OUT/results.json`` (and are merged into
    ``results`` when given), each with the command that reruns the study.

    Cost (one short timing, dim-512 2-layer LSTM, 10k words, 1 thread of a busy 2-core CPU, chunk
    100): a step of 100 rows takes 35 ms (greedy) to 115 ms (nucleus, which sorts the vocabulary),
    a step of one row about 7 ms. A decoder on 1,000 prefixes whose continuations all run to
    L = 1,500 (a model that never stops) takes about 10 to 35 minutes; one that stops after about
    25 tokens except on 1 % of prefixes about 2 minutes (beam search too: a prefix whose beams are
    decided leaves the batch, see :class:`~kexue.generation.Beam`).

    Args:
        models: comma-separated name=run_folder pairs of `kexue lm train` runs, e.g. vanilla=runs/lm-va,st=runs/lm-st.
        decoders: comma-separated decoders (default: all ten).
        prefixes: number of test prefixes (one continuation each); the test split must hold that many
            sentences of more than 10 words (PTB has 3,165).
        cap: the length cap L on generated tokens.
        corpus: "ptb" or a folder with test.txt.
        seed: seed of the sampling generator.
        chunk: model rows decoded together (a beam of K takes K rows per prefix).
        threads: torch CPU threads.
        results: also merge the figures into this results JSON (e.g. benchmarks/results/termination.json).
        overwrite: replace what a non-empty ``out`` holds.
        out: run folder (default runs/lm-termination-<time>).
        resume: continue the study in ``out`` (the same settings): each model x decoder lands in
            ``out/results.json`` as soon as it is measured, and those already there are read back,
            not decoded again (every decoder is seeded on its own: the figures are the same).
    Returns:
        A :class:`TerminationRun`: the run folder and the figures termination.<model>.<decoder>.<metric>,
        termination.<model>.ppl (the test perplexity of ``corpus``, measured here as the model was
        trained: a stream or sentences) and termination.<model>.test_ppl (the one its training run
        reported when it was trained on ``corpus``; else the measured one).
    """
    arguments = dict(locals())
    pairs = parse_models(models)
    names = parse_decoders(decoders)
    check_output_file(results)
    check_output_dir(out)
    reported = {}
    for name, run in pairs:
        cfg, _ = check_run(run, f"--models {name}={run}")
        check_length(cfg, 1 + PREFIX_WORDS, cap, "--cap", run)
        reported[name] = reported_test_ppl(run, cfg, corpus, f"--models {name}={run}")
    test_s = load_corpus(corpus, "test")
    available = len(prefix_sentences(test_s))
    check(
        available > 0,
        f"the test split of {corpus} has no sentence of more than {PREFIX_WORDS} words to take a prefix from",
    )
    check(
        prefixes <= available,
        f"--prefixes {prefixes}: the test split of {corpus} has only {available} sentences of more than "
        f"{PREFIX_WORDS} words to take a prefix from",
    )
    tokens = sum(len(s) + 1 for s in test_s)
    check(
        tokens >= MIN_PERPLEXITY_TOKENS,
        f"the test split of {corpus} has {tokens} tokens; a perplexity needs at least {MIN_PERPLEXITY_TOKENS}",
    )
    set_threads(threads)
    config = {k: v for k, v in arguments.items()}
    out = make_run_dir(out, TERMINATION_COMMAND, config, resume=resume, overwrite=overwrite)
    cmd = command_line("lm termination", termination_study, {k: v for k, v in arguments.items() if k != "resume"})
    done = load_results(out / "results.json") if resume and (out / "results.json").exists() else {}
    figures = []
    bar = progress(total=len(pairs) * len(names), desc="termination")
    for name, run in pairs:
        model, vocab, cfg = load_lm(run, f"--models {name}={run}")
        ppl = run_perplexity(model, vocab, run, test_s)
        check(math.isfinite(ppl), f"--models {name}={run}: the test perplexity is {ppl} (a diverged model)")
        figures.append(Figure(f"termination.{name}.ppl", ppl, command=cmd))
        test_ppl = ppl if reported[name] is None else reported[name]
        figures.append(Figure(f"termination.{name}.test_ppl", test_ppl, command=cmd))
        prompts = prefix_prompts(vocab, corpus, prefixes, sentences=test_s)
        for dec in names:
            prefix = f"termination.{name}.{dec}."
            earlier = {k: v["value"] for k, v in done.items() if k.startswith(prefix)}
            if f"{prefix}nonterminating" in earlier:  # measured by the run this one resumes
                figures += [Figure(k, v, command=cmd) for k, v in earlier.items()]
                bar.update(1)
                bar.write(f"{name:>10} {dec:>16}: read back from {out / 'results.json'}")
                continue
            t0 = time.perf_counter()
            o = decode_in_chunks(model, prompts, dec, vocab.eos, cap, seed, chunk)
            row = termination_rows(o, vocab.eos)
            for metric, value in row.items():
                figures.append(Figure(f"{prefix}{metric}", value, command=cmd))
            write_results(out / "results.json", figures + _not_yet_read(done, figures))  # lands now
            bar.update(1)
            bar.write(
                f"{name:>10} {dec:>16}: non-terminating {row['nonterminating']:.3f}, "
                f"mean length {row['mean_length']:.1f} ({time.perf_counter() - t0:.0f} s)"
            )
    bar.close()
    write_results(out / "results.json", figures)
    if results is not None:
        write_results(results, figures, merge=True)
    return TerminationRun(out, figures)
