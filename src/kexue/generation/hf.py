"""Decode any transformers causal LM with :func:`kexue.generation.decode` through its own KV cache.

``HFStep(model)`` is a ``step(tokens, state) -> (logits, state)`` callable: the state wraps the
model's cache object, and beam search reorders it with the cache's own ``reorder_cache``.
Left-padded prompts (``decode(..., attention_mask=mask)``): the step passes the mask (one column
more per step) and position ids ``cumsum(mask) - 1`` (0 on padding), as ``generate`` computes them.
transformers is imported only here (an optional dependency, extra ``hf``).
"""

from __future__ import annotations

from typing import Any

import torch

from kexue.errors import KexueError


class HFState:
    """The model's cache plus the number of positions already in it."""

    def __init__(self, cache: Any, length: int):
        self.cache, self.length = cache, length

    def reorder(self, index: torch.Tensor) -> HFState:
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


class HFStep:
    """Step function over a transformers causal LM (``model(input_ids, cache=...)``).

    Args:
        model: a transformers causal LM.
        fast_head: when the logits are a plain linear layer over the base model's last hidden
            state, compute them as ``W @ h^T`` instead of ``h @ W^T``. Same numbers up to float
            summation order; on CPU with few rows the output layer (V x D, the largest weight)
            is memory-bound, and this layout reads it faster (measured by ``kexue bench decoding``).
    Example: ``decode(HFStep(model), prompt, search=Beam(4), stopping=Stopping(128, eos))``.
    """

    def __init__(self, model: torch.nn.Module, fast_head: bool = True):
        if not hasattr(model, "config") or not callable(model):
            raise KexueError(f"HFStep needs a transformers causal LM, got {type(model).__name__}")
        self.model = model.eval()
        self.head = _plain_head(model) if fast_head else None
        import transformers

        # transformers 5 renamed the cache argument; both name the same cache object
        self.cache_arg = "cache" if int(transformers.__version__.split(".")[0]) >= 5 else "past_key_values"

    def new_cache(self):
        from transformers import DynamicCache

        return DynamicCache(config=self.model.config)

    @torch.no_grad()
    def __call__(self, tokens: torch.Tensor, state: HFState | None, attention_mask: torch.Tensor | None = None):
        """``tokens`` (N, t) new ids; ``attention_mask`` (N, S) 0 on left padding, S = cached + t."""
        if state is None:
            state = HFState(self.new_cache(), 0)
        t = tokens.shape[1]
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
        h = self.model.base_model(**kw).last_hidden_state[:, -1]  # (N, D)
        logits = torch.mm(self.head.weight, h.t()).t().contiguous()  # (N, V): W (V, D) read row by row
        if self.head.bias is not None:
            logits = logits + self.head.bias
        return logits, state
