"""Tokenizers for text pairs, built with HF ``tokenizers``: byte-level BPE and a character vocabulary.

- English (:func:`train_bpe`): byte-level BPE trained on the training split. BPE rather than
  Unigram because its training is deterministic and fast (a few thousand descriptions in a
  fraction of a second) and, at byte level, it has no unknown token: every string encodes, and
  ``decode(encode(x)) == normalize(x)`` exactly (the normaliser is NFKC).
- Chinese (:func:`train_chars`): one token per character (a ``WordLevel`` model over the
  characters of the training split, every character split off by the pre-tokenizer, joined back
  by the ``Fuse`` decoder), as in Su's character-level setting. A character never seen is ``<unk>``.

Both carry the same special tokens with the same ids (:data:`SPECIALS`): ``<pad>`` = 0,
``<unk>`` = 1, ``<bos>`` = 2 (starts the left-to-right target), ``<eos>`` = 3, ``<r2l>`` = 4
(starts the right-to-left target of bidirectional decoding), ``<sep>`` = 5 (separates two texts
packed in one sequence, UniLM style). No post-processor adds them: the model places them.

A tokenizer is saved as ``tokenizer.json`` in a model's folder and reloaded from there::

    tok = train_bpe([p.target for p in corpus.train], vocab_size=8000)
    save_tokenizer(tok, "runs/s2s")           # runs/s2s/tokenizer.json
    tok = load_tokenizer("runs/s2s")
    tok.decode(tok.encode("Real-time strategy game").ids)   # 'Real-time strategy game'
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

from kexue.errors import KexueError
from kexue.io import atomic_path, read_text

if TYPE_CHECKING:
    from tokenizers import Tokenizer

PAD, UNK, BOS, EOS, R2L, SEP = "<pad>", "<unk>", "<bos>", "<eos>", "<r2l>", "<sep>"
SPECIALS = (PAD, UNK, BOS, EOS, R2L, SEP)
FILENAME = "tokenizer.json"


def _tokenizers():
    try:
        import tokenizers
    except ImportError:
        raise KexueError("tokenization needs the package 'tokenizers': pip install 'kexue[seq2seq]'") from None
    return tokenizers


def train_bpe(texts: Iterable[str], vocab_size: int = 8000, min_frequency: int = 2) -> Tokenizer:
    """A byte-level BPE tokenizer (NFKC-normalised) trained on ``texts``; specials are ids 0-5.

    Example: ``train_bpe(["a cat", "a hat"], vocab_size=300).encode("a cat").tokens``.
    """
    tk = _tokenizers()
    if vocab_size <= len(SPECIALS) + 256:
        raise KexueError(f"vocab_size must exceed {len(SPECIALS) + 256} (specials + 256 bytes), got {vocab_size}")
    tokenizer = tk.Tokenizer(tk.models.BPE(unk_token=None))
    tokenizer.normalizer = tk.normalizers.NFKC()
    tokenizer.pre_tokenizer = tk.pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tokenizer.decoder = tk.decoders.ByteLevel()
    trainer = tk.trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=list(SPECIALS),
        initial_alphabet=tk.pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(texts, trainer=trainer)
    return tokenizer


def train_chars(texts: Iterable[str], min_frequency: int = 1) -> Tokenizer:
    """A character-level tokenizer over the characters of ``texts`` seen ``min_frequency`` times.

    Ids: the specials, then characters by falling frequency (ties by code point).
    Example: ``train_chars(["古代战争"]).encode("战争").tokens`` -> ``['战', '争']``.
    """
    tk = _tokenizers()
    counts = Counter(ch for text in texts for ch in text)
    chars = sorted(
        (c for c, n in counts.items() if n >= min_frequency and c not in SPECIALS), key=lambda c: (-counts[c], c)
    )
    vocab = {token: i for i, token in enumerate([*SPECIALS, *chars])}
    tokenizer = tk.Tokenizer(tk.models.WordLevel(vocab=vocab, unk_token=UNK))
    tokenizer.pre_tokenizer = tk.pre_tokenizers.Split(tk.Regex(r"[\s\S]"), behavior="isolated")
    tokenizer.decoder = tk.decoders.Fuse()
    tokenizer.add_special_tokens(list(SPECIALS))
    return tokenizer


def _check(tokenizer: Tokenizer, where: str) -> Tokenizer:
    for i, token in enumerate(SPECIALS):
        if tokenizer.token_to_id(token) != i:
            raise KexueError(f"{where}: special token {token} should have id {i}, has {tokenizer.token_to_id(token)}")
    return tokenizer


def save_tokenizer(tokenizer: Tokenizer, folder: str | Path) -> Path:
    """Write ``folder/tokenizer.json`` atomically; returns its path."""
    path = Path(folder) / FILENAME
    with atomic_path(path) as tmp:
        tmp.write_text(tokenizer.to_str(), encoding="utf-8")
    return path


def load_tokenizer(path: str | Path) -> Tokenizer:
    """The tokenizer saved in a model folder (or a ``tokenizer.json`` path); specials checked.

    A missing, unreadable or malformed file is a one-line :class:`KexueError` naming it.
    """
    tk = _tokenizers()
    path = Path(path)
    if path.is_dir():
        path = path / FILENAME
    text = read_text(path, "tokenizer file")
    try:
        tokenizer = tk.Tokenizer.from_str(text)
    except Exception as e:
        raise KexueError(f"tokenizer file {path} is malformed ({str(e).splitlines()[0][:120]})") from None
    return _check(tokenizer, f"tokenizer file {path}")
