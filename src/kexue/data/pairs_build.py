"""Build the committed text-pair corpora from Debian's archive (run once; needs network and apt).

``debian-en``: every package description of ``main`` in apt's ``Translation-en`` index becomes
one pair, long description -> short description. ``debian-zh``: the same from
``Translation-zh_CN`` (the DDTP's Chinese translations), plus the NAME / 描述 (DESCRIPTION)
sections of the Chinese man pages of the ``manpages-zh`` package (描述 -> the NAME line's
one-line summary).

How (:func:`build_debian_corpora`):

1. ``apt-get update`` with a private configuration (``APT_CONFIG``: its own lists, cache,
   sources and an empty ``apt.conf.d``), so the system's lists, caches and hooks are never
   touched and root is not needed. It fetches the suite's ``Translation-en`` and
   ``Translation-zh_CN`` and the ``Sources`` index (``deb-src``), whose ``Binary:`` fields map
   every binary package, of every architecture, to its source package. apt keeps the indexes
   lz4-compressed; the ``lz4`` command (Debian package ``lz4``) decompresses them.
   ``apt-get download manpages-zh`` then fetches the man pages, and ``dpkg-deb -x`` unpacks them.
2. Parse the deb822 stanzas; the first line of ``Description-<lang>`` is the short description
   (target), the rest, with `` .`` paragraph marks, the long one (source).
3. Clean: collapse whitespace (wrapped Chinese lines are joined without a space), drop pairs
   whose source has fewer than :data:`MIN_SOURCE_UNITS` words (a CJK character counts as one),
   pairs whose source starts with the target, exact duplicates, and the pairs of a source text
   that also occurs in another group (it stays in the first group by name), so that no source
   text is in two splits.
4. Group by source package (man pages: by page name, ``man:<name>``), split 90 / 5 / 5 by group
   with :func:`kexue.data.pairs.split_by_group` (seed 0), and write ``<name>.jsonl.xz`` and its
   provenance ``<name>.json`` (release, index hashes, command, counts, licence).

Command line (the snapshots in ``kexue/data/corpora`` were made by the first line)::

    python -m kexue.data.pairs_build --out src/kexue/data/corpora
    python -m kexue.data.pairs_build --out /tmp/corpora --suite trixie --work /tmp/apt-work
"""

from __future__ import annotations

import argparse
import datetime as dt
import getpass
import gzip
import hashlib
import json
import lzma
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

from kexue.data.pairs import SPLITS, PairCorpus, TextPair, split_by_group
from kexue.errors import KexueError
from kexue.io import atomic_path, check_output_dir, write_json

DEFAULT_MIRROR = "http://deb.debian.org/debian"
DEFAULT_SUITE = "bookworm"
KEYRING = "/usr/share/keyrings/debian-archive-keyring.gpg"
MIN_SOURCE_UNITS = 6
FRACTIONS = (0.9, 0.05, 0.05)

LICENCE = (
    "Each pair is taken from the Description field of a package in Debian's main archive area "
    "(Translation-en: the maintainers' English text; Translation-zh_CN: its Chinese translation made "
    "by the Debian Description Translation Project, DDTP). No licence covers the descriptions as a "
    "set: a description is part of its source package's debian/control, covered by the licence that "
    "package's debian/copyright gives to its debian/ packaging (usually GPL-2+ or the upstream "
    "licence), and a translation is a derived work of it. Everything in main is DFSG-free, so "
    "copying, modifying and redistributing is allowed under those per-package licences; the `group` "
    "of each pair is the source package, whose copyright file (/usr/share/doc/<binary>/copyright, or "
    "https://sources.debian.org/src/<source>/) gives the exact terms. The DDTP translates main only, "
    "because licences outside main might forbid translation "
    "(https://www.debian.org/international/l10n/ddtp). On debian-legal the package metadata, "
    "descriptions included, is read as covered by the debian/ entry of the package's copyright file "
    "(https://lists.debian.org/debian-legal/2018/09/msg00012.html)."
)
MANPAGES_LICENCE = (
    "The man-page pairs come from the Debian package manpages-zh, whose debian/copyright gives "
    "GFDL-1.2+ for its pages (a few files GPL-2.0 / GPL-2.0+, named there)."
)


# ---- apt, with a private configuration ------------------------------------------------------


def _run(cmd: Sequence[str], env: dict | None = None, cwd: Path | None = None) -> str:
    try:
        done = subprocess.run(list(cmd), check=False, env=env, cwd=cwd, capture_output=True, text=True)
    except FileNotFoundError:
        raise KexueError(f"{cmd[0]} is not installed (this build needs apt-get, dpkg-deb and lz4)") from None
    if done.returncode != 0:
        tail = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["(no output)"]
        raise KexueError(f"{' '.join(cmd[:2])} failed (exit {done.returncode}): {tail[0]}")
    return done.stdout


def private_apt(work: Path, mirror: str, suite: str, component: str = "main", arch: str = "amd64") -> dict:
    """Write a private apt configuration under ``work``; returns the environment that selects it.

    Every path apt writes (lists, cache, lock) is under ``work``. The file is given as
    ``APT_CONFIG`` rather than as ``-o`` options because apt reads ``APT_CONFIG`` *before*
    ``/etc/apt/apt.conf.d``, so ``Dir::Etc::Parts`` (an empty folder) keeps the system's settings
    out: Docker images set ``Acquire::Languages "none"`` there, and hooks such as AppStream's
    ``Post-Invoke-Success`` would otherwise run.
    """
    work = work.absolute()
    for sub in ("lists/partial", "cache/archives/partial", "etc/apt.conf.d", "etc/sources.list.d", "etc/preferences.d"):
        (work / sub).mkdir(parents=True, exist_ok=True)
    signed = [f"signed-by={KEYRING}"] if Path(KEYRING).exists() else []
    (work / "etc/sources.list").write_text(
        f"deb [{' '.join([f'arch={arch}', *signed])}] {mirror} {suite} {component}\n"
        f"deb-src {f'[{signed[0]}] ' if signed else ''}{mirror} {suite} {component}\n"
    )
    user = getpass.getuser()
    (work / "apt.conf").write_text(
        "\n".join(
            [
                f'Dir::State::Lists "{work}/lists";',
                f'Dir::Cache "{work}/cache";',
                f'Dir::Etc::SourceList "{work}/etc/sources.list";',
                f'Dir::Etc::SourceParts "{work}/etc/sources.list.d";',
                f'Dir::Etc::Parts "{work}/etc/apt.conf.d";',
                f'Dir::Etc::main "{work}/etc/apt.conf";',  # absent: /etc/apt/apt.conf is not read either
                f'Dir::Etc::PreferencesParts "{work}/etc/preferences.d";',
                'Acquire::Languages { "en"; "zh_CN"; };',
                'Acquire::GzipIndexes "true";',  # keep the indexes compressed (lz4) as apt stores them
                f'APT::Sandbox::User "{user}";',  # no _apt user needed to read a private folder
                "",
            ]
        )
    )
    return {**os.environ, "APT_CONFIG": str(work / "apt.conf"), "LC_ALL": "C.UTF-8"}


def fetch(work: Path, mirror: str = DEFAULT_MIRROR, suite: str = DEFAULT_SUITE, manpages: bool = True) -> dict:
    """``apt-get update`` (and ``apt-get download manpages-zh``) into ``work``; returns the env used."""
    env = private_apt(work, mirror, suite)
    _run(["apt-get", "update", "-q"], env=env, cwd=work)
    if manpages:
        for old in work.glob("manpages-zh_*.deb"):
            old.unlink()
        _run(["apt-get", "download", "-q", "manpages-zh"], env=env, cwd=work)
    return env


def index_file(work: Path, name: str) -> Path:
    """The file apt stored for an index, e.g. ``name="main_i18n_Translation-en"``."""
    found = sorted(p for p in (work / "lists").glob(f"*_{name}*") if not p.name.endswith((".diff", ".gpg")))
    if not found:
        raise KexueError(f"no {name} index under {work / 'lists'} (did apt-get update fetch it?)")
    return found[0]


def read_index(path: Path) -> str:
    """The text of an index file as apt stored it: plain, .lz4 (via the lz4 command), .xz, .gz."""
    if path.suffix == ".lz4":
        try:
            data = subprocess.run(["lz4", "-dc", str(path)], capture_output=True, check=True).stdout
        except FileNotFoundError:
            raise KexueError("the lz4 command is missing: apt-get install lz4") from None
    elif path.suffix == ".xz":
        data = lzma.decompress(path.read_bytes())
    elif path.suffix == ".gz":
        data = gzip.decompress(path.read_bytes())
    else:
        data = path.read_bytes()
    return data.decode("utf-8")


def deb822(text: str) -> Iterator[dict[str, str]]:
    """Stanzas of a deb822 file (Packages, Sources, Translation-*) as field -> value.

    Continuation lines keep their leading space, so a multi-line value reads as in the file.
    """
    stanza: dict[str, str] = {}
    key = None
    for line in text.split("\n"):
        if not line.strip():
            if stanza:
                yield stanza
            stanza, key = {}, None
        elif line[0] in " \t":
            if key is not None:
                stanza[key] += "\n" + line
        else:
            key, _, value = line.partition(":")
            stanza[key] = value.strip()
    if stanza:
        yield stanza


def release_facts(work: Path, files: Iterable[str]) -> dict:
    """Origin, suite, codename, version and date of the InRelease file, and the SHA256 it lists."""
    text = index_file(work, "InRelease").read_text(encoding="utf-8")
    body = text.split("\n\n", 1)[1] if text.startswith("-----BEGIN PGP") else text
    fields = next(deb822(body.split("-----BEGIN PGP SIGNATURE")[0]))
    sha = {}
    for line in fields.get("SHA256", "").splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[2] in files:
            sha[parts[2]] = parts[0]
    keep = ("Origin", "Suite", "Codename", "Version", "Date")
    return {**{k.lower(): fields[k] for k in keep if k in fields}, "sha256": sha}


def source_of_binaries(sources_text: str) -> dict[str, str]:
    """binary package -> source package, from a Sources index (the first source, by name, wins)."""
    mapping: dict[str, str] = {}
    for stanza in deb822(sources_text):
        for binary in re.split(r"[,\s]+", stanza.get("Binary", "")):
            if binary and (binary not in mapping or stanza["Package"] < mapping[binary]):
                mapping[binary] = stanza["Package"]
    return mapping


# ---- text cleaning -------------------------------------------------------------------------

_CJK = re.compile(r"[\u2e80-\u9fff\uf900-\ufaff\uff00-\uffef\u3000-\u303f]")


def join_lines(lines: Iterable[str]) -> str:
    """Join wrapped lines: a space between them, none where both sides are CJK; whitespace collapsed."""
    out = ""
    for line in lines:
        line = " ".join(line.split())
        if not line:
            continue
        if out and not (_CJK.match(out[-1]) and _CJK.match(line[0])):
            out += " "
        out += line
    return out


def text_units(text: str) -> int:
    """Length in words, a CJK character counting as one word."""
    return len(_CJK.findall(text)) + len(_CJK.sub(" ", text).split())


def split_description(value: str) -> tuple[str, str]:
    """(short, long) of a deb822 Description value: first line, then the rest joined (`` .`` = paragraph)."""
    first, *rest = value.split("\n")
    paragraphs, current = [], []
    for line in rest:
        body = line.removeprefix(" ")
        if body.strip() == ".":
            paragraphs.append(join_lines(current))
            current = []
        else:
            current.append(body)
    paragraphs.append(join_lines(current))
    return join_lines([first]), join_lines(p for p in paragraphs if p)


def _count(stats: dict, key: str) -> None:
    stats[key] = stats.get(key, 0) + 1


def _squash(text: str) -> str:
    return re.sub(r"[\W_]+", " ", text.lower()).strip()


def clean(pairs: Iterable[TextPair], stats: dict) -> list[TextPair]:
    """Drop short sources, sources that start with their target, duplicates, sources shared by groups.

    ``stats`` gets a count for each reason. The result is ordered by (group, input order).
    """
    pairs = sorted(pairs, key=lambda p: p.group)  # stable: input order within a group
    kept, seen, group_of_source = [], set(), {}
    for p in pairs:
        if text_units(p.source) < MIN_SOURCE_UNITS or not p.target:
            reason = "source too short"
        elif _squash(p.source).startswith(_squash(p.target)):
            reason = "source starts with the target"
        elif (p.source, p.target) in seen:
            reason = "exact duplicate"
        elif group_of_source.setdefault(p.source, p.group) != p.group:
            reason = "source text also in another group"
        else:
            seen.add((p.source, p.target))
            kept.append(p)
            continue
        _count(stats, f"dropped: {reason}")
    return kept


def translation_pairs(text: str, lang: str, source_of: dict[str, str], stats: dict) -> list[TextPair]:
    """Pairs (long -> short description, grouped by source package) of a Translation-<lang> index."""
    pairs = []
    for stanza in deb822(text):
        value = stanza.get(f"Description-{lang}")
        if value is None:
            continue
        _count(stats, "stanzas read")
        short, long = split_description(value)
        binary = stanza["Package"]
        if binary not in source_of:
            key = "binary not in Sources (grouped by its own name)"
            _count(stats, key)
        pairs.append(TextPair(long, short, source_of.get(binary, binary)))
    return pairs


# ---- manpages-zh ----------------------------------------------------------------------------

_ESCAPES = [
    (re.compile(r'\\".*$'), ""),  # comment
    (re.compile(r"\\\\"), "\0"),  # an escaped backslash, restored at the end
    (re.compile(r"(\\|\0)f(\[[^\]]*\]|\(..|.)"), ""),  # font changes (also copy-mode \\fB)
    (re.compile(r"\\s[-+]?\d"), ""),  # size changes
    (re.compile(r"\\[hvwlLoxSHbkzDR]'[^']*'|\\\$\d"), ""),  # motions, lines, macro arguments
    (re.compile(r"\\[*mn](\[[^\]]*\]|\(..|.)"), ""),  # strings, colours, registers
    (re.compile(r"\\\((em|en)"), "—"),
    (re.compile(r"\\\(lq"), "“"),
    (re.compile(r"\\\(rq"), "”"),
    (re.compile(r"\\\(aq"), "'"),
    (re.compile(r"\\\(\*\*"), "*"),
    (re.compile(r"\\\(bu"), "•"),
    (re.compile(r"\\\(..|\\\[[^\]]*\]"), ""),  # other special characters
    (re.compile(r"\\[-.]"), lambda m: m.group()[1]),
    (re.compile(r"\\e"), "\0"),
    (re.compile(r"\\[ 0~]"), " "),
    (re.compile(r"\\[&c|^,/%:)!ud]"), ""),
    (re.compile("\0"), "\\\\"),
]
_FONT_MACROS = {"B", "I", "BR", "RB", "IR", "RI", "BI", "IB", "SM", "SB", "R"}
_BREAKS = {
    "PP",
    "P",
    "LP",
    "HP",
    "sp",
    "br",
    "RS",
    "RE",
    "SS",
    "TP",
    "IP",
    "TQ",
    "nf",
    "fi",
    "ft",
    "in",
    "ti",
    "Sp",
    "Ip",
    "EX",
    "EE",
}
_NAME = re.compile(r"NAME|名称|名字|命令名")
_DESCRIPTION = re.compile(r"DESCRIPTION|描述|说明")


def troff_text(line: str) -> str:
    """A troff text line with its escapes resolved (fonts, sizes and unknown specials dropped)."""
    for pattern, repl in _ESCAPES:
        line = pattern.sub(repl, line)
    return line


def _macro_args(rest: str) -> list[str]:
    return [a.strip('"') for a in re.findall(r'"[^"]*"|\S+', rest)]


def manpage_sections(text: str) -> dict[str, list[list[str]]]:
    """Section title -> paragraphs (lists of text lines) of a man page's troff source.

    Only the text macros are read (``.B``/``.I``/``.BR``...: their arguments are text); breaks
    (``.PP``, ``.TP``, ``.IP``, ``.SS`` ...) start a paragraph, marked ``[".TP"]`` for lists.
    """
    sections: dict[str, list[list[str]]] = {}
    current: list[list[str]] | None = None
    for raw in text.split("\n"):
        line = raw.rstrip()
        if line.startswith((".", "'")):
            name, _, rest = line[1:].strip().partition(" ")
            if name in ("SH", "sh"):
                title = troff_text(" ".join(_macro_args(rest)))
                current = sections.setdefault(title.strip() or f"#{len(sections)}", [[]])
            elif current is None:
                continue
            elif name in _FONT_MACROS:
                args = _macro_args(troff_text(rest))
                current[-1].append(("" if len(name) == 2 and name not in ("SM", "SB") else " ").join(args))
            elif name in _BREAKS:
                current.append([f".{name}"] if name in ("TP", "IP", "SS", "nf", "TQ", "HP") else [])
            continue
        if current is not None:
            current[-1].append(troff_text(line))
    return sections


def manpage_pair(text: str, page: str, stats: dict) -> TextPair | None:
    """(描述 opening paragraphs -> NAME summary, group ``man:<page>``) of one page, or None.

    ``page`` is the page's name (file name without section), e.g. ``create_table`` for
    ``man7/create_table.7.gz``. A page whose opening is less than half Chinese (by
    :func:`text_units`) is left out: some pages are only partly translated.
    """
    if re.search(r"^\.so\s", text, flags=re.MULTILINE) and len(text) < 400:
        _count(stats, "skipped: link to another page")
        return None
    sections = manpage_sections(text)
    name = next((v for k, v in sections.items() if _NAME.search(k)), None)
    description = next((v for k, v in sections.items() if _DESCRIPTION.search(k)), None)
    if name is None or description is None:
        _count(stats, "skipped: no NAME or DESCRIPTION section")
        return None
    name_line = join_lines(line for para in name for line in para if not line.startswith("."))
    parts = re.split(r"\s+(?:-+|—|–)\s*", name_line, maxsplit=1)
    if len(parts) != 2 or not parts[1].strip():
        _count(stats, "skipped: NAME line without a summary")
        return None
    summary = parts[1].strip()
    opening = []
    for para in description:
        if para and para[0].startswith("."):
            break  # a list of options, a subsection or verbatim text: the prose opening is over
        text_ = join_lines(para)
        if text_:
            opening.append(text_)
        if sum(len(t) for t in opening) >= 120:
            break
    source = join_lines(opening)
    if not source or len(_CJK.findall(source)) < text_units(source) / 2 or not _CJK.search(summary):
        _count(stats, "skipped: less than half Chinese")
        return None
    return TextPair(source, summary, f"man:{page}")


def manpages_zh_pairs(root: Path, stats: dict) -> list[TextPair]:
    """Pairs of the zh_CN pages under an unpacked manpages-zh (``<root>/usr/share/man/zh_CN``)."""
    pairs = []
    for path in sorted((root / "usr/share/man/zh_CN").glob("man*/*.gz")):
        if path.is_symlink():
            _count(stats, "skipped: link to another page")
            continue
        _count(stats, "pages read")
        page = path.name.removesuffix(".gz").rsplit(".", 1)[0]
        pair = manpage_pair(gzip.decompress(path.read_bytes()).decode("utf-8", errors="replace"), page, stats)
        if pair is not None:
            pairs.append(pair)
    return pairs


# ---- snapshots -------------------------------------------------------------------------------


def write_snapshot(corpus: PairCorpus, path: Path) -> str:
    """Write ``corpus`` as xz-compressed JSONL (split, group, source, target a line); returns its SHA256."""
    lines = []
    for split in SPLITS:
        for p in corpus[split]:
            lines.append(
                json.dumps(
                    {"split": split, "group": p.group, "source": p.source, "target": p.target}, ensure_ascii=False
                )
            )
    data = lzma.compress(("\n".join(lines) + "\n").encode("utf-8"), preset=9 | lzma.PRESET_EXTREME)
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return hashlib.sha256(data).hexdigest()


def _describe(corpus: PairCorpus, stats: dict, extra: dict) -> dict:
    return {
        "name": corpus.name,
        "counts": corpus.counts(),
        "total": sum(corpus.counts().values()),
        "groups": {s: len(corpus.groups(s)) for s in SPLITS},
        "cleaning": stats,
        **extra,
    }


def build_debian_corpora(
    out: str | Path,
    mirror: str = DEFAULT_MIRROR,
    suite: str = DEFAULT_SUITE,
    work: str | Path | None = None,
    fetch_indexes: bool = True,
    manpages: bool = True,
    seed: int = 0,
    fractions: Sequence[float] = FRACTIONS,
    command: str | None = None,
) -> dict:
    """Build ``debian-en`` and ``debian-zh`` into ``out``; returns their provenance (name -> dict).

    ``work`` keeps the private apt folder (lists, .deb) for a later ``fetch_indexes=False`` run
    that reads it again offline; by default a temporary folder is used and removed.
    """
    out = Path(out)
    check_output_dir(out)
    temporary = work is None
    work = Path(tempfile.mkdtemp(prefix="kexue-apt-")) if temporary else Path(work)
    try:
        if fetch_indexes:
            fetch(work, mirror, suite, manpages)
        files = {
            "en": index_file(work, "main_i18n_Translation-en"),
            "zh_CN": index_file(work, "main_i18n_Translation-zh%5fCN"),
            "sources": index_file(work, "main_source_Sources"),
        }
        texts = {k: read_index(p) for k, p in files.items()}
        names = {
            "en": "main/i18n/Translation-en",
            "zh_CN": "main/i18n/Translation-zh_CN",
            "sources": "main/source/Sources",
        }
        release = release_facts(work, names.values())
        for key, text in texts.items():  # what we parsed is what the signed Release lists
            digest = hashlib.sha256(text.encode("utf-8")).hexdigest()
            if release["sha256"].get(names[key]) not in (None, digest):
                raise KexueError(f"{files[key]} does not match the SHA256 in InRelease")
        source_of = source_of_binaries(texts["sources"])
        common = {
            "built": dt.date.today().isoformat(),
            "mirror": mirror,
            "release": release,
            "command": command or f"build_debian_corpora(out={str(out)!r}, suite={suite!r})",
            "split": {"by": "group", "fractions": list(fractions), "seed": seed},
            "min_source_words": MIN_SOURCE_UNITS,
        }
        result = {}

        stats_en: dict = {}
        pairs = clean(translation_pairs(texts["en"], "en", source_of, stats_en), stats_en)
        corpus = split_by_group(pairs, fractions, seed, name="debian-en")
        sha = write_snapshot(corpus, out / "debian-en.jsonl.xz")
        result["debian-en"] = _describe(
            corpus,
            stats_en,
            {
                **common,
                "language": "en",
                "snapshot_sha256": sha,
                "group": "Debian source package",
                "source": f"{names['en']} ({suite}): Description-en, long description -> short description",
                "licence": LICENCE,
            },
        )

        stats_zh: dict = {}
        pairs = translation_pairs(texts["zh_CN"], "zh_CN", source_of, stats_zh)
        sources = [f"{names['zh_CN']} ({suite}): Description-zh_CN, long description -> short description"]
        licence = LICENCE
        if manpages:
            deb = sorted(work.glob("manpages-zh_*.deb"))
            if not deb:
                raise KexueError(f"no manpages-zh_*.deb in {work} (fetch it, or build with manpages=False)")
            unpacked = work / "manpages-zh"
            shutil.rmtree(unpacked, ignore_errors=True)
            _run(["dpkg-deb", "-x", str(deb[-1]), str(unpacked)])
            stats_man: dict = {}
            pairs += manpages_zh_pairs(unpacked, stats_man)
            stats_zh["manpages-zh"] = stats_man
            sources.append(
                f"{deb[-1].name} (sha256 {hashlib.sha256(deb[-1].read_bytes()).hexdigest()}): "
                "usr/share/man/zh_CN pages, 描述 (DESCRIPTION) opening -> NAME summary, group man:<page>"
            )
            licence = LICENCE + " " + MANPAGES_LICENCE
        pairs = clean(pairs, stats_zh)
        corpus = split_by_group(pairs, fractions, seed, name="debian-zh")
        sha = write_snapshot(corpus, out / "debian-zh.jsonl.xz")
        man = sum(p.group.startswith("man:") for s in SPLITS for p in corpus[s])
        result["debian-zh"] = _describe(
            corpus,
            stats_zh,
            {
                **common,
                "pairs_by_origin": {"Translation-zh_CN": sum(corpus.counts().values()) - man, "manpages-zh": man},
                "language": "zh",
                "snapshot_sha256": sha,
                "group": "Debian source package; man:<page> for man pages",
                "source": sources,
                "licence": licence,
            },
        )

        for name, meta in result.items():
            write_json(out / f"{name}.json", meta)
        return result
    finally:
        if temporary:
            shutil.rmtree(work, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(prog="python -m kexue.data.pairs_build", description=__doc__.split("\n")[0])
    parser.add_argument("--out", required=True, help="folder for <name>.jsonl.xz and <name>.json")
    parser.add_argument("--mirror", default=DEFAULT_MIRROR)
    parser.add_argument("--suite", default=DEFAULT_SUITE)
    parser.add_argument("--work", default=None, help="keep the private apt folder here (default: a temporary one)")
    parser.add_argument("--offline", action="store_true", help="read the indexes already in --work; run no apt")
    parser.add_argument("--no-manpages", action="store_true", help="leave the manpages-zh pairs out")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.offline and args.work is None:
        parser.error("--offline needs --work (the folder of an earlier build)")
    command = shlex.join(["python", "-m", "kexue.data.pairs_build", *argv])
    try:
        result = build_debian_corpora(
            args.out,
            args.mirror,
            args.suite,
            args.work,
            not args.offline,
            not args.no_manpages,
            args.seed,
            command=command,
        )
    except KexueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    for name, meta in result.items():
        print(f"{name}: {meta['counts']} ({meta['total']} pairs) -> {Path(args.out) / (name + '.jsonl.xz')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
