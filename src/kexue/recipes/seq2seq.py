"""Article 3, synchronous bidirectional decoding (kexue.fm/archives/6877; Zhou, Zhang & Zong, TACL 2019).

Title generation on text pairs (long description -> short description): a Transformer
encoder-decoder whose L2R and R2L decoding streams read each other
(:class:`kexue.models.seq2seq.SyncBidirectionalTransformer`), beside L2R-only and R2L-only
baselines of the same size trained with the same budget.

- :func:`build_corpus`: rebuild the committed Debian corpora (:mod:`kexue.data.pairs_build`; needs apt).
- :func:`train_seq2seq`: one run folder holding the tokenizer (trained on the train split) and the
  three models in sub-folders ``l2r/``, ``r2l/``, ``bidirectional/``, each trained through
  :func:`kexue.training.fit` (resumable). With ``cross_history="pseudo"`` the baselines are trained
  first, decode the train split (greedy), and the bidirectional model reads those decodes as the
  other direction's history (the paper's fix for the gold-history leakage).
- :func:`generate`: titles for texts with ``l2r`` / ``r2l`` (the baselines, beam search) or
  ``bidirectional`` (:func:`kexue.generation.bidirectional.bidirectional_decode`).
- :func:`evaluate_seq2seq`: ROUGE-1/2/L (``rouge-score``), BLEU (``sacrebleu``) of the three decoders
  on a split at the same beam, the post's diagnostic (accuracy of the first and the last 4 tokens
  per direction) and the decoding latency of the bidirectional beam vs the L2R beam.

``kexue seq2seq build-corpus / train / generate / eval`` call these with the same arguments, and
``kexue reproduce`` does too. Example::

    from kexue.recipes.seq2seq import Seq2SeqSettings, train_seq2seq, evaluate_seq2seq, generate
    run = train_seq2seq("debian-en", Seq2SeqSettings(dim=128, steps=2000), out="runs/s2s")
    evaluate_seq2seq(run.out, beam=4, max_pairs=500)
    generate(run.out, text="A tool to convert images between formats ...", decoding="bidirectional")
"""

from __future__ import annotations

import math
import re
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Literal

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from kexue.checks import require_modules
from kexue.data.pairs import SNAPSHOTS, PairCorpus, TextPair, load_pairs, read_pairs, split_by_group
from kexue.data.subword import BOS, EOS, PAD, R2L, load_tokenizer, save_tokenizer, train_bpe, train_chars
from kexue.errors import KexueError
from kexue.generation import Beam, Greedy, MinLength, NoRepeatNGram, RepetitionPenalty, Stopping, decode
from kexue.generation.bidirectional import BidirectionalOutput, bidirectional_decode
from kexue.io import (
    RESUME_MAY_CHANGE,
    atomic_path,
    check_output_dir,
    check_output_file,
    make_run_dir,
    read_text,
    run_config,
    write_json,
)
from kexue.models.seq2seq import SyncBidirectionalTransformer, seq2seq_loss
from kexue.params import (
    Device,
    Dropout,
    NonNegativeFloat,
    NonNegativeInt,
    PositiveFloat,
    PositiveInt,
    check,
    resolve_device,
    set_threads,
)
from kexue.progress import progress
from kexue.provenance import command_line
from kexue.recipes.runs import check_resumable, check_settings, cli_name, read_model_config
from kexue.results import Figure, check_results_file, load_results, write_results
from kexue.training import TensorBatches, TrainConfig, distributed, fit
from kexue.training.checkpoint import latest_checkpoint, load_weights, save_weights

TRAIN_COMMAND = "seq2seq-train"  # the command named in a run folder's config.yaml
MODELS = ("l2r", "r2l", "bidirectional")  # sub-folders of a run, in training order
Decoding = Literal["l2r", "r2l", "bidirectional"]
Scoring = Literal["su", "half"]
TokenizerKind = Literal["auto", "bpe", "char"]
CrossHistory = Literal["gold", "pseudo"]
Split = Literal["train", "valid", "test"]
DIAGNOSTIC_TOKENS = 4  # the post's diagnostic: accuracy of the first 4 and the last 4 tokens
CJK = re.compile(r"[\u3400-\u9fff\uf900-\ufaff\u3040-\u30ff\uac00-\ud7af]")
# What a resume may change: how long and where it trains, never the model or the data.
RESUME_MAY_CHANGE_S2S = RESUME_MAY_CHANGE | {
    "settings.steps",
    "settings.lr",
    "settings.eval_every",
    "settings.eval_pairs",
    "device",
}


@dataclass(kw_only=True)
class Seq2SeqSettings:
    """Settings of one ``kexue seq2seq train`` run: the tokenizer, the three models, the optimisation.

    On the command line each is a flag ``--settings.<name>`` (or ``--settings FILE.yaml``). The L2R-only
    and R2L-only baselines use the same size and budget as the bidirectional model.

    Attributes:
        dim: model width (a multiple of heads).
        heads: attention heads.
        encoder_layers: encoder blocks.
        decoder_layers: decoder blocks.
        ff_mult: feed-forward width as a multiple of dim.
        dropout: dropout rate, in [0, 1).
        cross_weight: λ of H = H→ + λ·tanh(H←) (the paper: 0.1). 0 drops the cross term: the third model
            is then one decoder trained on both directions that never reads the other (the capacity
            control: it shares its decoder between the directions as the bidirectional model does).
        cross_dropout: dropout on the cross term H←, in [0, 1) (the paper: 0.3).
        cross_history: gold (each stream reads the other's gold tokens) or pseudo (the other direction's
            history is the greedy decode of the one-direction baseline: the baselines are trained first and
            decode the train split, which costs one greedy pass over it).
        tokenizer: auto (char when most of the training text is Chinese / Japanese / Korean, else bpe),
            bpe (byte-level BPE trained on the train split) or char (one token per character).
        vocab_size: BPE vocabulary size (more than 262: the 6 specials and 256 bytes).
        max_source_tokens: sources are cut to this many tokens.
        max_target_tokens: training pairs with a longer target are left out; decoding stops after this many
            tokens plus eos.
        max_train_pairs: train on the first N pairs of the train split only (None: all).
        steps: optimizer steps of each of the three models.
        batch_size: pairs per step.
        lr: Adam learning rate (linear warm-up, cosine decay).
        warmup_steps: linear warm-up steps (at most a tenth of steps is used).
        eval_every: validation loss (and a checkpoint) every N steps; 0 only at the end.
        eval_pairs: validation pairs of the loss computed during training.
        seed: seed of initialisation and batches.
    """

    dim: PositiveInt = 256
    heads: PositiveInt = 4
    encoder_layers: PositiveInt = 3
    decoder_layers: PositiveInt = 3
    ff_mult: PositiveInt = 4
    dropout: Dropout = 0.1
    cross_weight: NonNegativeFloat = 0.1
    cross_dropout: Dropout = 0.3
    cross_history: CrossHistory = "gold"
    tokenizer: TokenizerKind = "auto"
    vocab_size: PositiveInt = 8000
    max_source_tokens: PositiveInt = 128
    max_target_tokens: PositiveInt = 32
    max_train_pairs: PositiveInt | None = None
    steps: PositiveInt = 20000
    batch_size: PositiveInt = 32
    lr: PositiveFloat = 5e-4
    warmup_steps: NonNegativeInt = 1000
    eval_every: NonNegativeInt = 1000
    eval_pairs: PositiveInt = 500
    seed: NonNegativeInt = 0

    def __post_init__(self) -> None:
        # The parser enforces the annotations on the command line; these checks are for Python callers.
        check_settings(
            self,
            integers={
                "dim": 1,
                "heads": 1,
                "encoder_layers": 1,
                "decoder_layers": 1,
                "ff_mult": 1,
                "vocab_size": 1,
                "max_source_tokens": 1,
                "max_target_tokens": 1,
                "max_train_pairs": 1,
                "steps": 1,
                "batch_size": 1,
                "warmup_steps": 0,
                "eval_every": 0,
                "eval_pairs": 1,
                "seed": 0,
            },
            fractions={"dropout": "[0,1)", "cross_dropout": "[0,1)"},
            numbers={"cross_weight": ">=0", "lr": ">0"},
            choices={
                "cross_history": ("gold", "pseudo"),
                "tokenizer": ("auto", "bpe", "char"),
            },
        )
        check(
            self.dim % self.heads == 0,
            f"--settings.dim {self.dim} must be a multiple of --settings.heads {self.heads}",
        )
        check(
            self.cross_weight > 0 or self.cross_history == "gold",
            "--settings.cross_weight 0 reads no history of the other direction: "
            "--settings.cross_history pseudo would decode histories that nothing reads (use gold)",
        )
        check(
            self.tokenizer == "char" or self.vocab_size > 262,
            f"--settings.vocab_size {self.vocab_size}: a BPE vocabulary needs more than 262 entries "
            "(6 special tokens and 256 bytes)",
        )


@dataclass
class Seq2SeqModelConfig:
    """What a model folder's ``model.json`` holds: the network, its direction(s) and its tokens."""

    vocab_size: int
    dim: int
    heads: int
    encoder_layers: int
    decoder_layers: int
    ff_mult: int
    dropout: float
    cross_weight: float
    cross_dropout: float
    directions: str  # both (the bidirectional model), l2r or r2l (a baseline)
    pad_id: int
    eos_id: int
    l2r_id: int
    r2l_id: int
    tokenizer: str  # bpe or char
    max_source_tokens: int
    max_target_tokens: int

    def __post_init__(self) -> None:
        check(
            self.directions in ("both", "l2r", "r2l"), f"directions must be both, l2r or r2l, got {self.directions!r}"
        )
        check(self.tokenizer in ("bpe", "char"), f"tokenizer must be bpe or char, got {self.tokenizer!r}")
        for name in ("vocab_size", "dim", "heads", "encoder_layers", "decoder_layers", "ff_mult"):
            value = getattr(self, name)
            check(isinstance(value, int) and value >= 1, f"{name} must be a positive integer, got {value!r}")
        check(self.dim % self.heads == 0, f"dim {self.dim} must be a multiple of heads {self.heads}")

    def build(self) -> SyncBidirectionalTransformer:
        return SyncBidirectionalTransformer(
            self.vocab_size,
            dim=self.dim,
            heads=self.heads,
            encoder_layers=self.encoder_layers,
            decoder_layers=self.decoder_layers,
            ff_mult=self.ff_mult,
            dropout=self.dropout,
            cross_weight=self.cross_weight,
            cross_dropout=self.cross_dropout,
            bidirectional=self.directions == "both",
            pad_id=self.pad_id,
            eos_id=self.eos_id,
            l2r_id=self.l2r_id,
            r2l_id=self.r2l_id,
        )


# ---- corpus --------------------------------------------------------------------------------------


def build_corpus(
    out: Path,
    mirror: str = "http://deb.debian.org/debian",
    suite: str = "bookworm",
    work: Path | None = None,
    offline: bool = False,
    manpages: bool = True,
    seed: NonNegativeInt = 0,
) -> dict:
    """Build the ``debian-en`` and ``debian-zh`` snapshots into ``out`` (needs network and apt unless offline).

    Wraps :func:`kexue.data.pairs_build.build_debian_corpora`; the provenance of each snapshot records
    the command derived from these arguments.

    Args:
        out: folder for <name>.jsonl.xz and <name>.json.
        mirror: Debian mirror.
        suite: Debian suite (the committed snapshots: bookworm).
        work: keep the private apt folder here (default: a temporary one).
        offline: read the indexes already in ``work``; run no apt.
        manpages: add the manpages-zh pairs to debian-zh.
        seed: seed of the split by source package.
    Returns:
        The provenance of each snapshot, by name.
    """
    arguments = dict(locals())
    from kexue.data import pairs_build

    check(not offline or work is not None, "--offline needs --work (the folder of an earlier build)")
    check(work is None or not Path(work).is_file(), f"--work {work} is a file, not a folder")
    check(not offline or Path(work).is_dir(), f"--offline: --work {work} is not a folder of an earlier build")
    check_output_dir(out)
    command = command_line("seq2seq build-corpus", build_corpus, arguments)
    return pairs_build.build_debian_corpora(out, mirror, suite, work, not offline, manpages, seed, command=command)


def load_corpus(corpus: str, flag: str = "--corpus") -> PairCorpus:
    """A committed corpus by name, or a user's TSV / JSONL file split 90 / 5 / 5 by group (seed 0)."""
    if corpus in SNAPSHOTS:
        return load_pairs(corpus)
    path = Path(corpus)
    check(
        path.exists() or "/" in corpus or "." in corpus,
        f"{flag} {corpus!r}: unknown corpus; give {' or '.join(SNAPSHOTS)} or a .tsv / .jsonl file of pairs",
    )
    check(path.exists(), f"{flag} {corpus}: file not found")
    check(path.is_file(), f"{flag} {corpus} is a folder; give a .tsv or .jsonl file of pairs")
    pairs = read_pairs(path, f"{flag} file")
    return split_by_group(pairs, seed=0, name=path.name)


def _cjk_share(texts: Sequence[str]) -> float:
    """The share of non-space characters that are Chinese / Japanese / Korean (0 for no characters)."""
    sample = "".join(texts[:4000])
    chars = sum(not c.isspace() for c in sample)
    return len(CJK.findall(sample)) / chars if chars else 0.0


def tokenizer_kind(texts: Sequence[str], kind: str) -> str:
    """``auto`` -> ``char`` when at least 30% of the non-space characters are CJK, else ``bpe``."""
    if kind != "auto":
        return kind
    return "char" if _cjk_share(texts) >= 0.3 else "bpe"


def _warn_script(texts: Sequence[str], run_kind: str) -> None:
    """One warning line when the input is plainly in another script than the run's tokenizer handles:
    mostly Chinese / Japanese / Korean into a BPE run (its bytes become noise tokens), or almost none into
    a character run (its Latin letters are mostly unknown). Mixed text (package names in Chinese
    descriptions) passes."""
    share = _cjk_share(texts)
    if (run_kind == "bpe" and share >= 0.3) or (run_kind == "char" and share < 0.05):
        print(
            f"kexue: warning: {100 * share:.0f}% of the input's characters are Chinese / Japanese / Korean, but "
            f"the run's tokenizer is {run_kind}: expect poor titles; train a run on text like it (--corpus)",
            file=sys.stderr,
        )


def _ids(tokenizer, texts: Sequence[str]) -> list[list[int]]:
    return [e.ids for e in tokenizer.encode_batch(list(texts))] if texts else []


def _pad(rows: Sequence[Sequence[int]], pad: int, width: int | None = None) -> torch.Tensor:
    width = max(1, max((len(r) for r in rows), default=1)) if width is None else width
    out = torch.full((len(rows), width), pad, dtype=torch.long)
    for i, r in enumerate(rows):
        out[i, : len(r)] = torch.tensor(r[:width], dtype=torch.long)
    return out


def _trim(x: torch.Tensor, pad: int) -> torch.Tensor:
    """Drop the trailing columns that are padding in every row (keep at least one)."""
    used = (x != pad).any(0).nonzero()
    return x[:, : int(used[-1]) + 1 if len(used) else 1]


class PairBatches:
    """:class:`TensorBatches` over padded (source, target, ...) tensors, each batch cut to its longest row."""

    def __init__(self, *tensors: torch.Tensor, batch_size: int, seed: int, pad: int):
        self.inner, self.pad = TensorBatches(*tensors, batch_size=batch_size, seed=seed), pad

    def batch(self, micro_step: int):
        return tuple(_trim(t, self.pad) for t in self.inner.batch(micro_step))


# ---- training ------------------------------------------------------------------------------------


@dataclass
class Seq2SeqRun:
    """What :func:`train_seq2seq` made: the run folder, the three models' valid losses, figures."""

    out: Path
    valid_ce: dict[str, float]
    steps: int
    seconds: float
    tokenizer: str
    pairs: int
    figures: list[Figure]
    left_out: int = 0  # training pairs whose target is longer than max_target_tokens (or empty)


def _valid_ce(model, src: torch.Tensor, tgt: torch.Tensor, directions: str, batch_size: int) -> float:
    device = next(model.parameters()).device
    total, n = 0.0, 0
    for i in range(0, len(src), batch_size):
        s, t = _trim(src[i : i + batch_size], model.pad_id), _trim(tgt[i : i + batch_size], model.pad_id)
        loss, _ = seq2seq_loss(model, (s.to(device), t.to(device)), directions=directions)
        total, n = total + loss.item() * len(s), n + len(s)
    return total / max(n, 1)


def _train_one(
    cfg: Seq2SeqModelConfig,
    data: PairBatches,
    valid: tuple[torch.Tensor, torch.Tensor],
    settings: Seq2SeqSettings,
    folder: Path,
    resume: bool,
    device: torch.device,
    cross_history: str,
) -> tuple[SyncBidirectionalTransformer, float, int]:
    folder.mkdir(exist_ok=True)
    torch.manual_seed(settings.seed)
    model = cfg.build().to(device)
    directions = cfg.directions
    history = cross_history if directions == "both" else "gold"
    steps = settings.steps
    tc = TrainConfig(
        steps=steps,
        lr=settings.lr,
        schedule="cosine",
        warmup_steps=min(settings.warmup_steps, steps // 10),
        min_lr_ratio=0.05,
        eval_every=settings.eval_every,
        ckpt_every=settings.eval_every,
        seed=settings.seed,
        clip_norm=1.0,
        log_every=min(50, steps),
    )
    ckpts = folder / "checkpoints"
    again = resume and ckpts.is_dir() and latest_checkpoint(ckpts) is not None
    result = fit(
        model,
        lambda m, batch, g: seq2seq_loss(m, batch, g, directions=directions, cross_history=history),
        data,
        tc,
        folder,
        eval_fn=lambda m: {"valid_ce": _valid_ce(m, *valid, directions, settings.batch_size)},
        resume=again,
        desc=f"seq2seq {folder.name}",
    )
    model.eval()
    ce = _valid_ce(model, *valid, directions, settings.batch_size)
    if not math.isfinite(ce):
        raise KexueError(
            f"training diverged: the valid loss of {folder.name} is {ce} (try a lower --settings.lr); "
            f"last checkpoint: {latest_checkpoint(ckpts)}"
        )
    save_weights(model, folder / "model.safetensors")
    write_json(folder / "model.json", asdict(cfg))
    return model, ce, result.step


@torch.no_grad()
def _greedy_histories(model, src: torch.Tensor, direction: str, cap: int, batch_size: int, pad: int) -> torch.Tensor:
    """(N, cap) greedy decodes of ``direction`` in reading order (no eos), padded: pseudo histories."""
    device = next(model.parameters()).device
    rows: list[list[int]] = []
    bar = progress(total=len(src), desc=f"pseudo {direction}", leave=False)
    for i in range(0, len(src), batch_size):
        s = _trim(src[i : i + batch_size], pad).to(device)
        out = decode(
            model.step,
            model.prompt(len(s), direction, device),
            [],
            Greedy(),
            Stopping(cap, model.eos_id),
            state=model.start(s, direction, 1),
        )
        for seq in out.sequences():
            seq = seq[:-1] if seq and seq[-1] == model.eos_id else seq
            rows.append(seq[::-1] if direction == "r2l" else seq)
        bar.update(len(s))
    bar.close()
    return _pad(rows, pad, cap)


def _load_pseudo(path: Path, steps: dict[str, int]) -> dict[str, torch.Tensor] | None:
    """The saved pseudo histories, or None when the baselines were trained further since they were decoded."""
    try:
        with safe_open(str(path), "pt") as f:
            made_at = f.metadata() or {}
        pseudo = load_file(str(path))
    except Exception as e:  # safetensors raises several types on a damaged file
        raise KexueError(
            f"cannot read the pseudo histories {path} ({e}); delete it and resume to decode them again"
        ) from None
    if set(pseudo) != {"l2r", "r2l"}:
        raise KexueError(f"{path} is not a pseudo-history file (it holds {sorted(pseudo)}); delete it and resume")
    if any(made_at.get(f"{d}_step") != str(steps[d]) for d in ("l2r", "r2l")):
        return None  # decoded by shorter-trained baselines (or an older kexue): decode again
    return pseudo


def _specials(tokenizer) -> dict[str, int]:
    return {
        "pad_id": tokenizer.token_to_id(PAD),
        "eos_id": tokenizer.token_to_id(EOS),
        "l2r_id": tokenizer.token_to_id(BOS),
        "r2l_id": tokenizer.token_to_id(R2L),
    }


def train_seq2seq(
    corpus: str = "debian-en",
    settings: Seq2SeqSettings = Seq2SeqSettings(),
    threads: PositiveInt | None = None,
    device: Device = "auto",
    results: Path | None = None,
    resume: bool = False,
    overwrite: bool = False,
    out: Path | None = None,
) -> Seq2SeqRun:
    """Train the bidirectional model and its L2R-only and R2L-only baselines (same size, same budget).

    Everything is checked (settings, output paths, the corpus) before the run folder is made. The run
    folder holds ``tokenizer.json`` (trained on the train split), ``l2r/``, ``r2l/`` and
    ``bidirectional/`` (each ``model.safetensors``, ``model.json``, ``metrics.jsonl``, ``checkpoints/``)
    and ``results.json`` (``seq2seq.valid_ce.<model>``, with the command that reruns it).

    Args:
        corpus: debian-en, debian-zh, or a .tsv (source<TAB>target[<TAB>group]) / .jsonl file of pairs
            (split 90 / 5 / 5 by group).
        settings: the tokenizer, model and training settings.
        threads: torch CPU threads (default: torch's choice).
        device: auto, cpu, cuda, cuda:N or mps.
        results: also merge the figures into this results JSON.
        resume: continue each model from its last checkpoint in ``out`` (settings.steps, .lr,
            .eval_every, .eval_pairs, threads, device and results may change; anything else is refused).
        overwrite: replace the run in a non-empty ``out``.
        out: run folder (default runs/seq2seq-train-<time>).
    Returns:
        A :class:`Seq2SeqRun`.
    Raises:
        KexueError: a bad setting, corpus or folder (before any work), or training diverged.
    """
    distributed.require_single_process("kexue seq2seq train")  # not DDP-ready yet: batches are not sharded by rank
    arguments = dict(locals())
    check_results_file(results)
    check_output_dir(out)
    dev = resolve_device(device)
    set_threads(threads)
    data = load_corpus(corpus)
    train_pairs = list(data.train[: settings.max_train_pairs])
    check(
        len(train_pairs) >= settings.batch_size,
        f"--settings.batch_size {settings.batch_size} exceeds the {len(train_pairs)} training pairs of {corpus}",
    )
    check(len(data.valid) > 0, f"the valid split of {corpus} is empty")
    if resume:
        check_resumable_run(out)
    t0 = time.perf_counter()
    texts = [x for p in train_pairs for x in (p.source, p.target)]
    kind = tokenizer_kind(texts, settings.tokenizer)
    saved = resume and out is not None and (Path(out) / "tokenizer.json").is_file()
    if saved:
        tokenizer = load_tokenizer(out)  # the models were trained with it
    else:
        tokenizer = train_bpe(texts, settings.vocab_size) if kind == "bpe" else train_chars(texts)
    ids = _specials(tokenizer)
    pad = ids["pad_id"]
    src_ids = [r[: settings.max_source_tokens] for r in _ids(tokenizer, [p.source for p in train_pairs])]
    tgt_ids = _ids(tokenizer, [p.target for p in train_pairs])
    keep = [i for i, t in enumerate(tgt_ids) if 0 < len(t) <= settings.max_target_tokens]
    check(
        len(keep) >= settings.batch_size,
        f"only {len(keep)} training pairs have a target of at most --settings.max_target_tokens "
        f"{settings.max_target_tokens} tokens; fewer than --settings.batch_size {settings.batch_size}",
    )
    config = {
        "corpus": corpus,
        "settings": asdict(settings),
        "threads": threads,
        "device": device,
        "results": results,
    }
    out = make_run_dir(out, TRAIN_COMMAND, config, resume=resume, overwrite=overwrite, may_change=RESUME_MAY_CHANGE_S2S)
    if not saved:
        save_tokenizer(tokenizer, out)
    src = _pad([src_ids[i] for i in keep], pad)
    tgt = _pad([tgt_ids[i] for i in keep], pad)
    valid_pairs = data.valid[: settings.eval_pairs]
    v_src = _pad([r[: settings.max_source_tokens] for r in _ids(tokenizer, [p.source for p in valid_pairs])], pad)
    v_tgt = _pad([r[: settings.max_target_tokens] for r in _ids(tokenizer, [p.target for p in valid_pairs])], pad)
    base = dict(
        vocab_size=tokenizer.get_vocab_size(),
        dim=settings.dim,
        heads=settings.heads,
        encoder_layers=settings.encoder_layers,
        decoder_layers=settings.decoder_layers,
        ff_mult=settings.ff_mult,
        dropout=settings.dropout,
        cross_weight=settings.cross_weight,
        cross_dropout=settings.cross_dropout,
        tokenizer=kind,
        max_source_tokens=settings.max_source_tokens,
        max_target_tokens=settings.max_target_tokens,
        **ids,
    )
    batches = PairBatches(src, tgt, batch_size=settings.batch_size, seed=settings.seed, pad=pad)
    valid_ce, models, steps, base_steps = {}, {}, 0, {}
    for name in ("l2r", "r2l"):
        cfg = Seq2SeqModelConfig(directions=name, **base)
        models[name], valid_ce[name], steps = _train_one(
            cfg, batches, (v_src, v_tgt), settings, out / name, resume, dev, "gold"
        )
        base_steps[name] = steps
    if settings.cross_history == "pseudo":
        path = out / "pseudo.safetensors"
        # decoded once, after the baselines finished; a resume reuses them unless the baselines trained further
        pseudo = _load_pseudo(path, base_steps) if path.is_file() else None
        if pseudo is None:
            if path.is_file():
                print(f"seq2seq: the baselines trained further since {path.name} was decoded: decoding it again")
            cap = settings.max_target_tokens + 1
            pseudo = {
                d: _greedy_histories(models[d], src, d, cap, max(64, settings.batch_size), pad) for d in ("l2r", "r2l")
            }
            with atomic_path(path) as tmp:
                made_at = {f"{d}_step": str(base_steps[d]) for d in ("l2r", "r2l")}
                save_file({d: h.contiguous() for d, h in pseudo.items()}, str(tmp), metadata=made_at)
        batches = PairBatches(
            src, tgt, pseudo["l2r"], pseudo["r2l"], batch_size=settings.batch_size, seed=settings.seed, pad=pad
        )
    cfg = Seq2SeqModelConfig(directions="both", **base)
    _, valid_ce["bidirectional"], _ = _train_one(
        cfg, batches, (v_src, v_tgt), settings, out / "bidirectional", resume, dev, settings.cross_history
    )
    cmd = command_line("seq2seq train", train_seq2seq, arguments)
    figures = [Figure(f"seq2seq.valid_ce.{name}", valid_ce[name], command=cmd) for name in MODELS]
    figures = _control_keys(figures, cfg)
    write_results(out / "results.json", figures, merge=(out / "results.json").is_file())
    if results is not None:
        write_results(results, figures, merge=True)
    return Seq2SeqRun(
        out, valid_ce, steps, time.perf_counter() - t0, kind, len(keep), figures, len(tgt_ids) - len(keep)
    )


def _model_label(name: str, cfg: Seq2SeqModelConfig) -> str:
    """What a run's model is called in its figures: the third model of a λ = 0 run is ``shared``."""
    return "shared" if name == "bidirectional" and cfg.cross_weight == 0 else name


def _control_keys(figures: list[Figure], cfg: Seq2SeqModelConfig) -> list[Figure]:
    """With λ = 0 the third model is the capacity control, not the bidirectional model: its figures are
    named ``shared`` (``seq2seq.rougeL.shared``, ``seq2seq.latency_ratio_shared_vs_l2r``, ...), so that
    they never overwrite the bidirectional model's rows in a results file."""
    if cfg.cross_weight > 0:
        return figures
    return [replace(f, key=f.key.replace("bidirectional", "shared").replace("bidir_", "shared_")) for f in figures]


# ---- trained runs --------------------------------------------------------------------------------


def check_resumable_run(out: str | Path | None) -> None:
    """``--resume`` needs a checkpoint or a finished model in one of the run's model folders."""
    if out is None or not (Path(out) / "config.yaml").is_file():
        return  # make_run_dir explains what is wrong with the folder
    found = any(
        (Path(out) / name / "model.safetensors").is_file() or list((Path(out) / name / "checkpoints").glob("step-*"))
        for name in MODELS
    )
    if not found:
        check_resumable(out)  # the one-line "no checkpoint to resume from" message


def check_run(run: str | Path, models: Sequence[str] = MODELS, label: str | None = None):
    """The model configs and the tokenizer of a ``kexue seq2seq train`` run, without loading weights.

    Raises:
        KexueError: ``run`` is missing, not a folder, not a run of ``seq2seq train``, lacks one of
            ``models`` or its tokenizer, or a model.json is malformed or does not match the tokenizer.
    """
    label = label or f"--run {run}"
    run = Path(run)
    if not run.is_dir():
        raise KexueError(f"{label}: {'not found' if not run.exists() else 'is not a folder'}")
    if not (run / "config.yaml").is_file():
        raise KexueError(
            f"{label} is not a kexue run folder (no config.yaml); train one with `kexue seq2seq train --out {run}`"
        )
    found, _ = run_config(run)
    if found != TRAIN_COMMAND:
        raise KexueError(f"{label} was written by {found or 'an unknown command'}, not by {TRAIN_COMMAND}")
    configs = {}
    for name in models:
        sub = run / name
        if not (sub / "model.json").is_file() or not (sub / "model.safetensors").is_file():
            raise KexueError(
                f"{label} holds no trained {name} model yet ({name}/model.json or {name}/model.safetensors missing); "
                f"finish it with `kexue {cli_name(TRAIN_COMMAND)} --config {run / 'config.yaml'} --resume --out {run}`"
            )
        cfg = read_model_config(sub / "model.json", Seq2SeqModelConfig, TRAIN_COMMAND)
        want = "both" if name == "bidirectional" else name
        check(cfg.directions == want, f"{sub / 'model.json'}: directions is {cfg.directions!r}, expected {want!r}")
        configs[name] = cfg
    tokenizer = load_tokenizer(run)
    for name, cfg in configs.items():
        check(
            tokenizer.get_vocab_size() == cfg.vocab_size and _specials(tokenizer)["eos_id"] == cfg.eos_id,
            f"{label}: tokenizer.json ({tokenizer.get_vocab_size()} tokens) does not match "
            f"{name}/model.json (vocab_size {cfg.vocab_size})",
        )
    return configs, tokenizer


def load_models(run: str | Path, models: Sequence[str] = MODELS, device: str = "cpu", label: str | None = None):
    """The models (eval mode), their configs and the tokenizer of a run. Example: ``load_models("runs/s2s")``."""
    configs, tokenizer = check_run(run, models, label)
    dev = resolve_device(device)
    loaded = {}
    for name, cfg in configs.items():
        model = cfg.build().to(dev)
        load_weights(model, Path(run) / name / "model.safetensors")
        loaded[name] = model.eval()
    return loaded, configs, tokenizer


# ---- decoding ------------------------------------------------------------------------------------


@dataclass
class Title:
    """One decoded text: the title, its token ids (reading order, no eos), the direction that won,
    each direction's own best (bidirectional decoding), and whether it ended with eos."""

    text: str
    ids: list[int]
    direction: str
    finished: bool
    l2r_ids: list[int] | None = None
    r2l_ids: list[int] | None = None


def processors(eos: int, min_length: int = 0, no_repeat_ngram: int = 0, repetition_penalty: float = 1.0) -> list:
    """The shared processors a decoder of this article accepts (each off at its default)."""
    procs = []
    if repetition_penalty != 1.0:
        procs.append(RepetitionPenalty(repetition_penalty))
    if no_repeat_ngram:
        procs.append(NoRepeatNGram(no_repeat_ngram))
    if min_length:
        procs.append(MinLength(1 + min_length, eos))  # the start token counts in MinLength's length
    return procs


def _strip(seq: list[int], eos: int) -> list[int]:
    return seq[:-1] if seq and seq[-1] == eos else seq


def _rows(out, b: int, eos: int, reverse: bool = False) -> list[int]:
    seq = _strip(out.tokens[b, : int(out.lengths[b])].tolist(), eos)
    return seq[::-1] if reverse else seq


def decode_ids(
    model: SyncBidirectionalTransformer,
    sources: Sequence[Sequence[int]],
    decoding: str,
    beam: int = 4,
    scoring: str = "su",
    length_penalty: float = 0.0,
    max_new_tokens: int = 33,
    procs: Sequence = (),
    batch_size: int = 32,
    early_exit: bool = True,
    desc: str | None = None,
) -> list[tuple[list[int], str, bool, list[int] | None, list[int] | None]]:
    """Decode source id lists in batches (longest first, order restored): per source (ids, direction,
    finished, L2R best, R2L best); the per-direction bests only for bidirectional decoding."""
    device = next(model.parameters()).device
    order = sorted(range(len(sources)), key=lambda i: -len(sources[i]))
    found: dict[int, tuple] = {}
    stopping = Stopping(max_new_tokens, model.eos_id)
    search = Beam(beam, length_penalty)
    bar = progress(total=len(sources), desc=desc or f"decode {decoding}", leave=False)
    for i in range(0, len(order), batch_size):
        chunk = order[i : i + batch_size]
        src = _pad([sources[j] for j in chunk], model.pad_id).to(device)
        if decoding == "bidirectional":
            out: BidirectionalOutput = bidirectional_decode(
                model, src, procs, search, stopping, scoring=scoring, early_exit=early_exit
            )
        else:
            out = bidirectional_decode(model, src, procs, search, stopping, directions=decoding)
        for b, j in enumerate(chunk):
            ids = _strip(out.sequences()[b], model.eos_id)
            both = decoding == "bidirectional"
            found[j] = (
                ids,
                out.direction[b],
                bool(out.finished[b]),
                _rows(out.l2r, b, model.eos_id) if both else None,
                _rows(out.r2l, b, model.eos_id, reverse=True) if both else None,
            )
        bar.update(len(chunk))
    bar.close()
    return [found[i] for i in range(len(sources))]


def _source_ids(tokenizer, texts: Sequence[str], cap: int, what: str) -> list[list[int]]:
    rows = [r[:cap] for r in _ids(tokenizer, texts)]
    for i, r in enumerate(rows):
        check(bool(r), f"{what} {i + 1} has no tokens")
    return rows


def _texts(text: str | None, file: Path | None) -> list[str]:
    check((text is None) != (file is None), "give one of --text and --file")
    if text is not None:
        check(bool(text.strip()), "--text is empty")
        return [text.strip()]
    lines = [ln.strip() for ln in read_text(file, "--file").splitlines() if ln.strip()]
    check(bool(lines), f"--file {file} holds no text (one text a line)")
    return lines


def _check_decoding(decoding: str, beam: int, scoring: str, min_length: int, cap: int) -> None:
    check(
        decoding != "bidirectional" or scoring != "half" or beam % 2 == 0,
        f"--beam {beam}: the paper's half beam (--scoring half) splits the beam between the two directions; "
        "give an even --beam",
    )
    check(
        min_length < cap,
        f"--min_length {min_length} must be below --max_new_tokens {cap}: eos could never be emitted",
    )


def generate(
    run: Path,
    text: str | None = None,
    file: Path | None = None,
    decoding: Decoding = "bidirectional",
    beam: PositiveInt = 4,
    scoring: Scoring = "su",
    length_penalty: NonNegativeFloat = 0.0,
    max_new_tokens: PositiveInt | None = None,
    min_length: NonNegativeInt = 0,
    no_repeat_ngram: NonNegativeInt = 0,
    repetition_penalty: PositiveFloat = 1.0,
    batch_size: PositiveInt = 32,
    threads: PositiveInt | None = None,
    device: Device = "auto",
) -> list[Title]:
    """Titles for a text or a file of texts (one a line) with one of the run's decoders.

    Args:
        run: folder written by `kexue seq2seq train`.
        text: the text to summarise in a title.
        file: a UTF-8 file of texts, one a line (instead of --text).
        decoding: l2r or r2l (that baseline's beam search) or bidirectional (both streams in lockstep).
        beam: beam size (per direction with --scoring su; in all with --scoring half).
        scoring: su (k² pairs, Su's averaged scoring) or half (the paper's half-and-half beam).
        length_penalty: scores are sum log p / length ** length_penalty (0: Su's setting).
        max_new_tokens: cap on generated tokens, eos included (default: the run's max_target_tokens + 1).
        min_length: no eos before this many tokens.
        no_repeat_ngram: forbid repeating n-grams of this size (0: off).
        repetition_penalty: make tokens already generated less likely by this factor (CTRL; 1: off).
        batch_size: texts decoded together.
        threads: torch CPU threads.
        device: auto, cpu, cuda, cuda:N or mps.
    Returns:
        One :class:`Title` per text.
    """
    texts = _texts(text, file)
    wanted = ("bidirectional",) if decoding == "bidirectional" else (decoding,)
    configs, tokenizer = check_run(run, wanted)
    cfg = configs[wanted[0]]
    cap = max_new_tokens or cfg.max_target_tokens + 1
    _check_decoding(decoding, beam, scoring, min_length, cap)
    _warn_script(texts, cfg.tokenizer)
    set_threads(threads)
    models, _, _ = load_models(run, wanted, device)
    model = models[wanted[0]]
    sources = _source_ids(tokenizer, texts, cfg.max_source_tokens, "text")
    procs = processors(model.eos_id, min_length, no_repeat_ngram, repetition_penalty)
    rows = decode_ids(model, sources, decoding, beam, scoring, length_penalty, cap, procs, batch_size)
    return [
        Title(tokenizer.decode(ids).strip(), ids, direction, finished, l2r, r2l)
        for ids, direction, finished, l2r, r2l in rows
    ]


# ---- evaluation ----------------------------------------------------------------------------------


class CharTokens:
    """rouge-score tokenizer for Chinese: one token per non-space character (its default drops CJK)."""

    def tokenize(self, text: str) -> list[str]:
        return [c for c in text if not c.isspace()]


def rouge(hypotheses: Sequence[str], references: Sequence[str], chinese: bool) -> dict[str, float]:
    """Mean ROUGE-1/2/L F1 (points) with ``rouge-score``: stemmed words for English, characters for Chinese."""
    from rouge_score import rouge_scorer

    kinds = ["rouge1", "rouge2", "rougeL"]
    scorer = (
        rouge_scorer.RougeScorer(kinds, tokenizer=CharTokens())
        if chinese
        else rouge_scorer.RougeScorer(kinds, use_stemmer=True)
    )
    sums = dict.fromkeys(kinds, 0.0)
    for h, r in zip(hypotheses, references):
        s = scorer.score(r, h)
        for k in kinds:
            sums[k] += s[k].fmeasure
    return {k: 100 * v / max(len(references), 1) for k, v in sums.items()}


def bleu(hypotheses: Sequence[str], references: Sequence[str], chinese: bool) -> float:
    """Corpus BLEU with ``sacrebleu`` (tokenize ``13a`` for English, ``zh`` for Chinese)."""
    import sacrebleu

    return float(sacrebleu.corpus_bleu(list(hypotheses), [list(references)], tokenize="zh" if chinese else "13a").score)


def edge_accuracy(hypotheses: Sequence[Sequence[int]], references: Sequence[Sequence[int]], n: int = 4):
    """The post's diagnostic: token accuracy at the first ``n`` and the last ``n`` positions.

    Position i of the start compares hyp[i] with ref[i], position i of the end hyp[-1-i] with
    ref[-1-i], over every reference long enough to have it (a missing hypothesis token is wrong).
    Returns ``(first, last)`` accuracies in [0, 1].
    """
    hits = {"first": 0, "last": 0}
    total = 0
    for h, r in zip(hypotheses, references):
        for i in range(min(n, len(r))):
            total += 1
            hits["first"] += i < len(h) and h[i] == r[i]
            hits["last"] += i < len(h) and h[-1 - i] == r[-1 - i]
    return hits["first"] / max(total, 1), hits["last"] / max(total, 1)


def _time_decoders(models, sources, beam, length_penalty, cap, batch_size, rounds: int = 2) -> dict[str, float]:
    """Seconds to decode ``sources`` with the L2R beam and both bidirectional scorings, measured in one
    run: a warm-up batch each, then ``rounds`` alternating passes; the fastest pass of each counts."""
    runs = {"l2r": (models["l2r"], "l2r", "su", beam), "su": (models["bidirectional"], "bidirectional", "su", beam)}
    if beam % 2 == 0:  # the paper's beam splits num_beams between the directions
        runs["half"] = (models["bidirectional"], "bidirectional", "half", beam)
    best = dict.fromkeys(runs, math.inf)
    for _name, (model, decoding, scoring, k) in runs.items():
        decode_ids(
            model, sources[:batch_size], decoding, k, scoring, length_penalty, cap, (), batch_size, desc="warm-up"
        )
    for _ in range(rounds):
        for name, (model, decoding, scoring, k) in runs.items():
            t0 = time.perf_counter()
            decode_ids(
                model, sources, decoding, k, scoring, length_penalty, cap, (), batch_size, desc=f"latency {name}"
            )
            best[name] = min(best[name], time.perf_counter() - t0)
    return best


@dataclass
class Seq2SeqEval:
    """What :func:`evaluate_seq2seq` measured: figures, example titles, the details file."""

    run: Path
    figures: list[Figure]
    examples: list[dict] = field(default_factory=list)
    distinct: dict[str, float] = field(default_factory=dict)  # share of distinct titles: each model, the references

    def values(self) -> dict[str, float]:
        return {f.key: f.value for f in self.figures}


def evaluate_seq2seq(
    run: Path,
    split: Split = "test",
    beam: PositiveInt = 4,
    scoring: Scoring = "su",
    length_penalty: NonNegativeFloat = 0.0,
    max_new_tokens: PositiveInt | None = None,
    max_pairs: PositiveInt | None = None,
    batch_size: PositiveInt = 32,
    latency_pairs: PositiveInt = 64,
    examples: NonNegativeInt = 5,
    threads: PositiveInt | None = None,
    device: Device = "auto",
    results: Path | None = None,
) -> Seq2SeqEval:
    """ROUGE, BLEU, the first/last-4-token diagnostic and latency of the three decoders on a split.

    The L2R and R2L baselines decode with their beam, the bidirectional model with the synchronous
    bidirectional beam (``scoring``), all at the same ``beam``. The figures are merged into the run's
    ``results.json`` (``results-<split>.json`` for the train and valid splits, since the keys name no
    split) and into ``results`` when given, each with the command that reruns it:
    ``seq2seq.{rouge1,rouge2,rougeL,bleu}.{l2r,r2l,bidirectional}``,
    ``seq2seq.first4_acc.<decoder>`` / ``seq2seq.last4_acc.<decoder>`` (decoder l2r, r2l,
    bidirectional, and bidirectional_l2r / bidirectional_r2l: each direction's own best of the
    bidirectional beam, decoded without early exit), ``seq2seq.rougeL.bidirectional_l2r`` /
    ``seq2seq.rougeL.bidirectional_r2l`` (those streams' bests alone), ``seq2seq.latency_ratio_bidir_vs_l2r`` (the
    bidirectional beam with ``scoring`` over the L2R beam, same beam, same batches, one run) and
    ``seq2seq.latency_ratio_bidir_vs_l2r.su`` / ``.half``. A run trained with ``--settings.cross_weight 0``
    (the capacity control) names its third model ``shared`` instead (``seq2seq.rougeL.shared``,
    ``seq2seq.latency_ratio_shared_vs_l2r``, ...). Details and example titles go to
    ``RUN/eval-<split>.json``.

    Args:
        run: folder written by `kexue seq2seq train`.
        split: test, valid or train.
        beam: beam size of every decoder (per direction with --scoring su; in all with --scoring half).
        scoring: su (k² pairs, Su's averaged scoring) or half (the paper's half-and-half beam).
        length_penalty: scores are sum log p / length ** length_penalty (0: Su's setting).
        max_new_tokens: cap on generated tokens, eos included (default: the run's max_target_tokens + 1).
        max_pairs: evaluate the first N pairs of the split only (None: all).
        batch_size: sources decoded together.
        latency_pairs: sources of the latency measurement (the first of the split).
        examples: example titles printed and saved.
        threads: torch CPU threads.
        device: auto, cpu, cuda, cuda:N or mps.
        results: also merge the figures into this results JSON (e.g. benchmarks/results/seq2seq.json).
    Returns:
        A :class:`Seq2SeqEval`.
    """
    arguments = dict(locals())
    require_modules(("rouge_score", "pip install 'kexue[seq2seq]'"), ("sacrebleu", "pip install 'kexue[seq2seq]'"))
    check_results_file(results)
    configs, tokenizer = check_run(run)
    _, run_cfg = run_config(run)
    cfg = configs["bidirectional"]
    cap = max_new_tokens or cfg.max_target_tokens + 1
    _check_decoding("bidirectional", beam, scoring, 0, cap)
    check_output_file(Path(run) / f"eval-{split}.json", "--run")
    corpus = run_cfg.get("corpus")
    check(isinstance(corpus, str), f"{Path(run) / 'config.yaml'} names no corpus")
    pairs: list[TextPair] = list(load_corpus(corpus, f"the corpus of {run}")[split][:max_pairs])
    check(bool(pairs), f"the {split} split of {corpus} is empty")
    set_threads(threads)
    models, _, _ = load_models(run, MODELS, device)
    chinese = cfg.tokenizer == "char"
    sources = _source_ids(tokenizer, [p.source for p in pairs], cfg.max_source_tokens, f"{split} pair")
    refs = [p.target for p in pairs]
    ref_ids = _ids(tokenizer, refs)
    cmd = command_line("seq2seq eval", evaluate_seq2seq, arguments)
    figures, details, decoded = [], {}, {}
    for name in MODELS:
        decoding = name
        rows = decode_ids(
            models[name],
            sources,
            decoding,
            beam,
            scoring,
            length_penalty,
            cap,
            (),
            batch_size,
            early_exit=False,
            desc=f"eval {name}",
        )  # early_exit False keeps each direction's own best; the winner is the same either way
        hyps = [tokenizer.decode(r[0]).strip() for r in rows]
        decoded[name] = hyps
        scores = rouge(hyps, refs, chinese)
        for k, v in scores.items():
            figures.append(Figure(f"seq2seq.{k}.{name}", v, command=cmd))
        figures.append(Figure(f"seq2seq.bleu.{name}", bleu(hyps, refs, chinese), command=cmd))
        per_direction = {name: [r[0] for r in rows]}
        if name == "bidirectional":
            per_direction |= {"bidirectional_l2r": [r[3] for r in rows], "bidirectional_r2l": [r[4] for r in rows]}
            details["bidirectional_wins"] = {d: sum(r[1] == d for r in rows) for d in ("l2r", "r2l")}
        for key, hyp_ids in per_direction.items():
            if key != name:  # each stream of the bidirectional beam on its own: do the streams or the merge lose?
                stream = [tokenizer.decode(ids).strip() for ids in hyp_ids]
                figures.append(Figure(f"seq2seq.rougeL.{key}", rouge(stream, refs, chinese)["rougeL"], command=cmd))
            first, last = edge_accuracy(hyp_ids, ref_ids, DIAGNOSTIC_TOKENS)
            figures.append(Figure(f"seq2seq.first{DIAGNOSTIC_TOKENS}_acc.{key}", first, command=cmd))
            figures.append(Figure(f"seq2seq.last{DIAGNOSTIC_TOKENS}_acc.{key}", last, command=cmd))
        details[f"unfinished.{name}"] = sum(not r[2] for r in rows)
    seconds = _time_decoders(models, sources[:latency_pairs], beam, length_penalty, cap, batch_size)
    ratios = {name: seconds[name] / seconds["l2r"] for name in seconds if name != "l2r"}
    figures.append(Figure("seq2seq.latency_ratio_bidir_vs_l2r", ratios[scoring], command=cmd))
    for name, ratio in ratios.items():
        figures.append(Figure(f"seq2seq.latency_ratio_bidir_vs_l2r.{name}", ratio, command=cmd))
    shown = [
        {"source": p.source, "reference": p.target, **{_model_label(name, cfg): decoded[name][i] for name in MODELS}}
        for i, p in enumerate(pairs[:examples])
    ]
    # a decoder that writes much the same title whatever the source shows here; the references give the scale
    distinct = {_model_label(name, cfg): len(set(decoded[name])) / len(pairs) for name in MODELS}
    distinct["reference"] = len(set(refs)) / len(pairs)
    details |= {
        "split": split,
        "pairs": len(pairs),
        "distinct_titles": distinct,
        "beam": beam,
        "scoring": scoring,
        "latency_seconds": {k: v for k, v in seconds.items()},
        "latency_sources": min(latency_pairs, len(sources)),
        "rouge_tokens": "characters" if chinese else "rouge-score words, Porter-stemmed",
        "bleu_tokenize": "zh" if chinese else "13a",
        "command": cmd,
        "examples": shown,
    }
    write_json(Path(run) / f"eval-{split}.json", details)
    figures = _control_keys(figures, cfg)
    path = Path(run) / ("results.json" if split == "test" else f"results-{split}.json")  # keys name no split
    write_results(path, figures, merge=path.is_file() and _is_results(path))
    if results is not None:
        write_results(results, figures, merge=True)
    return Seq2SeqEval(Path(run), figures, shown, distinct)


def _is_results(path: Path) -> bool:
    try:
        load_results(path)
    except KexueError:
        return False
    return True


def iter_examples(evaluation: Seq2SeqEval) -> Iterator[str]:
    """Lines that show each example's reference beside the three decoders' titles."""
    for i, ex in enumerate(evaluation.examples, 1):
        yield f"[{i}] reference:     {ex['reference']}"
        for name in (k for k in ex if k not in ("source", "reference")):
            yield f"    {name + ':':<14} {ex[name]}"
