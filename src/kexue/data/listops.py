"""ListOps (Nangia & Bowman 2018) as in the Long Range Arena recipe (Tay et al. 2021).

A sequence is a nested prefix expression over the digits 0–9 with the operators MAX, MIN, MED
(median, rounded down) and SM (sum modulo 10), e.g. ``[MAX 2 9 [MIN 4 7 ] 0 ]`` -> 9. The label
is the value (10 classes). LRA's generator (``lra_benchmarks/data/listops.py``) makes a node an
operator with probability ``VALUE_P = 0.25`` and a digit otherwise, i.e. a leaf probability of
0.75, up to depth 10 (where every node is a digit) and 2–10 arguments per operator, and keeps
the trees of 500–2000 tokens; here the depth,
arguments and the length window are arguments (lengths up to 2000 or more), and every draw
comes from one seeded ``random.Random``.
"""

from __future__ import annotations

import random
import statistics

import torch

from kexue.errors import KexueError

PAD = "<pad>"
OPERATORS = ("[MAX", "[MIN", "[MED", "[SM")
VOCAB = (PAD, *[str(i) for i in range(10)], *OPERATORS, "]")
TOKEN_ID = {t: i for i, t in enumerate(VOCAB)}
NUM_CLASSES = 10


def apply_operator(op: str, args: list[int]) -> int:
    """Value of one operator over digit arguments."""
    if op == "[MAX":
        return max(args)
    if op == "[MIN":
        return min(args)
    if op == "[MED":
        return int(statistics.median(args))  # mean of the middle two, rounded down
    if op == "[SM":
        return sum(args) % 10
    raise KexueError(f"unknown ListOps operator {op!r}")


def evaluate(tokens: list[str]) -> int:
    """Evaluate a tokenised expression with a stack, e.g. ``evaluate("[SM 5 6 7 ]".split())`` -> 8."""
    stack: list[list] = []
    value = None
    for tok in tokens:
        if tok in OPERATORS:
            stack.append([tok])
        elif tok == "]":
            if not stack:
                raise KexueError("unbalanced ']' in ListOps expression")
            op, *args = stack.pop()
            value = apply_operator(op, args)
            if stack:
                stack[-1].append(value)
        elif tok.isdigit() and len(tok) == 1:
            value = int(tok)
            if stack:
                stack[-1].append(value)
        else:
            raise KexueError(f"unknown ListOps token {tok!r}")
    if stack or value is None:
        raise KexueError("incomplete ListOps expression")
    return value


def _tree(
    rng: random.Random, depth: int, max_depth: int, max_args: int, leaf_p: float, budget: int
) -> tuple[list[str], int]:
    """Random expression (tokens, value) of at most ``budget`` tokens (a leaf if that is < 4).

    Below the root each node is a digit with probability ``leaf_p`` (LRA: 0.75); the root is an
    operator, since a one-digit expression is never in a length window.
    """
    if depth >= max_depth or budget < 4 or (depth > 0 and rng.random() < leaf_p):
        digit = rng.randrange(10)
        return [str(digit)], digit
    op = rng.choice(OPERATORS)
    tokens, args = [op], []
    for i in range(rng.randint(2, max_args)):
        room = budget - len(tokens) - 1 - max(0, 1 - i)  # keep space for "]" and a 2nd argument
        if room < 1:
            break
        sub, val = _tree(rng, depth + 1, max_depth, max_args, leaf_p, room)
        tokens += sub
        args.append(val)
    tokens.append("]")
    return tokens, apply_operator(op, args)


def longest_expression(max_depth: int, max_args: int) -> int:
    """Tokens of the longest expression within ``max_depth`` and ``max_args`` (a depth-0 tree is one digit),
    capped at 2**40.

    Example: ``longest_expression(1, 10)`` -> 12 (``[MAX`` + 10 digits + ``]``).
    """
    length = 1
    for _ in range(max_depth):
        length = 2 + max_args * length
        if length >= 2**40:
            return 2**40
    return length


def generate(
    num: int,
    min_len: int = 500,
    max_len: int = 2000,
    max_depth: int = 10,
    max_args: int = 10,
    leaf_p: float = 0.75,
    seed: int = 0,
) -> tuple[list[list[str]], list[int]]:
    """Draw ``num`` expressions whose token count lies in ``[min_len, max_len]``.

    Each tree is grown within a token budget drawn uniformly from the window (trees that come
    out shorter than ``min_len`` are redrawn), so lengths spread over the whole window.

    The root is always an operator; a subtree never outgrows the tokens left. Returns (token lists, values).
    Example: ``generate(100, 20, 60, max_depth=4, seed=0)``.
    """
    if not 1 <= min_len <= max_len:
        raise KexueError(f"need 1 <= min_len <= max_len, got {min_len}, {max_len}")
    if num < 0 or max_depth < 1 or max_args < 2:
        raise KexueError(f"need num >= 0, max_depth >= 1 and max_args >= 2, got {num}, {max_depth}, {max_args}")
    if max_len < 4 or min_len > longest_expression(max_depth, max_args):
        raise KexueError(
            f"no ListOps expression has {min_len}-{max_len} tokens: the shortest has 4 tokens "
            f"([MAX 1 2 ]), the longest at depth {max_depth} with {max_args} arguments "
            f"{longest_expression(max_depth, max_args)}"
        )
    rng = random.Random(seed)
    seqs, labels = [], []
    tries = 0
    while len(seqs) < num:
        tries += 1
        if tries > 200 * num + 10_000:
            raise KexueError(
                f"could not draw ListOps sequences of {min_len}–{max_len} tokens with depth "
                f"{max_depth} and {max_args} arguments; widen the window or raise the depth"
            )
        tokens, value = _tree(rng, 0, max_depth, max_args, leaf_p, rng.randint(min_len, max_len))
        if min_len <= len(tokens) <= max_len:
            seqs.append(tokens)
            labels.append(value)
    return seqs, labels


def to_tensors(
    seqs: list[list[str]], labels: list[int], length: int | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Token ids right-padded with 0 to ``length`` (default: the longest), and labels.

    Returns ``tokens`` (N, length) int64 and ``labels`` (N,) int64; the padding mask is ``tokens != 0``.
    """
    length = length or max(len(s) for s in seqs)
    tokens = torch.zeros(len(seqs), length, dtype=torch.long)
    for i, s in enumerate(seqs):
        if len(s) > length:
            raise KexueError(f"sequence {i} has {len(s)} tokens, more than length {length}")
        tokens[i, : len(s)] = torch.tensor([TOKEN_ID[t] for t in s])
    return tokens, torch.tensor(labels, dtype=torch.long)
