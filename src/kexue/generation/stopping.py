"""When decoding stops, and why: every output records a reason per sequence.

Runs that hit the length cap are the failure the non-termination study counts (Welleck et al.
2020), so the reason is never dropped: ``EOS`` when the sequence emitted end-of-sequence,
``MAX_LENGTH`` when it was cut at ``max_new_tokens``.
"""

from __future__ import annotations

from dataclasses import dataclass

from kexue.errors import KexueError

EOS = "eos"
MAX_LENGTH = "max_length"


@dataclass(frozen=True)
class Stopping:
    """Stop a sequence at ``eos_token_id`` or after ``max_new_tokens`` generated tokens.

    Attributes:
        max_new_tokens: the cap L on generated tokens (eos included).
        eos_token_id: end-of-sequence id; None means only the cap stops decoding.
        pad_token_id: written after a sequence has finished (default: eos, else 0).
    """

    max_new_tokens: int = 100
    eos_token_id: int | None = None
    pad_token_id: int | None = None

    def __post_init__(self) -> None:
        if isinstance(self.max_new_tokens, bool) or not isinstance(self.max_new_tokens, int) or self.max_new_tokens < 1:
            raise KexueError(f"max_new_tokens must be an integer >= 1, got {self.max_new_tokens!r}")
        if self.eos_token_id is not None and self.eos_token_id < 0:
            raise KexueError(f"eos_token_id must be >= 0, got {self.eos_token_id}")

    @property
    def pad(self) -> int:
        if self.pad_token_id is not None:
            return self.pad_token_id
        return self.eos_token_id if self.eos_token_id is not None else 0
