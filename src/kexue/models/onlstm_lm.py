"""ON-LSTM language model (Shen et al., ICLR 2019; kexue.fm/archives/6621) with the AWD-LSTM recipe.

Embedding (with embedding dropout) -> locked dropout -> L recurrent layers (DropConnect on each
hidden-to-hidden weight, locked dropout between layers) -> locked dropout -> decoder tied to the
embedding. ``cell="onlstm"`` uses :class:`kexue.nn.on_lstm.ONLSTMLayer` and also returns the
per-layer syntactic distances used for unsupervised parsing; ``cell="lstm"`` is the ``nn.LSTM``
baseline with the same sizes and regularisers (DropConnect applied functionally each forward).

Paper-scale config (GPU): ``ONLSTMConfig(vocab_size=V, emb=400, hidden=1150, layers=3, chunk=10)``,
~25M parameters on PTB. The last layer has ``emb`` units so that the decoder can be tied.
Perplexity: :func:`kexue.analysis.perplexity.perplexity` (the state is carried across windows).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from kexue.errors import KexueError
from kexue.nn.on_lstm import MASTER_INPUT_FORMS, ONLSTMLayer


@dataclass(kw_only=True)
class ONLSTMConfig:
    """Sizes and regularisers of :class:`LanguageModel` (names and defaults of the official PTB
    command); keywords only, saved beside the weights as ``model.json``.

    Attributes:
        vocab_size: number of word types.
        emb: embedding size (= last layer's hidden size, for tying).
        hidden: hidden size of the other layers.
        layers: recurrent layers.
        chunk: ON-LSTM chunk size (hidden and emb must be divisible by it).
        cell: ``"onlstm"`` or ``"lstm"``.
        master_input: ``"paper"`` or ``"su"``.
        dropout: locked dropout on the last layer's output.
        dropouth: locked dropout between layers.
        dropouti: locked dropout on the embedded input.
        dropoute: embedding dropout (whole word types dropped).
        wdrop: DropConnect on the hidden-to-hidden weights.
        alpha: activation regularisation (AR) on the dropped last-layer output.
        beta: temporal activation regularisation (TAR) on the undropped last-layer output.
        tie: tie decoder and embedding weights.
    """

    vocab_size: int
    emb: int = 400
    hidden: int = 1150
    layers: int = 3
    chunk: int = 10
    cell: str = "onlstm"
    master_input: str = "paper"
    dropout: float = 0.45
    dropouth: float = 0.3
    dropouti: float = 0.5
    dropoute: float = 0.1
    wdrop: float = 0.45
    alpha: float = 2.0
    beta: float = 1.0
    tie: bool = True

    def __post_init__(self) -> None:
        if self.cell not in ("onlstm", "lstm"):
            raise KexueError(f"cell must be 'onlstm' or 'lstm', got {self.cell!r}")
        if self.master_input not in MASTER_INPUT_FORMS:
            raise KexueError(f"master_input must be one of {MASTER_INPUT_FORMS}, got {self.master_input!r}")
        for name in ("vocab_size", "emb", "hidden", "layers", "chunk"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise KexueError(f"{name} must be a positive integer, got {value!r}")
        for name in ("dropout", "dropouth", "dropouti", "dropoute", "wdrop"):
            value = getattr(self, name)
            if not _is_number(value) or not 0 <= value < 1:
                raise KexueError(f"{name} must be in [0, 1), got {value!r}")
        for name in ("alpha", "beta"):
            value = getattr(self, name)
            if not _is_number(value) or not 0 <= value < float("inf"):
                raise KexueError(f"{name} must be a finite number >= 0, got {value!r}")
        if not isinstance(self.tie, bool):
            raise KexueError(f"tie must be true or false, got {self.tie!r}")
        if self.cell == "onlstm" and (self.hidden % self.chunk or self.emb % self.chunk):
            raise KexueError(f"hidden {self.hidden} and emb {self.emb} must be divisible by chunk {self.chunk}")

    def sizes(self) -> list[int]:
        return [self.hidden] * (self.layers - 1) + [self.emb if self.tie else self.hidden]


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def locked_dropout(x: torch.Tensor, p: float, training: bool, generator: torch.Generator | None = None):
    """Variational dropout: one mask per sequence, shared over time. x: (B, T, D)."""
    if not training or p == 0:
        return x
    keep = torch.rand(x.shape[0], 1, x.shape[2], generator=generator, device=x.device) >= p
    return x * keep.to(x.dtype) / (1 - p)


def embedding_dropout(weight: torch.Tensor, p: float, training: bool, generator=None) -> torch.Tensor:
    """Drop whole rows (word types) of the embedding matrix, rescaling the kept ones."""
    if not training or p == 0:
        return weight
    keep = torch.rand(weight.shape[0], 1, generator=generator, device=weight.device) >= p
    return weight * keep.to(weight.dtype) / (1 - p)


class LSTMLayer(nn.Module):
    """``nn.LSTM`` (one layer) with DropConnect on ``weight_hh_l0``, applied functionally."""

    def __init__(self, input_size: int, hidden_size: int, dropconnect: float):
        super().__init__()
        self.lstm = nn.LSTM(input_size, hidden_size, batch_first=True)
        self.dropconnect = dropconnect

    def forward(self, x, state=None, generator=None):
        params = dict(self.lstm.named_parameters())
        w = params["weight_hh_l0"]
        if self.dropconnect:
            if self.training:
                keep = torch.rand(w.shape, generator=generator, device=w.device) >= self.dropconnect
                w = w * keep.to(w.dtype)
            else:
                w = w * (1 - self.dropconnect)  # same convention as the ON-LSTM layer
        lstm_state = None if state is None else (state[0].unsqueeze(0), state[1].unsqueeze(0))
        out, (h, c) = functional_call(self.lstm, {**params, "weight_hh_l0": w}, (x, lstm_state))
        return out, (h[0], c[0]), None


class LanguageModel(nn.Module):
    """Multi-layer ON-LSTM (or LSTM) language model.

    Example: ``LanguageModel(ONLSTMConfig(vocab_size=100, emb=16, hidden=24, layers=2, chunk=4))(ids)`` ->
    ``(logits (B, T, V), states, distances)``.
    """

    carries_state = True  # perplexity carries the per-layer state from one window to the next

    def __init__(self, cfg: ONLSTMConfig):
        super().__init__()
        self.cfg = cfg
        self.embedding = nn.Embedding(cfg.vocab_size, cfg.emb)
        nn.init.uniform_(self.embedding.weight, -0.1, 0.1)
        sizes = [cfg.emb, *cfg.sizes()]
        if cfg.cell == "onlstm":
            self.layers = nn.ModuleList(
                ONLSTMLayer(sizes[k], sizes[k + 1], cfg.chunk, cfg.master_input, cfg.wdrop) for k in range(cfg.layers)
            )
        else:
            self.layers = nn.ModuleList(LSTMLayer(sizes[k], sizes[k + 1], cfg.wdrop) for k in range(cfg.layers))
        self.decoder = nn.Linear(sizes[-1], cfg.vocab_size)
        nn.init.zeros_(self.decoder.bias)
        if cfg.tie:
            self.decoder.weight = self.embedding.weight

    def forward(
        self, ids: torch.Tensor, states=None, generator: torch.Generator | None = None, return_hidden: bool = False
    ):
        """Next-token logits.

        Args:
            ids: (B, T) token ids.
            states: per-layer ``(h, c)`` from the previous window, or None for zeros.
            generator: random source of every dropout mask.
            return_hidden: also return the last layer's output before and after dropout (AR/TAR).
        Returns:
            ``logits`` (B, T, V), new ``states``, ``distances`` (per layer: forget distances (B, T),
            or None for the LSTM), and with ``return_hidden`` the pair of last outputs.
        """
        cfg, training = self.cfg, self.training
        weight = embedding_dropout(self.embedding.weight, cfg.dropoute, training, generator)
        x = locked_dropout(F.embedding(ids, weight), cfg.dropouti, training, generator)  # (B, T, emb)
        states = states or [None] * len(self.layers)
        new_states, distances = [], []
        for k, (layer, state) in enumerate(zip(self.layers, states)):
            raw, s, d = layer(x, state, generator)
            new_states.append(s)
            distances.append(None if d is None else d[0])
            p = cfg.dropouth if k < len(self.layers) - 1 else cfg.dropout
            x = locked_dropout(raw, p, training, generator)
        logits = self.decoder(x)  # (B, T, V)
        if return_hidden:
            return logits, new_states, distances, (raw, x)
        return logits, new_states, distances

    def num_parameters(self) -> int:
        return sum(p.numel() for p in {id(p): p for p in self.parameters()}.values())


def detach_states(states):
    return [tuple(t.detach() for t in s) for s in states]


class StatefulLMLoss:
    """``fit()`` loss for truncated BPTT over :class:`kexue.data.text.LMBatches`.

    Carries the hidden state from one window to the next (detached) and resets it when the
    batch's ``reset`` flag says a new pass over the corpus starts. Adds AR and TAR.
    Use with :class:`ResettingBatches`.
    """

    def __init__(self):
        self.states = None

    def state_dict(self) -> dict[str, torch.Tensor]:
        """The carried state as named tensors (``layer<i>.<j>``), for the checkpoint."""
        if self.states is None:
            return {}
        return {f"layer{i}.{j}": t for i, layer in enumerate(self.states) for j, t in enumerate(layer)}

    def load_state_dict(self, tensors: dict[str, torch.Tensor]) -> None:
        """Restore what :meth:`state_dict` gave; empty means no carried state."""
        if not tensors:
            self.states = None
            return
        layers = 1 + max(int(k.split(".")[0][5:]) for k in tensors)
        self.states = [
            tuple(tensors[f"layer{i}.{j}"] for j in range(sum(1 for k in tensors if k.startswith(f"layer{i}."))))
            for i in range(layers)
        ]

    def __call__(self, model: LanguageModel, batch, generator: torch.Generator):
        x, y, reset = batch
        if bool(reset) or self.states is None or self.states[0][0].shape[0] != x.shape[0]:
            self.states = None
        logits, states, _, (raw, dropped) = model(x, self.states, generator, return_hidden=True)
        self.states = detach_states(states)
        nll = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1))
        loss = nll
        cfg = getattr(model, "module", model).cfg  # through a DDP wrapper too; the call above stays wrapped
        if cfg.alpha:
            loss = loss + cfg.alpha * dropped.pow(2).mean()  # AR
        if cfg.beta:
            loss = loss + cfg.beta * (raw[:, 1:] - raw[:, :-1]).pow(2).mean()  # TAR
        return loss, {"nll": nll.item(), "ppl": float(torch.exp(nll.detach()).clamp(max=1e9))}


class ResettingBatches:
    """Wraps :class:`LMBatches`: batch ``i`` is ``(inputs, targets, is_epoch_start(i))``."""

    def __init__(self, lm_batches):
        self.inner = lm_batches

    def batch(self, micro_step: int):
        x, y = self.inner.batch(micro_step)
        return x, y, torch.tensor(self.inner.is_epoch_start(micro_step))


@torch.no_grad()
def sentence_distances(
    model: LanguageModel, sentences: list[list[int]], boundary: int, batch_size: int = 64
) -> list[list[torch.Tensor]]:
    """Per-layer syntactic distances of each sentence's words (evaluation mode).

    Each sentence is wrapped in ``boundary`` tokens on both sides for the LM pass (the official
    protocol) and the boundary positions are dropped. Right padding cannot change earlier
    positions of a left-to-right model, so sentences are batched.

    Returns:
        For each sentence, one tensor (len,) per layer.
    """
    if model.cfg.cell != "onlstm":
        raise KexueError("syntactic distances need an ON-LSTM model (cell='onlstm')")
    was = model.training
    model.eval()
    device = next(model.parameters()).device
    out: list[list[torch.Tensor]] = []
    for lo in range(0, len(sentences), batch_size):
        chunk = sentences[lo : lo + batch_size]
        T = max(len(s) for s in chunk) + 2
        ids = torch.full((len(chunk), T), boundary, dtype=torch.long)
        for b, s in enumerate(chunk):
            ids[b, 1 : len(s) + 1] = torch.tensor(s, dtype=torch.long)
        _, _, distances = model(ids.to(device))
        for b, s in enumerate(chunk):
            out.append([d[b, 1 : len(s) + 1].float().cpu() for d in distances])
    model.train(was)
    return out
