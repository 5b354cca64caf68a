"""Unsupervised constituency parsing from syntactic distances, scored by unlabeled bracket F1.

A tree is a nested list whose leaves are tokens (any non-list object): ``[["the", "cat"], "sat"]``.
Spans are ``(start, end)`` word offsets, ``end`` exclusive.

Protocol of the ON-LSTM paper (Shen et al., 2019, section 5.2, and its official test script):

- distances ``d_t = 1 - mean_k f~_t(k)`` per token from one layer (default the middle one);
- greedy top-down split at the first maximum: ``[parse(x_<k), [x_k, parse(x_>k)]]``;
- brackets: every constituent covering >= 2 words except the whole sentence, as a set;
- sentence F1 with ``R = 1`` when gold has no bracket (and ``P = 1`` when the prediction has
  none either); the score is the mean of sentence F1s, not a pooled corpus F1;
- WSJ10: sentences of at most 10 words after punctuation removal.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Any

import torch

from kexue.errors import KexueError

Tree = Any  # a leaf, or a list of trees


def select_distances(distances: Sequence[torch.Tensor], layer: int | str = "middle") -> torch.Tensor:
    """Pick the distances used for parsing from per-layer distances.

    Args:
        distances: one tensor (T,) or (B, T) per layer.
        layer: a 0-based layer index, ``"middle"`` (the paper's 2nd of 3 layers) or ``"mean"``.
    Returns:
        (T,) or (B, T).
    """
    if not distances:
        raise KexueError("no distances given")
    if layer == "middle":
        return distances[len(distances) // 2]
    if layer == "mean":
        return torch.stack(list(distances)).mean(0)
    if isinstance(layer, int) and -len(distances) <= layer < len(distances):
        return distances[layer]
    raise KexueError(f"parse layer must be 'middle', 'mean' or an index below {len(distances)}, got {layer!r}")


def build_tree(distances: Sequence[float], leaves: Sequence[Any]) -> Tree:
    """Greedy top-down binary tree: split before the token with the largest distance.

    ``[parse(leaves[:k]), [leaves[k], parse(leaves[k+1:])]]`` with ``k`` the first argmax; empty
    parts are dropped and a single token is a leaf.

    Example: ``build_tree([0.1, 0.9, 0.2], "abc")`` -> ``["a", ["b", "c"]]``.
    """
    d = [float(x) for x in distances]
    if len(d) != len(leaves):
        raise KexueError(f"{len(d)} distances for {len(leaves)} tokens")
    if not leaves:
        raise KexueError("cannot build a tree over zero tokens")

    def rec(lo: int, hi: int) -> Tree:
        if hi - lo == 1:
            return leaves[lo]
        k = max(range(lo, hi), key=lambda t: (d[t], -t))  # first maximum
        right = leaves[k] if k + 1 == hi else [leaves[k], rec(k + 1, hi)]
        return right if k == lo else [rec(lo, k), right]

    return rec(0, len(leaves))


def leaves_of(tree: Tree) -> list:
    """The tokens of a tree, left to right."""
    if not isinstance(tree, list):
        return [tree]
    return [leaf for child in tree for leaf in leaves_of(child)]


def tree_spans(tree: Tree, keep_whole: bool = False) -> set[tuple[int, int]]:
    """Brackets of a tree: spans of constituents with >= 2 words, without the whole sentence.

    Example: ``tree_spans([["a", "b"], ["c", ["d", "e"]]])`` -> ``{(0, 2), (2, 5), (3, 5)}``.
    """
    spans: set[tuple[int, int]] = set()

    def rec(node: Tree, start: int) -> int:
        if not isinstance(node, list):
            return start + 1
        end = start
        for child in node:
            end = rec(child, end)
        if end - start >= 2:
            spans.add((start, end))
        return end

    n = rec(tree, 0)
    if not keep_whole:
        spans.discard((0, n))
    return spans


def sentence_f1(pred: set, gold: set) -> float:
    """Unlabeled bracket F1 of one sentence with the paper's conventions on empty sets."""
    overlap = len(pred & gold)
    precision = overlap / len(pred) if pred else 0.0
    recall = overlap / len(gold) if gold else 1.0
    if not gold and not pred:
        precision = 1.0
    return 2 * precision * recall / (precision + recall) if precision + recall else 0.0


def mean_f1(preds: Sequence[Tree], golds: Sequence[Tree]) -> float:
    """Mean sentence-level F1 (in [0, 1]) of predicted against gold trees over the same tokens."""
    if len(preds) != len(golds):
        raise KexueError(f"{len(preds)} predicted trees for {len(golds)} gold trees")
    if not golds:
        raise KexueError("no sentences to score")
    scores = []
    for p, g in zip(preds, golds):
        if len(leaves_of(p)) != len(leaves_of(g)):
            raise KexueError("a predicted tree does not cover the same number of words as its gold tree")
        scores.append(sentence_f1(tree_spans(p), tree_spans(g)))
    return sum(scores) / len(scores)


def right_branching(leaves: Sequence[Any]) -> Tree:
    """``[a, [b, [c, d]]]``."""
    return build_tree([-t for t in range(len(leaves))], leaves)


def left_branching(leaves: Sequence[Any]) -> Tree:
    """``[[[a, b], c], d]``."""
    return build_tree([t for t in range(len(leaves))], leaves)


def random_tree(leaves: Sequence[Any], rng: random.Random) -> Tree:
    """A binary tree from uniformly random distances (seeded by ``rng``)."""
    return build_tree([rng.random() for _ in leaves], leaves)


def tree_depth(tree: Tree) -> int:
    """Depth of the deepest leaf (a single leaf has depth 0)."""
    if not isinstance(tree, list):
        return 0
    return 1 + max(tree_depth(c) for c in tree)


def wsj10(sentences: Sequence[Sequence[Any]], max_words: int = 10) -> list[int]:
    """Indices of sentences with at most ``max_words`` words (punctuation already removed)."""
    return [k for k, s in enumerate(sentences) if len(s) <= max_words]


def baseline_scores(golds: Sequence[Tree], seed: int = 0) -> dict[str, float]:
    """Mean F1 of right-branching, left-branching and random trees against ``golds``."""
    rng = random.Random(seed)
    words = [leaves_of(g) for g in golds]
    return {
        "right_branching": mean_f1([right_branching(w) for w in words], golds),
        "left_branching": mean_f1([left_branching(w) for w in words], golds),
        "random": mean_f1([random_tree(w, rng) for w in words], golds),
    }


def to_brackets(tree: Tree) -> str:
    """``(a (b c))`` text of a tree."""
    if not isinstance(tree, list):
        return str(tree)
    return "(" + " ".join(to_brackets(c) for c in tree) + ")"


def draw_tree(tree: Tree, ax=None, title: str | None = None):
    """Draw a tree with matplotlib (leaves along the bottom); returns the figure."""
    import matplotlib.pyplot as plt

    words = leaves_of(tree)
    depth = tree_depth(tree)
    if ax is None:
        fig, ax = plt.subplots(figsize=(max(4, 0.9 * len(words)), 0.6 * depth + 1.5))
    else:
        fig = ax.figure
    counter = iter(range(len(words)))

    def rec(node, level):  # returns (x, y) of the node
        if not isinstance(node, list):
            x = next(counter)
            ax.text(x, -0.3, str(node), ha="center", va="top", fontsize=10)
            return x, 0.0
        pts = [rec(c, level + 1) for c in node]
        y = float(depth - level)
        x = sum(p[0] for p in pts) / len(pts)
        for px, py in pts:
            ax.plot([x, px], [y, py], color="0.3", lw=1)
        ax.plot([x], [y], "o", color="tab:blue", ms=3)
        return x, y

    rec(tree, 0)
    ax.set_xlim(-0.7, len(words) - 0.3)
    ax.set_ylim(-1.2, depth + 0.4)
    ax.axis("off")
    if title:
        ax.set_title(title, fontsize=10)
    return fig
