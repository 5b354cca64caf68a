"""Gold constituency trees: a Penn Treebank ``.mrg`` reader and a probabilistic grammar generator.

Trees are nested lists of words (unlabeled, unary chains collapsed), the format of
:mod:`kexue.analysis.trees`; :class:`GoldSentence` also keeps a labeled bracketed string.

Reader conventions (the ON-LSTM paper's evaluation): keep only leaves whose POS tag is a word
tag (drops punctuation, ``$``, ``#`` and ``-NONE-`` traces), strip function tags and indices
(``NP-SBJ-1`` -> ``NP``), remove constituents left empty, collapse unary chains, lowercase and
turn numbers into ``N`` (as in Mikolov's PTB).
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass
from pathlib import Path

from kexue.errors import KexueError
from kexue.io import reading

# POS tags the paper's evaluation keeps (everything else is punctuation, symbols or traces).
WORD_TAGS = frozenset(
    "CC CD DT EX FW IN JJ JJR JJS LS MD NN NNS NNP NNPS PDT POS PRP PRP$ RB RBR "
    "RBS RP SYM TO UH VB VBD VBG VBN VBP VBZ WDT WP WP$ WRB".split()
)
_NUMBER = re.compile(r"^[\d.,\-/:]*\d[\d.,\-/:]*$")


@dataclass
class GoldSentence:
    """A sentence with its gold tree.

    Attributes:
        words: the tokens, left to right.
        tree: unlabeled nested lists of ``words``, unary chains collapsed.
        bracketed: the labeled tree as ``(S (NP the cat) (VP sat))``.
    """

    words: list[str]
    tree: object
    bracketed: str


# ---------------------------------------------------------------------------------------------
# .mrg reader


def _tokenize(text: str) -> list[str]:
    return re.findall(r"\(|\)|[^\s()]+", text)


def _parse_sexprs(text: str) -> list:
    """All top-level s-expressions of ``text`` as nested ``[label, child, ...]`` lists."""
    tokens, stack, out = _tokenize(text), [], []
    for tok in tokens:
        if tok == "(":
            stack.append([])
        elif tok == ")":
            if not stack:
                raise KexueError("unbalanced ')' in treebank text")
            node = stack.pop()
            (stack[-1] if stack else out).append(node)
        else:
            if not stack:
                raise KexueError(f"token {tok!r} outside any bracket in treebank text")
            stack[-1].append(tok)
    if stack:
        raise KexueError("unbalanced '(' in treebank text (file truncated?)")
    return out


def _clean_label(label: str) -> str:
    if label.startswith("-"):  # -NONE-, -LRB-, -RRB-
        return label
    return re.split(r"[-=]", label)[0] or label


def _normalise_word(word: str) -> str:
    return "N" if _NUMBER.match(word) else word.lower()


def _convert(node) -> tuple[str, list] | None:
    """Node -> (label, children) with leaves as words; None when nothing of it is kept."""
    if not node:
        return None
    if isinstance(node[0], list):  # the unlabeled outer wrapper "( (S ...) )"
        node = ["", *node]
    label = _clean_label(node[0])
    kids = node[1:]
    if len(kids) == 1 and isinstance(kids[0], str):  # preterminal (TAG word)
        return (label, [_normalise_word(kids[0])]) if label in WORD_TAGS else None
    children = [c for c in (_convert(k) for k in kids if isinstance(k, list)) if c is not None]
    if not children:
        return None
    if len(children) == 1:  # collapse unary chains, keeping the lower label
        return children[0]
    return label, children


def _unlabeled(node) -> object:
    label, children = node
    if len(children) == 1 and isinstance(children[0], str):
        return children[0]
    return [_unlabeled(c) for c in children]


def _bracketed(node) -> str:
    label, children = node
    if len(children) == 1 and isinstance(children[0], str):
        return children[0]
    return f"({label} " + " ".join(_bracketed(c) for c in children) + ")"


def _words(node) -> list[str]:
    label, children = node
    if len(children) == 1 and isinstance(children[0], str):
        return [children[0]]
    return [w for c in children for w in _words(c)]


def read_mrg(text: str) -> list[GoldSentence]:
    """Sentences of Penn Treebank bracketed text, cleaned as the paper's evaluation does.

    Example: ``read_mrg("( (S (NP-SBJ (DT The) (NN cat)) (VP (VBD sat)) (. .)) )")[0].tree``
    -> ``[["the", "cat"], "sat"]``.
    """
    out = []
    for sexpr in _parse_sexprs(text):
        node = _convert(sexpr)
        if node is None:
            continue
        out.append(GoldSentence(_words(node), _unlabeled(node), _bracketed(node)))
    return out


def read_treebank(path: str | Path) -> list[GoldSentence]:
    """All sentences of the ``.mrg`` files under a folder (recursively, sorted) or of one file.

    Raises:
        KexueError: the path is missing, a folder holds no ``.mrg`` file, or a file cannot be
            read or is not bracketed text (the message names the file).
    """
    path = Path(path)
    if path.is_file():
        files = [path]
    elif path.is_dir():
        files = sorted(path.rglob("*.mrg"))
        if not files:
            raise KexueError(f"treebank folder {path} holds no .mrg files")
    else:
        raise KexueError(f"treebank {path} not found")
    out = []
    for f in files:
        with reading(f, "treebank file") as p:
            text = p.read_bytes().decode("utf-8", errors="replace")  # a stray byte costs one word, not the file
        try:
            out.extend(read_mrg(text))
        except KexueError as e:
            raise KexueError(f"treebank file {f}: {e}") from None
    return out


# ---------------------------------------------------------------------------------------------
# Probabilistic grammar

# Preterminals -> words. Number agreement (_SG / _PL) between subjects and verbs, also across
# prepositional phrases and relative clauses, gives the LM a reason to track the structure.
LEXICON = {
    "DT_SG": "the a this that every each".split(),
    "DT_PL": "the these those some many few".split(),
    "NN_SG": (
        "dog cat teacher student farmer doctor bird child king river city house garden "
        "letter song machine horse lawyer painter window"
    ).split(),
    "NN_PL": (
        "dogs cats teachers students farmers doctors birds children kings rivers cities "
        "houses gardens letters songs machines horses lawyers painters windows"
    ).split(),
    "NAME": "john mary paris london alice bob".split(),
    "PRP_SG": "he she it".split(),
    "PRP_PL": "they we".split(),
    "JJ": "big small old young red happy quiet strange green famous".split(),
    "RB_DEG": "very quite rather".split(),
    "RB": "often quickly slowly rarely quietly happily".split(),
    "IN": "near with behind under from beside".split(),
    "WDT": ["that", "which"],
    "COMP": ["that"],
    "SUB": "when because although while".split(),
    "CC": ["and", "but"],
    "MD": "can will must might".split(),
    "VI_SG": "sleeps runs laughs waits sings".split(),
    "VI_PL": "sleep run laugh wait sing".split(),
    "VT_SG": "sees likes finds follows helps watches".split(),
    "VT_PL": "see like find follow help watch".split(),
    "VD_SG": ["gives", "sends", "shows"],
    "VD_PL": ["give", "send", "show"],
    "VS_SG": "thinks says knows believes".split(),
    "VS_PL": "think say know believe".split(),
    "VI_B": "sleep run laugh wait".split(),
    "VT_B": "see like find follow".split(),
}

# Nonterminal -> [(weight, right-hand side, recursive?)]. Recursive rules fade with depth.
GRAMMAR = {
    "ROOT": [(0.72, ["S"], False), (0.14, ["SBAR", "S"], True), (0.14, ["S", "CC", "S"], True)],
    "SBAR": [(1.0, ["SUB", "S"], True)],
    "S": [(0.55, ["NP_SG", "VP_SG"], False), (0.45, ["NP_PL", "VP_PL"], False)],
    "NP_SG": [
        (0.55, ["DT_SG", "NOM_SG"], False),
        (0.06, ["NAME"], False),
        (0.06, ["PRP_SG"], False),
        (0.2, ["NP_SG", "PP"], True),
        (0.13, ["NP_SG", "RC_SG"], True),
    ],
    "NP_PL": [
        (0.61, ["DT_PL", "NOM_PL"], False),
        (0.06, ["PRP_PL"], False),
        (0.2, ["NP_PL", "PP"], True),
        (0.13, ["NP_PL", "RC_PL"], True),
    ],
    "NOM_SG": [(0.65, ["NN_SG"], False), (0.35, ["ADJP", "NOM_SG"], True)],
    "NOM_PL": [(0.65, ["NN_PL"], False), (0.35, ["ADJP", "NOM_PL"], True)],
    "ADJP": [(0.75, ["JJ"], False), (0.25, ["RB_DEG", "JJ"], False)],
    "NP": [(0.55, ["NP_SG"], False), (0.45, ["NP_PL"], False)],
    "PP": [(1.0, ["IN", "NP"], True)],
    "RC_SG": [(0.6, ["WDT", "VP_SG"], True), (0.4, ["WDT", "NP", "VT_OBJ"], True)],
    "RC_PL": [(0.6, ["WDT", "VP_PL"], True), (0.4, ["WDT", "NP", "VT_OBJ"], True)],
    "VT_OBJ": [(1.0, ["VT_SG"], False)],  # placeholder, agreement fixed in generate()
    "VP_SG": [
        (0.15, ["VI_SG"], False),
        (0.35, ["VT_SG", "NP"], True),
        (0.15, ["VT_SG", "NP", "PP"], True),
        (0.08, ["VD_SG", "NP", "NP"], True),
        (0.1, ["VS_SG", "CP"], True),
        (0.1, ["MD", "VP_B"], True),
        (0.07, ["VP_SG", "ADVP"], True),
    ],
    "VP_PL": [
        (0.15, ["VI_PL"], False),
        (0.35, ["VT_PL", "NP"], True),
        (0.15, ["VT_PL", "NP", "PP"], True),
        (0.08, ["VD_PL", "NP", "NP"], True),
        (0.1, ["VS_PL", "CP"], True),
        (0.1, ["MD", "VP_B"], True),
        (0.07, ["VP_PL", "ADVP"], True),
    ],
    "VP_B": [(0.5, ["VI_B"], False), (0.5, ["VT_B", "NP"], True)],
    "CP": [(1.0, ["COMP", "S"], True)],
    "ADVP": [(0.8, ["RB"], False), (0.2, ["RB_DEG", "RB"], False)],
}


def _label(symbol: str) -> str:
    """Display label: agreement suffixes dropped (NP_SG -> NP)."""
    return symbol.split("_")[0]


def _expand(symbol: str, rng: random.Random, depth: int, fade: float):
    if symbol in LEXICON:
        return symbol, [rng.choice(LEXICON[symbol])]
    rules = GRAMMAR[symbol]
    weights = [w * (fade**depth if rec else 1.0) for w, _, rec in rules]
    _, rhs, _ = rng.choices(rules, weights=weights)[0]
    children = []
    for child in rhs:
        if child == "NP" and rhs[0] == "WDT":  # object relative: subject and verb agree
            sub = rng.choice(["NP_SG", "NP_PL"])
            children.append(_expand(sub, rng, depth + 1, fade))
            children.append(("VT", [rng.choice(LEXICON["VT_SG" if sub == "NP_SG" else "VT_PL"])]))
            break
        children.append(_expand(child, rng, depth + 1, fade))
    if len(children) == 1:  # unary: keep the lower node
        return children[0]
    return _label(symbol), children


def generate_sentences(
    n: int, seed: int = 0, min_words: int = 3, max_words: int = 30, fade: float = 0.75
) -> list[GoldSentence]:
    """``n`` sentences of the built-in probabilistic grammar with their gold trees.

    About 30 nonterminals and preterminals, recursion through PPs, relative clauses, sentential
    complements, subordinate and coordinated clauses; the probability of recursive rules fades
    as ``fade ** depth``. Sentences outside ``[min_words, max_words]`` are redrawn.

    Example: ``generate_sentences(1, seed=0)[0].bracketed`` -> ``(S (NP the dog) (VP sees (NP ...)))``.
    """
    rng = random.Random(seed)
    out: list[GoldSentence] = []
    while len(out) < n:
        node = _expand("ROOT", rng, 0, fade)
        words = _words(node)
        if min_words <= len(words) <= max_words:
            out.append(GoldSentence(words, _unlabeled(node), _bracketed(node)))
    return out


# Seeds of the generated corpus's splits: disjoint streams of sentences for a given corpus seed.
GRAMMAR_SPLIT_SEEDS = {"train": 0, "valid": 1, "test": 2}


def grammar_corpus(split: str, sentences: int, seed: int = 0) -> list[GoldSentence]:
    """One split of the generated corpus (``corpus=grammar`` of ``kexue onlstm``): ``sentences``
    sentences with gold trees, drawn with seed ``10 * seed + k`` (k = 0, 1, 2 for train, valid,
    test), so the splits never share a random stream.

    Example: ``grammar_corpus("test", 500)`` -> the 500 held-out sentences the docs score.
    """
    if split not in GRAMMAR_SPLIT_SEEDS:
        raise KexueError(f"grammar split must be one of {', '.join(GRAMMAR_SPLIT_SEEDS)}, got {split!r}")
    return generate_sentences(sentences, seed=seed * 10 + GRAMMAR_SPLIT_SEEDS[split])


def grammar_symbols() -> list[str]:
    """All nonterminals and preterminals of the generator."""
    return sorted(set(GRAMMAR) | set(LEXICON))
