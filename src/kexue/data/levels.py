"""A corpus as token lists at one of three levels: characters, words, or rebalanced tokens.

The repetition study (kexue.fm/archives/8128) compares bigram chains of the same text cut into
different units: *char* (the characters of the words joined by spaces), *word* (optionally the
most frequent words, the rest as ``<unk>``) and *rebalanced* (characters after a
:class:`~kexue.data.tokenization.RebalancedEncoding` learned on the same text).

Example::

    sentences, info = level_sentences("char", "ptb", "train", max_sentences=100)
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from kexue.data.text import load_corpus
from kexue.data.tokenization import RebalancedEncoding
from kexue.errors import KexueError

LEVELS = ("char", "word", "rebalanced")


def check_corpus_folder(corpus: str, splits: tuple[str, ...], flag: str = "--corpus") -> None:
    """Refuse early a ``corpus`` that is neither ``ptb`` nor a folder holding the named split files."""
    if corpus == "ptb":
        return
    folder = Path(corpus)
    if not folder.is_dir():
        raise KexueError(f"{flag} {corpus}: not ptb and not a folder (with {', '.join(s + '.txt' for s in splits)})")
    missing = [f"{s}.txt" for s in splits if not (folder / f"{s}.txt").is_file()]
    if missing:
        raise KexueError(f"{flag} {corpus}: no {' or '.join(missing)} in it")


def characters(sentences: list[list[str]]) -> list[list[str]]:
    """Word sentences as character lists, words joined by one space: [["a", "bc"]] -> [["a", " ", "b", "c"]]."""
    return [list(" ".join(s)) for s in sentences]


def level_sentences(
    level: str,
    corpus: str = "ptb",
    split: str = "train",
    max_sentences: int | None = None,
    word_vocab: int | None = None,
    encoding: RebalancedEncoding | None = None,
    threshold: float = 0.1,
    iterations: int = 10,
) -> tuple[list[list[str]], dict]:
    """Sentences of ``corpus`` as token lists at one level, and a small description of them.

    Args:
        level: ``char``, ``word`` or ``rebalanced``.
        corpus: ``ptb`` or a folder with ``<split>.txt`` (one sentence per line).
        split: which split file.
        max_sentences: keep only the first sentences.
        word_vocab: at word level, keep the most frequent words, the rest as ``<unk>``.
        encoding: at rebalanced level, the encoding to apply (default: learn one here with
            ``threshold`` / ``iterations``).
    Returns:
        (token lists, info dict with level, corpus, split, sentence count and the level's settings).
    """
    if level not in LEVELS:
        raise KexueError(f"level must be one of {', '.join(LEVELS)}, got {level!r}")
    sents = load_corpus(corpus, split)
    if max_sentences:
        sents = sents[:max_sentences]
    info: dict = {"level": level, "corpus": corpus, "split": split, "sentences": len(sents)}
    if level == "word":
        if word_vocab:
            keep = {w for w, _ in Counter(w for s in sents for w in s).most_common(word_vocab)}
            sents = [[w if w in keep else "<unk>" for w in s] for s in sents]
            info["word_vocab"] = word_vocab
        return sents, info
    chars = characters(sents)
    if level == "char":
        return chars, info
    if encoding is None:
        encoding = RebalancedEncoding.learn(chars, threshold=threshold, iterations=iterations)
    info.update(threshold=threshold, rounds=len(encoding.rounds), merged_tokens=len(encoding.parts))
    return encoding.encode_corpus(chars), info
