"""Decode any transformers causal LM with :func:`kexue.generation.decode` through its own KV cache.

``HFStep(model)`` is a ``step(tokens, state) -> (logits, state)`` callable: the state wraps the
model's cache object, and beam search reorders it with the cache's own ``reorder_cache``.
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

    def reorder(self, index: torch.Tensor) -> "HFState":
        self.cache.reorder_cache(index)
        return self


class HFStep:
    """Step function over a transformers causal LM (``model(input_ids, past_key_values=...)``).

    Example: ``decode(HFStep(model), prompt, search=Beam(4), stopping=Stopping(128, eos))``.
    """

    def __init__(self, model: torch.nn.Module):
        if not hasattr(model, "config") or not callable(model):
            raise KexueError(f"HFStep needs a transformers causal LM, got {type(model).__name__}")
        self.model = model.eval()
        import transformers

        # transformers 5 renamed the cache argument; both name the same cache object
        self.cache_arg = "cache" if int(transformers.__version__.split(".")[0]) >= 5 else "past_key_values"

    def new_cache(self):
        from transformers import DynamicCache

        return DynamicCache(config=self.model.config)

    @torch.no_grad()
    def __call__(self, tokens: torch.Tensor, state: HFState | None):
        if state is None:
            state = HFState(self.new_cache(), 0)
        t = tokens.shape[1]
        positions = torch.arange(state.length, state.length + t, device=tokens.device)
        out = self.model(input_ids=tokens, use_cache=True, cache_position=positions, logits_to_keep=1,
                         **{self.cache_arg: state.cache})
        state.length += t
        return out.logits[:, -1], state
