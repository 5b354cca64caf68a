"""Decode any transformers causal LM with :func:`kexue.generation.decode` through its own KV cache.

``HFStep(model)`` is a ``step(tokens, state) -> (logits, state)`` callable: the state wraps the
model's cache object, and beam search reorders it with the cache's own ``reorder_cache``.

The cache (``cache="inplace"``, the default) is transformers' ``DynamicCache`` with each full-attention
layer replaced by :class:`InPlaceLayer`: keys and values live in one preallocated buffer per layer,
each step writes its new column in place (no ``torch.cat`` of the whole past per layer and step, as
``DynamicLayer`` does), attention reads a view of the filled part, and a reorder copies nothing when
no row takes another's place (finished rows dropped from the end, beams that all keep their own
past), else gathers once into a spare buffer that becomes the cache (no allocation per step).
``cache="dynamic"`` keeps transformers' own layers (the reference the tests compare with).
Left-padded prompts (``decode(..., attention_mask=mask)``): the step passes the mask (one column
more per step) and position ids ``cumsum(mask) - 1`` (0 on padding), as ``generate`` computes them.
transformers is imported only here (an optional dependency, extra ``hf``).
"""

from __future__ import annotations

import functools
from typing import Any

import torch

from kexue.errors import KexueError
from kexue.generation.kvcache import KVBuffer, moved_rows


@functools.cache
def _inplace_layer() -> type:
    """:class:`InPlaceLayer`, built on first use (transformers is imported only when needed)."""
    from transformers.cache_utils import DynamicLayer

    class InPlaceLayer(DynamicLayer):
        """A ``DynamicLayer`` whose keys/values live in a :class:`~kexue.generation.kvcache.KVBuffer`
        (``self.buf``): written in place, read as views, rows moved only when they change."""

        def __init__(self, capacity: int = 0, **kwargs):
            super().__init__(**kwargs)
            self.buf = KVBuffer(capacity)

        def _sync(self) -> None:
            self.keys, self.values = self.buf.keys, self.buf.values

        def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs):
            if not self.is_initialized:
                self.lazy_initialization(key_states, value_states)
            self.buf.append(key_states, value_states)
            self._sync()
            return self.keys, self.values

        def move_rows(self, index: torch.Tensor, moved: torch.Tensor | None = None) -> None:
            """Row ``i`` becomes old row ``index[i]`` (:meth:`KVBuffer.move_rows`)."""
            self.buf.move_rows(index, moved)
            self._sync()

        def reorder_cache(self, beam_idx: torch.LongTensor) -> None:
            self.move_rows(beam_idx.to(self.device))

        def batch_select_indices(self, indices: torch.Tensor) -> None:
            self.move_rows(indices.to(self.device))

        def batch_repeat_interleave(self, repeats: int) -> None:
            if self.buf.rows:
                self.move_rows(torch.arange(self.buf.rows, device=self.device).repeat_interleave(repeats))

        def crop(self, tokens_to_remove: int) -> None:
            super().crop(tokens_to_remove)
            if self.buf.length and tokens_to_remove:
                self.buf.crop_to(self.buf.length - abs(tokens_to_remove))
                self._sync()

        def reset(self) -> None:
            super().reset()
            self.buf.clear()

    return InPlaceLayer


def __getattr__(name: str):
    if name == "InPlaceLayer":  # ``from kexue.generation.hf import InPlaceLayer`` builds the class
        return _inplace_layer()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# Up to this many rows the fast head computes W @ h^T (reads the V x D weight row by row); above it,
# h @ W^T as the model does: the matrix product is as fast, and the (V, N) -> (N, V) transpose of the
# logits (a strided copy of N x V floats) would cost a few ms per step (measured: 32 rows, V = 50257).
FAST_HEAD_ROWS = 8


class HFState:
    """The model's cache plus the number of positions already in it."""

    def __init__(self, cache: Any, length: int):
        self.cache, self.length = cache, length

    def reorder(self, index: torch.Tensor) -> HFState:
        if isinstance(self.cache, list):  # the lean GPT-2 step's KVBuffers (one device)
            moved = moved_rows(index)
            for buf in self.cache:
                buf.move_rows(index, moved)
            return self
        layers = getattr(self.cache, "layers", [])
        if layers and all(type(layer) is _inplace_layer() for layer in layers):
            # which rows change is the same for every layer: find them once (per device: a model
            # split across devices keeps each layer's cache on its own)
            moved = moved_rows(index)
            on: dict = {}
            for layer in layers:
                dev = layer.buf._k.device if layer.buf._k is not None else index.device
                if dev not in on:
                    on[dev] = (index.to(dev), moved.to(dev))
                layer.move_rows(*on[dev])
        else:
            self.cache.reorder_cache(index)
        return self


def _plain_head(model: torch.nn.Module) -> torch.nn.Linear | None:
    """The output layer if logits are just ``lm_head(base_model(x))`` (no soft-capping or scaling)."""
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    cfg = model.config
    if not isinstance(head, torch.nn.Linear) or getattr(model, "base_model", model) is model:
        return None
    if getattr(cfg, "final_logit_softcapping", None) or getattr(cfg, "logit_scale", None) not in (None, 1, 1.0):
        return None
    return head


def _lean_gpt2(model: torch.nn.Module) -> LeanGPT2 | None:
    """A :class:`LeanGPT2` over ``model`` if it is a plain GPT-2 whose forward the lean step
    reproduces op for op, else None (the model's own forward is used)."""
    from transformers.pytorch_utils import Conv1D

    cfg, base = model.config, getattr(model, "transformer", None)
    if getattr(cfg, "model_type", None) != "gpt2" or type(base).__name__ != "GPT2Model":
        return None
    if cfg.add_cross_attention or getattr(cfg, "_attn_implementation", None) != "sdpa":
        return None  # eager attention computes softmax(QK^T)V itself: other rounding than sdpa
    if model.training:
        return None  # dropout
    modules = list(model.modules())
    hooks = torch.nn.modules.module
    if any(m._forward_hooks or m._forward_pre_hooks for m in modules) or (
        hooks._global_forward_hooks or hooks._global_forward_pre_hooks
    ):
        return None  # hooks (offloading, adapters) run only through the modules' __call__
    params = list(model.parameters())
    if len({p.device for p in params}) != 1:
        return None
    for block in base.h:
        parts = (block.attn.c_attn, block.attn.c_proj, block.mlp.c_fc, block.mlp.c_proj)
        if any(type(p) is not Conv1D for p in parts) or type(block.ln_1) is not torch.nn.LayerNorm:
            return None
        if type(block.ln_2) is not torch.nn.LayerNorm or hasattr(block, "crossattention"):
            return None
    if type(base.ln_f) is not torch.nn.LayerNorm or type(base.wte) is not torch.nn.Embedding:
        return None
    return LeanGPT2(base)


class LeanGPT2:
    """GPT-2's forward for decoding, the same tensor ops as transformers' ``GPT2Model`` with sdpa
    attention in the same order (the hidden states are bit-identical: tested), without the module
    calls, keyword plumbing, mask building and cache objects around them (about a quarter of a
    small model's step on CPU). Keys and values go to one :class:`KVBuffer` per layer.
    Used by :class:`HFStep` for prompts without padding; a padded (ragged) batch takes the model's
    own forward."""

    def __init__(self, base: torch.nn.Module):
        self.wte, self.wpe = base.wte.weight, base.wpe.weight
        self.ln_f = base.ln_f
        self.blocks = [(b.ln_1, b.attn, b.ln_2, b.mlp) for b in base.h]
        self.heads = base.config.n_head
        self.width = base.config.hidden_size

    def new_cache(self, capacity: int = 0) -> list[KVBuffer]:
        return [KVBuffer(capacity) for _ in self.blocks]

    def __call__(self, tokens: torch.Tensor, cache: list[KVBuffer], start: int) -> torch.Tensor:
        """Last position's final hidden state (N, D) after ``tokens`` (N, t) at positions ``start``..."""
        F = torch.nn.functional
        N, t = tokens.shape
        E, H = self.width, self.heads
        h = F.embedding(tokens, self.wte) + F.embedding(torch.arange(start, start + t, device=tokens.device), self.wpe)
        mask = None
        if t > 1 and start > 0:  # several new tokens after a cached past: causal with an offset
            mask = torch.ones(t, start + t, dtype=torch.bool, device=tokens.device).tril(start)
        for (ln_1, attn, ln_2, mlp), buf in zip(self.blocks, cache):
            x = F.layer_norm(h, ln_1.normalized_shape, ln_1.weight, ln_1.bias, ln_1.eps)
            c = attn.c_attn
            q, k, v = torch.addmm(c.bias, x.view(-1, E), c.weight).view(N, t, 3 * E).split(E, dim=2)
            q, k, v = (y.view(N, t, H, -1).transpose(1, 2) for y in (q, k, v))
            keys, values = buf.append(k, v)
            o = F.scaled_dot_product_attention(
                q, keys, values, attn_mask=mask, dropout_p=0.0, scale=attn.scaling, is_causal=t > 1 and mask is None
            )
            o = o.transpose(1, 2).reshape(N, t, E)
            c = attn.c_proj
            h = torch.addmm(c.bias, o.view(-1, E), c.weight).view(N, t, E) + h
            x = F.layer_norm(h, ln_2.normalized_shape, ln_2.weight, ln_2.bias, ln_2.eps)
            x = torch.addmm(mlp.c_fc.bias, x.view(-1, E), mlp.c_fc.weight)
            x = torch.addmm(mlp.c_proj.bias, mlp.act.forward(x), mlp.c_proj.weight).view(N, t, E)
            h = h + x
        return F.layer_norm(h[:, -1], self.ln_f.normalized_shape, self.ln_f.weight, self.ln_f.bias, self.ln_f.eps)


class HFStep:
    """Step function over a transformers causal LM (``model(input_ids, cache=...)``).

    Args:
        model: a transformers causal LM.
        fast_head: when the logits are a plain linear layer over the base model's last hidden
            state, compute them as ``W @ h^T`` instead of ``h @ W^T``. Same numbers up to float
            summation order; on CPU with few rows the output layer (V x D, the largest weight)
            is memory-bound, and this layout reads it faster (measured by ``kexue bench decoding``);
            with more than ``FAST_HEAD_ROWS`` rows (beam search over a batch) the model's own layout.
        cache: ``"inplace"`` (the default with transformers >= 5): the KV cache is written in place
            into preallocated buffers (:class:`InPlaceLayer`); ``"dynamic"`` (the default before 5):
            transformers' ``DynamicCache`` as it is.
        capacity: positions to preallocate per layer (0: twice the prompt, at least 64 more); the
            buffers double when full. A reorder that moves rows keeps a spare buffer of the same
            size, so the cache holds about twice its capacity.
        lean: for a plain GPT-2 (``GPT2LMHeadModel``, sdpa attention, no hooks) decode prompts
            without padding through :class:`LeanGPT2` (the model's tensor ops without its module
            plumbing; bit-identical hidden states); other models, padded batches and
            ``cache="dynamic"`` go through the model's forward.
    Example: ``decode(HFStep(model), prompt, search=Beam(4), stopping=Stopping(128, eos))``.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        fast_head: bool = True,
        cache: str | None = None,
        capacity: int = 0,
        lean: bool = True,
    ):
        if not hasattr(model, "config") or not callable(model):
            raise KexueError(f"HFStep needs a transformers causal LM, got {type(model).__name__}")
        import transformers

        major = int(transformers.__version__.split(".")[0])
        cache = cache if cache is not None else ("inplace" if major >= 5 else "dynamic")
        if cache not in ("inplace", "dynamic"):
            raise KexueError(f"cache must be 'inplace' or 'dynamic', got {cache!r}")
        if cache == "inplace" and major < 5:  # its layer API (lazy_initialization, crop) is transformers 5's
            raise KexueError(f"cache='inplace' needs transformers >= 5 (installed {transformers.__version__})")
        if isinstance(capacity, bool) or not isinstance(capacity, int) or capacity < 0:
            raise KexueError(f"capacity must be an integer >= 0, got {capacity!r}")
        self.cache, self.capacity = cache, capacity
        self.model = model.eval()
        self.head = _plain_head(model) if fast_head else None
        # transformers 5 renamed the cache argument; both name the same cache object
        self.cache_arg = "cache" if major >= 5 else "past_key_values"
        self.lean_wanted = bool(lean) and cache == "inplace" and self.head is not None
        self.lean = _lean_gpt2(self.model) if self.lean_wanted else None

    def new_cache(self):
        from transformers import DynamicCache
        from transformers.cache_utils import DynamicLayer

        cache = DynamicCache(config=self.model.config)
        if self.cache == "inplace":  # full-attention layers only; sliding-window and other layers stay as they are
            layer = _inplace_layer()
            cache.layers = [layer(self.capacity) if type(x) is DynamicLayer else x for x in cache.layers]
            if cache.layer_class_to_replicate is DynamicLayer:  # layers made lazily
                cache.layer_class_to_replicate = functools.partial(layer, self.capacity)
        return cache

    @torch.no_grad()
    def __call__(self, tokens: torch.Tensor, state: HFState | None, attention_mask: torch.Tensor | None = None):
        """``tokens`` (N, t) new ids; ``attention_mask`` (N, S) 0 on left padding, S = cached + t."""
        t = tokens.shape[1]
        if state is None and self.lean_wanted:  # hooks, attention or mode may have changed: check again
            self.lean = _lean_gpt2(self.model)
        if self.lean is not None and attention_mask is None and (state is None or isinstance(state.cache, list)):
            if state is None:
                state = HFState(self.lean.new_cache(self.capacity), 0)
            h = self.lean(tokens, state.cache, state.length)
            state.length += t
            return self._head(h), state
        if state is None:
            state = HFState(self.new_cache(), 0)
        elif isinstance(state.cache, list):
            raise KexueError(
                "a decode started without attention_mask cannot take one later: pass the mask from the first step"
            )
        positions = torch.arange(state.length, state.length + t, device=tokens.device)
        kw = {"input_ids": tokens, "use_cache": True, "cache_position": positions, self.cache_arg: state.cache}
        if attention_mask is not None:
            if attention_mask.shape != (tokens.shape[0], state.length + t):
                raise KexueError(
                    f"attention_mask must be (rows, cached + new) = {(tokens.shape[0], state.length + t)}, "
                    f"got {tuple(attention_mask.shape)}"
                )
            kw["attention_mask"] = attention_mask
            # positions counted from each row's first real token; padding at 0 (generate's rule)
            kw["position_ids"] = (attention_mask.long().cumsum(-1)[:, -t:] - 1).clamp(min=0)
        state.length += t
        if self.head is None:
            return self.model(**kw, logits_to_keep=1).logits[:, -1], state
        return self._head(self.model.base_model(**kw).last_hidden_state[:, -1]), state

    def _head(self, h: torch.Tensor) -> torch.Tensor:
        """Logits (N, V) from the last hidden states (N, D) through the plain output layer."""
        if h.shape[0] > FAST_HEAD_ROWS:  # enough rows to fill the kernel: the (N, V) layout needs no transpose
            return torch.nn.functional.linear(h, self.head.weight, self.head.bias)
        logits = torch.mm(self.head.weight, h.t()).t().contiguous()  # (N, V): W (V, D) read row by row
        if self.head.bias is not None:
            logits = logits + self.head.bias
        return logits
