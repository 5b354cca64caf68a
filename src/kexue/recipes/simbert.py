"""Article 4, SimBERT (kexue.fm/archives/7427): the recipes behind ``kexue simbert``.

- :func:`train`: fine-tune any local BERT (default all-MiniLM-L6-v2) with the SimBERT objective
  (seq2seq on segment 1 + in-batch retrieval over both orders, scale 30) on paraphrase pairs
  (default: the debian-en train packages, :func:`kexue.data.paraphrase.paraphrase_pairs`; or a
  user's TSV / JSONL), through the shared :func:`kexue.training.fit`, into a run folder;
- :func:`load_model`: the model and tokenizer of a run folder, a local transformers folder or the default;
- :func:`similar`: generate-then-filter paraphrases (batched sampling, de-duplication, ranking by cosine);
- :func:`retrieve`: nearest neighbours of queries in a corpus (exact torch search, or FAISS);
- :func:`evaluate`: retrieval top-1 / top-5 / MRR and threshold accuracy on the held-out test
  packages, for the model and the base encoder (mean pooling) in the same run.

Example::

    run = train(settings=SimBERTSettings(steps=300), out="runs/simbert")
    similar(run.out, ["a tool to convert images"], candidates=20, top=5)
    evaluate(run.out, results="runs/simbert/eval.json")
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

import torch

from kexue.data.pairs import TextPair, read_pairs
from kexue.data.paraphrase import paraphrase_pairs
from kexue.errors import KexueError
from kexue.generation import Sample, Stopping, Temperature, TopK, TopP, decode
from kexue.io import RESUME_MAY_CHANGE, check_output_dir, check_output_file, make_run_dir, read_text, write_json
from kexue.models.unilm import (
    Pooling,
    UniLM,
    UniLMConfig,
    batch_tensors,
    build_unilm,
    default_model_dir,
    encode_pairs,
    encode_texts,
    generation_step,
    load_tokenizer,
    load_unilm,
    pair_rows,
    simbert_loss,
    token_ids,
)
from kexue.params import (
    ClosedUnitInterval,
    NonNegativeFloat,
    NonNegativeInt,
    PositiveFloat,
    PositiveInt,
    check,
    set_threads,
)
from kexue.progress import progress
from kexue.provenance import command_line
from kexue.recipes.runs import check_resumable, check_settings, check_trained_run, read_model_config
from kexue.results import Figure, write_results
from kexue.training import TrainConfig, distributed, fit
from kexue.training.checkpoint import load_weights, save_weights

TRAIN_COMMAND = "simbert-train"
Backend = Literal["auto", "exact", "faiss"]
Split = Literal["valid", "test"]
RESUME_MAY_CHANGE_SIMBERT = RESUME_MAY_CHANGE | {"settings.steps", "settings.lr", "settings.eval_every"}
THRESHOLD = 0.9  # the cosine of the published LCQMC zero-shot figure
EVAL_BATCH = 128


@dataclass(kw_only=True)
class SimBERTSettings:
    """Settings of one ``kexue simbert train`` run (flags ``--settings.<name>``).

    Attributes:
        pooling: sentence vector: cls (pooler dense on [CLS], linear: the article) or mean (mean of segment-0 states).
        max_len: word pieces kept per sentence (the article: 32).
        steps: optimizer steps.
        batch_pairs: pairs per batch (each in both orders, so 2x rows; the article: 64).
        lr: AdamW learning rate (linear decay after 10 % warm-up).
        weight_decay: AdamW weight decay (the article: 0.01).
        eval_every: validation retrieval (and a checkpoint) every N steps; 0 only at the end.
        eval_pairs: valid pairs used by that evaluation.
        max_pairs: use at most this many training pairs (None: all).
        seed: seed of initialisation of new layers and of batches.
    """

    pooling: Pooling = "mean"
    max_len: PositiveInt = 32
    steps: PositiveInt = 300
    batch_pairs: PositiveInt = 32
    lr: PositiveFloat = 5e-5
    weight_decay: NonNegativeFloat = 0.01
    eval_every: NonNegativeInt = 100
    eval_pairs: PositiveInt = 500
    max_pairs: PositiveInt | None = None
    seed: NonNegativeInt = 0

    def __post_init__(self) -> None:
        check_settings(
            self,
            integers={
                "max_len": 1,
                "steps": 1,
                "batch_pairs": 1,
                "eval_every": 0,
                "eval_pairs": 1,
                "max_pairs": 1,
                "seed": 0,
            },
            numbers={"lr": ">0", "weight_decay": ">=0"},
            choices={"pooling": ("cls", "mean")},
        )
        check(
            self.max_pairs is None or self.max_pairs >= self.batch_pairs,
            f"--settings.max_pairs {self.max_pairs} is smaller than --settings.batch_pairs {self.batch_pairs}",
        )


@dataclass
class SimBERTRun:
    """What :func:`train` made."""

    out: Path
    steps: int
    train_loss: float | None
    valid_top1: float | None
    seconds: float


class PairBatches:
    """Batch ``i`` of paraphrase pairs, a pure function of ``(seed, i)``: rows 2m / 2m+1 = (a, b) / (b, a)."""

    def __init__(self, tokenizer, pairs: Sequence[TextPair], batch_pairs: int, max_len: int, seed: int):
        check(
            len(pairs) >= batch_pairs,
            f"{len(pairs)} training pairs, fewer than --settings.batch_pairs {batch_pairs}",
        )
        self.a = token_ids(tokenizer, [p.source for p in pairs], max_len)
        self.b = token_ids(tokenizer, [p.target for p in pairs], max_len)
        self.tokenizer, self.batch_pairs, self.seed = tokenizer, batch_pairs, seed
        self.per_epoch = len(pairs) // batch_pairs

    def batch(self, micro_step: int):
        epoch, i = divmod(micro_step, self.per_epoch)
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        order = torch.randperm(len(self.a), generator=g)[i * self.batch_pairs : (i + 1) * self.batch_pairs]
        rows = []
        for k in order.tolist():
            rows += [pair_rows(self.tokenizer, self.a[k], self.b[k]), pair_rows(self.tokenizer, self.b[k], self.a[k])]
        return batch_tensors(self.tokenizer, rows)


# ---- models ---------------------------------------------------------------------------------


def _is_run(folder: Path) -> bool:
    return (folder / "config.yaml").is_file()


def check_model(model: str | Path | None, flag: str = "--model") -> Path:
    """The folder ``model`` names (None: the default all-MiniLM-L6-v2), checked before any loading."""
    if model is None:
        return default_model_dir()
    folder = Path(model)
    if not folder.is_dir():
        raise KexueError(f"{flag} {folder}: {'not found' if not folder.exists() else 'is not a folder'}")
    if _is_run(folder):
        check_trained_run(folder, TRAIN_COMMAND, f"{flag} {folder}")
    elif not (folder / "config.json").is_file():
        raise KexueError(
            f"{flag} {folder} is neither a `kexue simbert train` run nor a transformers model folder (no config.json)"
        )
    return folder


def load_model(model: str | Path | None = None, pooling: Pooling = "mean", flag: str = "--model"):
    """``(UniLM in eval mode, tokenizer)`` of a simbert run folder, a local BERT folder or the default.

    ``pooling`` applies to a BERT folder; a run folder keeps the pooling it was trained with.
    """
    folder = check_model(model, flag)
    if not _is_run(folder):
        net, tok = load_unilm(folder, pooling)
        return net.eval(), tok
    from transformers import BertConfig

    cfg = read_model_config(folder / "model.json", UniLMConfig, TRAIN_COMMAND)
    try:
        bert_config = BertConfig.from_pretrained(str(folder), local_files_only=True)
    except (OSError, ValueError, TypeError) as e:
        raise KexueError(f"{flag} {folder}: unreadable config.json ({str(e).splitlines()[0][:200]})") from None
    net = build_unilm(bert_config, cfg.pooling)
    load_weights(net, folder / "model.safetensors")
    return net.eval(), load_tokenizer(folder)


@torch.no_grad()
def encode(net: UniLM, tokenizer, texts: Sequence[str], max_len: int = 32, show: bool = False) -> torch.Tensor:
    """(N, H) L2-normalised sentence vectors, in batches of 128 (a progress bar when ``show``)."""
    net.eval()
    chunks = range(0, len(texts), EVAL_BATCH)
    out = []
    for i in progress(chunks, enabled=show, desc="encode", total=len(chunks)):
        ids, att = encode_texts(tokenizer, texts[i : i + EVAL_BATCH], max_len)
        out.append(net.encode(ids, att))
    return torch.cat(out) if out else torch.zeros(0, net.config.hidden_size)


# ---- search ---------------------------------------------------------------------------------


def _faiss():
    try:
        import faiss
    except ImportError:
        return None
    return faiss


def nearest(queries: torch.Tensor, corpus: torch.Tensor, k: int, backend: Backend = "auto"):
    """``(scores, indices)`` (Q, k) of the ``k`` corpus rows with the largest dot product (cosine of unit vectors).

    ``exact``: a torch matmul; ``faiss``: a ``faiss.IndexFlatIP`` (same ranking, built for large
    corpora); ``auto``: faiss when installed.
    """
    k = min(k, len(corpus))
    faiss = _faiss() if backend != "exact" else None
    if backend == "faiss" and faiss is None:
        raise KexueError("--backend faiss needs faiss-cpu (pip install faiss-cpu)")
    if faiss is None:
        scores, idx = (queries.float() @ corpus.float().T).topk(k, dim=1)
        return scores, idx
    index = faiss.IndexFlatIP(corpus.shape[1])
    index.add(corpus.float().contiguous().numpy())
    scores, idx = index.search(queries.float().contiguous().numpy(), k)
    return torch.from_numpy(scores), torch.from_numpy(idx).long()


def read_sentences(path: str | Path, what: str = "corpus file") -> list[str]:
    """Non-blank lines of a UTF-8 text file, one sentence each (a KexueError when there are none)."""
    lines = [line.strip() for line in read_text(path, what).splitlines() if line.strip()]
    if not lines:
        raise KexueError(f"{what} {path} holds no sentences")
    return lines


def sentences_of(text: str | None, file: Path | None, text_flag: str, file_flag: str) -> list[str]:
    """The sentence given inline, or the lines of a file: exactly one of the two."""
    check((text is None) != (file is None), f"give either {text_flag} or {file_flag} (one of them)")
    if file is not None:
        return read_sentences(file, f"{file_flag} file")
    check(bool(text.strip()), f"{text_flag}: empty text")
    return [text.strip()]


def retrieve(
    queries: Sequence[str],
    corpus: Path,
    model: Path | None = None,
    top: PositiveInt = 5,
    backend: Backend = "auto",
    max_len: PositiveInt = 32,
    threads: PositiveInt | None = None,
) -> list[list[tuple[str, float]]]:
    """The ``top`` sentences of ``corpus`` (one a line) nearest to each query, with their cosines."""
    check(len(queries) > 0 and all(q.strip() for q in queries), "give at least one non-empty --query")
    check(backend != "faiss" or _faiss() is not None, "--backend faiss needs faiss-cpu (pip install faiss-cpu)")
    check_model(model)
    sentences = read_sentences(corpus)
    set_threads(threads)
    net, tok = load_model(model)
    vectors = encode(net, tok, sentences, max_len, show=len(sentences) > 1000)
    scores, idx = nearest(encode(net, tok, list(queries), max_len), vectors, top, backend)
    return [[(sentences[j], float(s)) for s, j in zip(sr.tolist(), ir.tolist())] for sr, ir in zip(scores, idx)]


# ---- generation -----------------------------------------------------------------------------


@torch.no_grad()
def generate(
    net: UniLM,
    tokenizer,
    texts: Sequence[str],
    candidates: int = 20,
    top_p: float = 0.95,
    top_k: int | None = None,
    temperature: float = 1.0,
    max_len: int = 32,
    seed: int = 0,
) -> list[list[str]]:
    """``candidates`` sampled continuations of ``[CLS] text [SEP]`` per text, all texts in one batch."""
    rows = [pair_rows(tokenizer, x, None) for x in token_ids(tokenizer, texts, max_len)]
    ids, seg, att = batch_tensors(tokenizer, rows)  # (B, T0): padding after [SEP] is hidden by the mask
    ids, seg, att = (t.repeat_interleave(candidates, 0) for t in (ids, seg, att))  # (B * n, T0)
    processors = [Temperature(temperature)] if temperature != 1.0 else []
    processors += [TopK(top_k)] if top_k else []
    processors += [TopP(top_p)] if top_p < 1.0 else []
    out = decode(
        generation_step(net),
        ids,
        processors,
        Sample(),
        Stopping(max_len + 1, tokenizer.sep_token_id, tokenizer.pad_token_id),
        torch.Generator().manual_seed(seed),
        state=(ids, seg, att),
    )
    special = set(tokenizer.all_special_ids)
    texts_out = [tokenizer.decode([t for t in seq if t not in special]).strip() for seq in out.sequences()]
    return [texts_out[i * candidates : (i + 1) * candidates] for i in range(len(texts))]


def similar(
    texts: Sequence[str],
    model: Path | None = None,
    candidates: PositiveInt = 20,
    top: PositiveInt = 5,
    top_p: ClosedUnitInterval = 0.95,
    top_k: PositiveInt | None = None,
    temperature: PositiveFloat = 1.0,
    max_len: PositiveInt = 32,
    seed: NonNegativeInt = 0,
    threads: PositiveInt | None = None,
) -> list[list[tuple[str, float]]]:
    """Generate-then-filter (§4): sample ``candidates`` paraphrases per text, drop repeats and the
    text itself, rank by cosine to the text, keep the ``top`` best. Returns ``[(paraphrase, cosine)]`` per text."""
    check(len(texts) > 0 and all(t.strip() for t in texts), "give at least one non-empty --text")
    check(top_p > 0, f"--top_p {top_p}: must be in (0, 1]")
    check_model(model)
    set_threads(threads)
    net, tok = load_model(model)
    drafts = generate(net, tok, texts, candidates, top_p, top_k, temperature, max_len, seed)
    ranked = []
    for text, cands in zip(texts, drafts):
        norm = " ".join(text.lower().split())
        unique = list(dict.fromkeys(c for c in cands if c and " ".join(c.lower().split()) != norm))
        if not unique:
            ranked.append([])
            continue
        vectors = encode(net, tok, [text, *unique], max_len)
        cos = (vectors[1:] @ vectors[0]).tolist()
        ranked.append(sorted(zip(unique, cos), key=lambda x: -x[1])[:top])
    return ranked


# ---- evaluation -----------------------------------------------------------------------------


def retrieval_scores(net: UniLM, tokenizer, pairs: Sequence[TextPair], max_len: int = 32) -> dict[str, float]:
    """Each ``source`` retrieves among the distinct ``target`` texts: top-1, top-5, MRR; and the
    accuracy of ``cos > 0.9`` on the pairs (positives) and on each source with the next pair's target (negatives)."""
    targets = list(dict.fromkeys(p.target for p in pairs))
    where = {t: i for i, t in enumerate(targets)}
    q = encode(net, tokenizer, [p.source for p in pairs], max_len)
    c = encode(net, tokenizer, targets, max_len)
    sims = q @ c.T  # (P, T)
    gold = torch.tensor([where[p.target] for p in pairs])
    rank = (sims > sims.gather(1, gold[:, None])).sum(1)  # 0 = retrieved first
    pos = sims.gather(1, gold[:, None])[:, 0]
    neg_gold = torch.tensor([where[pairs[(i + 1) % len(pairs)].target] for i in range(len(pairs))])
    neg = sims.gather(1, neg_gold[:, None])[:, 0]
    real_neg = neg_gold != gold
    correct = (pos > THRESHOLD).float().sum() + (neg[real_neg] <= THRESHOLD).float().sum()
    return {
        "top1": float((rank < 1).float().mean()),
        "top5": float((rank < 5).float().mean()),
        "mrr": float((1.0 / (rank.float() + 1)).mean()),
        "threshold_acc": float(correct / (len(pairs) + int(real_neg.sum()))),
    }


def _user_pairs(pairs: Path | None, split: str) -> list[TextPair]:
    return paraphrase_pairs(split) if pairs is None else read_pairs(pairs)


def evaluate(
    model: Path | None = None,
    base: Path | None = None,
    pairs: Path | None = None,
    split: Split = "test",
    max_pairs: PositiveInt | None = None,
    max_len: PositiveInt = 32,
    threads: PositiveInt | None = None,
    results: Path | None = None,
) -> dict[str, float]:
    """Retrieval on held-out pairs for ``model`` and the base encoder (mean pooling), measured together.

    Args:
        model: the model to evaluate (a simbert run, a BERT folder; default all-MiniLM-L6-v2).
        base: the baseline encoder folder (default all-MiniLM-L6-v2, mean pooling).
        pairs: a TSV / JSONL of pairs instead of the debian-en held-out packages.
        split: valid or test packages of debian-en.
        max_pairs: evaluate on the first N pairs only.
        max_len: word pieces per sentence.
        threads: torch CPU threads.
        results: also merge the figures into this results JSON.
    Returns:
        ``simbert.retrieval.{top1,top5,mrr,threshold_acc}`` and the same with ``_base``.
    """
    arguments = dict(locals())
    check_output_file(results)
    check_model(model)
    check_model(base, "--base")
    data = _user_pairs(pairs, split)[:max_pairs]
    check(len(data) >= 2, f"evaluation needs at least 2 pairs, got {len(data)}")
    set_threads(threads)
    net, tok = load_model(model)
    scores = retrieval_scores(net, tok, data, max_len)
    base_net, base_tok = load_model(base, "mean", "--base")
    base_scores = retrieval_scores(base_net, base_tok, data, max_len)
    values = {f"simbert.retrieval.{k}": v for k, v in scores.items()}
    values |= {f"simbert.retrieval.{k}_base": v for k, v in base_scores.items()}
    if results is not None:
        cmd = command_line("simbert eval", evaluate, arguments)
        data_name = f"debian-en {split} packages" if pairs is None else f"pairs of {pairs}"
        note = f"{data_name}, NOT LCQMC; published 79.82 % is LCQMC zero-shot accuracy at cos > 0.9"
        figures = [
            Figure(k, v, published=0.7982 if k.endswith("threshold_acc") else None, source=note, command=cmd)
            for k, v in values.items()
        ]
        write_results(results, figures, merge=True)
    return values


# ---- training -------------------------------------------------------------------------------


def train(
    model: Path | None = None,
    pairs: Path | None = None,
    settings: SimBERTSettings = SimBERTSettings(),
    threads: PositiveInt | None = None,
    resume: bool = False,
    overwrite: bool = False,
    out: Path | None = None,
) -> SimBERTRun:
    """Fine-tune a BERT with the SimBERT objective through the shared fit(), into a run folder.

    Args:
        model: the starting BERT: a local transformers folder (default all-MiniLM-L6-v2).
        pairs: a TSV / JSONL of paraphrase pairs (default: debian-en train packages, short
            description <-> first sentence of the long one).
        settings: model and training settings.
        threads: torch CPU threads.
        resume: continue from the last checkpoint in ``out``.
        overwrite: replace the run in a non-empty ``out``.
        out: run folder (default runs/simbert-train-<time>).
    Returns:
        A :class:`SimBERTRun`; the folder holds model.safetensors, model.json, the BERT
        config.json and the tokenizer, so ``--model OUT`` works for every simbert command.
    """
    distributed.require_single_process("kexue simbert train")  # not DDP-ready yet: batches are not sharded by rank
    check_output_dir(out)
    folder = check_model(model)
    check(not _is_run(folder), f"--model {folder}: start from a BERT folder, not a simbert run (use --resume)")
    data = _user_pairs(pairs, "train")[: settings.max_pairs]
    valid = paraphrase_pairs("valid")[: settings.eval_pairs] if pairs is None else data[: settings.eval_pairs]
    check(len(valid) >= 2, "the validation retrieval needs at least 2 pairs")
    set_threads(threads)
    batches = PairBatches(load_tokenizer(folder), data, settings.batch_pairs, settings.max_len, settings.seed)
    if resume:
        check_resumable(out)
    torch.manual_seed(settings.seed)
    net, tok = load_unilm(folder, settings.pooling)
    config = {"model": model, "pairs": pairs, "settings": asdict(settings), "threads": threads}
    out = make_run_dir(
        out, TRAIN_COMMAND, config, resume=resume, overwrite=overwrite, may_change=RESUME_MAY_CHANGE_SIMBERT
    )
    tc = TrainConfig(
        steps=settings.steps,
        lr=settings.lr,
        optimizer="adamw",
        weight_decay=settings.weight_decay,
        schedule="linear",
        warmup_steps=settings.steps // 10,
        eval_every=settings.eval_every,
        ckpt_every=settings.eval_every,
        seed=settings.seed,
        clip_norm=1.0,
        log_every=max(1, min(50, settings.steps)),
    )
    t0 = time.perf_counter()

    def eval_fn(m):
        scores = retrieval_scores(m, tok, valid, settings.max_len)
        m.train()
        return {"valid_top1": scores["top1"]}

    net.train()
    result = fit(net, simbert_loss, batches, tc, out, eval_fn=eval_fn, resume=resume, desc="simbert")
    net.eval()
    save_weights(net, out / "model.safetensors")
    write_json(out / "model.json", asdict(UniLMConfig(settings.pooling)))
    net.config.save_pretrained(str(out))
    tok.save_pretrained(str(out))
    top1 = result.evals[-1].get("valid_top1") if result.evals else None
    return SimBERTRun(out, result.step, result.train.get("loss"), top1, time.perf_counter() - t0)


def default_eval_pairs(split: str = "test") -> list[tuple[str, str]]:
    """The held-out pairs as plain tuples (for users who want to evaluate another encoder)."""
    return [(p.source, p.target) for p in paraphrase_pairs(split)]


__all__ = [
    "SimBERTSettings",
    "encode",
    "encode_pairs",
    "evaluate",
    "generate",
    "load_model",
    "nearest",
    "retrieve",
    "similar",
    "train",
]
