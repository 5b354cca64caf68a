"""Tiny masked-LM folders and corpora for the article-6 tests (built offline in milliseconds)."""

from __future__ import annotations

from pathlib import Path

WORDS = "the a cat dog sat ran on mat big small house said and it was N".split()
SENTENCES = [
    "the cat sat on the mat",
    "a dog ran",
    "the big dog said it was small",
    "a small cat sat on a big mat",
    "it was N",
    "the house was big and the dog was small",
] * 6


def tiny_tokenizer(path: Path) -> None:
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers

    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + [w.lower() for w in WORDS] + ["##s"]
    tok = Tokenizer(models.WordPiece({w: i for i, w in enumerate(dict.fromkeys(vocab))}, unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.decoder = decoders.WordPiece()
    from tokenizers.processors import TemplateProcessing

    tok.post_processor = TemplateProcessing(single="[CLS] $A [SEP]", special_tokens=[("[CLS]", 2), ("[SEP]", 3)])
    tok.add_special_tokens(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"])
    tok.save(str(path / "tokenizer.json"))
    return tok.get_vocab_size()


def tiny_mlm_folder(path: Path, seed: int = 0) -> Path:
    """A random BertForMaskedLM (width 16, 1 layer) + WordPiece tokenizer.json in ``path``."""
    import torch
    from transformers import BertConfig, BertForMaskedLM

    path.mkdir(parents=True, exist_ok=True)
    size = tiny_tokenizer(path)
    cfg = BertConfig(
        vocab_size=size, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32,
        max_position_embeddings=40, pad_token_id=0,
    )  # fmt: skip
    torch.manual_seed(seed)
    BertForMaskedLM(cfg).save_pretrained(str(path))
    return path


def tiny_corpus(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    for split in ("train", "valid", "test"):
        (path / f"{split}.txt").write_text("\n".join(SENTENCES) + "\n", encoding="utf-8")
    return path
