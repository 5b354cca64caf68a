"""Decoding engine: logits processors, search strategies and one loop that knows no model.

See ``docs/decoding.md``. ``decode(step, prompt, processors, search, stopping, generator)``
works with any ``step(tokens, state) -> (logits, state)``; :mod:`kexue.generation.hf` adapts
transformers causal LMs.
"""

from kexue.generation.processors import (
    ConsistentTopK,
    ConsistentTopP,
    EosLengthBoost,
    ForceEosAtMaxLength,
    LogitsProcessor,
    MinLength,
    MinP,
    NoRepeatNGram,
    Processors,
    RepetitionPenalty,
    Temperature,
    TopK,
    TopP,
    Typical,
)
from kexue.generation.search import Beam, DecodeOutput, Greedy, Sample, Search, decode, left_pad, reorder_batch
from kexue.generation.stopping import EOS, MAX_LENGTH, Stopping

__all__ = [
    "EOS",
    "MAX_LENGTH",
    "Beam",
    "ConsistentTopK",
    "ConsistentTopP",
    "DecodeOutput",
    "EosLengthBoost",
    "ForceEosAtMaxLength",
    "Greedy",
    "LogitsProcessor",
    "MinLength",
    "MinP",
    "NoRepeatNGram",
    "Processors",
    "RepetitionPenalty",
    "Sample",
    "Search",
    "Stopping",
    "Temperature",
    "TopK",
    "TopP",
    "Typical",
    "decode",
    "left_pad",
    "reorder_batch",
]
