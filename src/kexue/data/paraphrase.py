"""Paraphrase pairs for SimBERT from the ``debian-en`` snapshot: two descriptions of one package.

For every pair of :func:`kexue.data.pairs.load_pairs` ``("debian-en")`` (long description ->
short description, grouped by source package) the SimBERT pair is ``(short description, first
sentence of the long description)``: two texts about the same software, each written by a person.
The split is the snapshot's (by source package), so no package of the test split is in any
training pair; evaluation pairs are fixed by the data, not chosen by an encoder.

Example::

    first_sentence("Foo is a tool, e.g. for bar. It also baz.")   # 'Foo is a tool, e.g. for bar.'
    paraphrase_pairs("test")[0]   # TextPair(source='visualisation and ...', target='This program ...', ...)
"""

from __future__ import annotations

import re

from kexue.data.pairs import TextPair, load_pairs

# Words whose trailing period does not end a sentence ("e.g.", "etc.", "Mr.", "vs.", "approx.").
ABBREVIATIONS = {
    "e.g", "i.e", "etc", "vs", "cf", "al", "mr", "mrs", "ms", "dr", "prof", "inc", "ltd", "co", "approx",
    "no", "fig", "ver", "esp", "incl", "resp", "jr", "sr", "st", "ca", "viz", "u.s", "a.k.a",
}  # fmt: skip
# A candidate end: . ! or ? (possibly closing quotes/brackets) followed by whitespace and then a
# capital, digit, quote or bracket that may start the next sentence.
_END = re.compile(r"""[.!?]['")\]]*\s+(?=[A-Z0-9"'(\[])""")


def first_sentence(text: str) -> str:
    """The first sentence of ``text`` (whitespace collapsed); the whole text when it has one sentence.

    A period ends a sentence unless it closes a known abbreviation (e.g., etc., Dr.), a single
    letter (an initial, "J. Smith") or sits inside a number or a name ("1.2", "node.js",
    "www.debian.org": no space follows it).
    """
    text = " ".join(text.split())
    for m in _END.finditer(text):
        before = text[: m.start()].rsplit(" ", 1)[-1].lower().lstrip("(\"'")
        if text[m.start()] == "." and (before in ABBREVIATIONS or re.fullmatch(r"[a-z]", before)):
            continue
        return text[: m.end()].rstrip()
    return text


def paraphrase_pairs(split: str, corpus: str = "debian-en") -> list[TextPair]:
    """``(short description, first sentence of the long one)`` for each pair of ``split``, de-duplicated.

    Pairs whose two texts are equal (ignoring case) are dropped, and so is a repeat of a pair
    already taken (binary packages of one source often share their descriptions).
    """
    seen: set[tuple[str, str]] = set()
    out = []
    for p in load_pairs(corpus)[split]:
        short, first = " ".join(p.target.split()), first_sentence(p.source)
        key = (short.lower(), first.lower())
        if not short or not first or key[0] == key[1] or key in seen:
            continue
        seen.add(key)
        out.append(TextPair(short, first, p.group))
    return out
