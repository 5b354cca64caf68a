"""Text pairs: users' TSV / JSONL readers, split by group, the committed snapshots, tokenizers."""

import gzip
import unicodedata

import pytest

from kexue.data.pairs import (
    SPLITS,
    PairCorpus,
    TextPair,
    load_pairs,
    read_jsonl_pairs,
    read_pairs,
    read_tsv_pairs,
    split_by_group,
)
from kexue.data.pairs_build import (
    clean,
    deb822,
    join_lines,
    manpage_pair,
    split_description,
    troff_text,
)
from kexue.data.subword import (
    SPECIALS,
    load_tokenizer,
    save_tokenizer,
    train_bpe,
    train_chars,
)
from kexue.errors import KexueError


def _one_line(e: pytest.ExceptionInfo) -> str:
    message = str(e.value)
    assert "\n" not in message
    return message


# ---- readers -------------------------------------------------------------------------------


def test_tsv_reader_reads_pairs_groups_blank_lines_bom_and_crlf(tmp_path):
    path = tmp_path / "p.tsv"
    path.write_bytes("\ufeffa long text\ta title\r\n\n  second  text \t title two\tpkg\n".encode())
    assert read_tsv_pairs(path) == [
        TextPair("a long text", "a title", "a long text"),
        TextPair("second  text", "title two", "pkg"),
    ]
    gz = tmp_path / "p.tsv.gz"
    gz.write_bytes(gzip.compress(path.read_bytes()))
    assert read_pairs(gz) == read_tsv_pairs(path)


def test_jsonl_reader_reads_pairs_and_optional_group(tmp_path):
    path = tmp_path / "p.jsonl"
    path.write_text(
        '{"source": "长描述文本", "target": "标题"}\n\n{"source": "s", "target": "t", "group": 7}\n', encoding="utf-8"
    )
    assert read_pairs(path) == [TextPair("长描述文本", "标题", "长描述文本"), TextPair("s", "t", "7")]


BAD_TSV = [
    (b"good\tline\nno tab here\n", "line 2: expected source<TAB>target, found no tab"),
    (b"a\tb\tc\td\n", "line 1: expected source<TAB>target[<TAB>group], found 4"),
    (b"a\tb\n\xff\xfe\tb\n", "line 2 is not UTF-8"),
    (b"a\tb\nsource\t  \n", "line 2: empty target"),
    (b"\ttarget\n", "line 1: empty source"),
    (b"a\tb\t\n", "line 1: empty group"),
    (b"\n \n", "holds no pairs"),
]


@pytest.mark.parametrize("data,match", BAD_TSV, ids=[m for _, m in BAD_TSV])
def test_tsv_reader_names_file_and_line_of_a_bad_line(tmp_path, data, match):
    path = tmp_path / "bad.tsv"
    path.write_bytes(data)
    with pytest.raises(KexueError) as e:
        read_pairs(path)
    assert str(path) in _one_line(e) and match in str(e.value)


BAD_JSONL = [
    (b'{"source": "s", "target": "t"}\n{"source": "s"}\n', "line 2: missing 'target'"),
    (b'{"target": "t"}\n', "line 1: missing 'source'"),
    (b'{"source": "s", "target": "t", "id": 3}\n', "line 1: unknown key 'id'"),
    (b'{"source": "s", "target": ""}\n', "line 1: empty target"),
    (b'{"source": "s", "target": 5}\n', "line 1: target should be a string"),
    (b'{"source": "s", "target": "t", "group": [1]}\n', "line 1: group should be a string or an integer"),
    (b'{"source": "s", "target": "t"}\n{"source": "s", "target": \n', "line 2 is not valid JSON"),
    (b'["s", "t"]\n', "line 1 should hold a JSON object"),
    (b'{"source": "s", "target": "t"}\n{"source": "\xe9", "target": "t"}\n', "line 2 is not UTF-8"),
]


@pytest.mark.parametrize("data,match", BAD_JSONL, ids=[m for _, m in BAD_JSONL])
def test_jsonl_reader_names_file_and_line_of_a_bad_line(tmp_path, data, match):
    path = tmp_path / "bad.jsonl"
    path.write_bytes(data)
    with pytest.raises(KexueError) as e:
        read_pairs(path)
    assert str(path) in _one_line(e) and match in str(e.value)


def test_reader_refuses_missing_folder_unknown_suffix_and_corrupt_compression(tmp_path):
    cases = [
        (tmp_path / "absent.tsv", "not found"),
        (tmp_path, "is a folder"),
        (tmp_path / "p.csv", "name it .tsv"),
        (tmp_path / "p.jsonl.xz", "corrupt compressed"),
    ]
    (tmp_path / "p.csv").write_text("a\tb\n")
    (tmp_path / "p.jsonl.xz").write_bytes(b"not xz at all")
    for path, match in cases:
        with pytest.raises(KexueError, match=match) as e:
            read_jsonl_pairs(path) if path == tmp_path else read_pairs(path)
        _one_line(e)


# ---- split by group --------------------------------------------------------------------------


def _pairs(n_groups=40, seed=0):
    import random

    rng = random.Random(seed)
    return [
        TextPair(f"source {g} {i}", f"target {g} {i}", f"g{g}")
        for g in range(n_groups)
        for i in range(rng.randint(1, 6))
    ]


def test_split_by_group_keeps_groups_whole_and_is_deterministic():
    pairs = _pairs()
    corpus = split_by_group(pairs, (0.8, 0.1, 0.1), seed=3)
    groups = [corpus.groups(s) for s in SPLITS]
    assert all(groups) and not (groups[0] & groups[1] or groups[0] & groups[2] or groups[1] & groups[2])
    assert sum(corpus.counts().values()) == len(pairs)
    assert corpus == split_by_group(list(pairs), (0.8, 0.1, 0.1), seed=3)  # same input, same split
    assert corpus.groups("test") == split_by_group(pairs[::-1], (0.8, 0.1, 0.1), seed=3).groups("test")  # order-free
    assert corpus != split_by_group(pairs, (0.8, 0.1, 0.1), seed=4)
    assert 0.6 < corpus.counts()["train"] / len(pairs) < 0.95


def test_split_by_group_gives_every_split_a_group_or_refuses():
    three = [TextPair("a", "b", "x"), TextPair("c", "d", "y"), TextPair("e", "f", "z")]
    assert [len(split_by_group(three)[s]) for s in SPLITS] == [1, 1, 1]
    with pytest.raises(KexueError, match="cannot split 2 group"):
        split_by_group(three[:2])
    with pytest.raises(
        KexueError,
        match=r"^pairs\.tsv: cannot split 1 group\(s\) into 2 non-empty splits \(train / test\): .* 2 different",
    ):
        split_by_group(three[:1], (0.5, 0.0, 0.5), name="pairs.tsv")
    with pytest.raises(KexueError, match="summing to 1"):
        split_by_group(three, (0.5, 0.5, 0.5))
    only_train = split_by_group(three, (1.0, 0.0, 0.0))
    assert only_train.counts() == {"train": 3, "valid": 0, "test": 0}


# ---- build helpers (no network) ---------------------------------------------------------------


def test_deb822_description_parsing_and_cleaning():
    text = (
        "Package: foo\nDescription-md5: 0\nDescription-en: Frobnicate files quickly\n"
        " Foo frobnicates files,\n  much faster than bar.\n .\n It has no options at all.\n\n"
        "Package: foo-doc\nDescription-en: docs\n Too short.\n"
    )
    stanzas = list(deb822(text))
    assert [s["Package"] for s in stanzas] == ["foo", "foo-doc"]
    short, long = split_description(stanzas[0]["Description-en"])
    assert (short, long) == (
        "Frobnicate files quickly",
        "Foo frobnicates files, much faster than bar. It has no options at all.",
    )
    assert (
        join_lines(["古代战争实时策略游戏，是一个", "跨平台的游戏 (RTS)", "game"])
        == "古代战争实时策略游戏，是一个跨平台的游戏 (RTS) game"
    )
    stats = {}
    kept = clean(
        [
            TextPair(long, short, "foo"),
            TextPair(long, short, "foo"),
            TextPair("Too short to keep.", "docs", "foo"),
            TextPair("Frobnicate files quickly: the whole story here", "Frobnicate files quickly", "foo"),
            TextPair(long, "other title", "zzz"),
        ],
        stats,
    )
    assert kept == [TextPair(long, short, "foo")]
    assert stats == {
        "dropped: exact duplicate": 1,
        "dropped: source too short": 1,
        "dropped: source starts with the target": 1,
        "dropped: source text also in another group": 1,
    }


def test_manpage_pair_reads_name_and_description_through_troff():
    page = (
        ".TH LS 1\n.SH 名称\nls \\- 列出目录内容\n.SH 描述\n.PP\n列出指定\\fB文件\\fP的信息，默认为\n"
        "当前目录。\n.B \\-a\n选项。\n.TP\n\\fB\\-a\\fP\n不要忽略\n"
    )
    pair = manpage_pair(page, "ls", {})
    assert pair == TextPair("列出指定文件的信息，默认为当前目录。 -a 选项。", "列出目录内容", "man:ls")
    assert troff_text(r"\(lqa\(rq \e 1003\.2 \h'-04'x\m[blue]y\m[]") == "“a” \\ 1003.2 xy"
    assert manpage_pair(".SH NAME\nfoo \\- bar\n.SH DESCRIPTION\nEnglish only text here.\n", "foo", {}) is None


# ---- committed snapshots ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def english():
    return load_pairs("debian-en")


@pytest.fixture(scope="module")
def chinese():
    return load_pairs("debian-zh")


@pytest.mark.parametrize("name", ["debian-en", "debian-zh"])
def test_snapshots_match_their_provenance_and_keep_groups_apart(name, english, chinese):
    corpus = english if name == "debian-en" else chinese
    assert isinstance(corpus, PairCorpus) and corpus.name == name
    assert corpus.counts() == corpus.meta["counts"] and corpus.meta["total"] == sum(corpus.counts().values())
    assert {s: len(corpus.groups(s)) for s in SPLITS} == corpus.meta["groups"]
    train, valid, test = (corpus.groups(s) for s in SPLITS)
    assert not (train & valid or train & test or valid & test)
    assert min(corpus.counts().values()) > 0
    assert corpus.meta["licence"] and corpus.meta["command"].startswith("python -m kexue.data.pairs_build")
    assert all(p.source and p.target and p.source.strip() == p.source for p in corpus.test)


def test_english_snapshot_is_the_size_the_issue_asks_for(english):
    assert 50_000 < sum(english.counts().values()) < 70_000
    pairs = [p for s in SPLITS for p in english[s]]
    game = [p for p in pairs if p.group == "0ad" and p.target == "Real-time strategy game of ancient warfare"]
    assert len(game) == 1 and game[0].source.startswith('0 A.D. (pronounced "zero ey-dee") is a free')
    assert len({p.group for p in pairs}) > 30_000  # source packages


def test_chinese_snapshot_holds_chinese_text(chinese):
    pairs = [p for s in SPLITS for p in chinese[s]]
    assert len(pairs) > 1000
    han = sum(any("\u4e00" <= ch <= "\u9fff" for ch in p.target) for p in pairs)
    assert han / len(pairs) > 0.95
    assert any(p.group.startswith("man:") for p in pairs) and any(not p.group.startswith("man:") for p in pairs)


def test_unknown_snapshot_name_is_one_line():
    with pytest.raises(KexueError, match="debian-en, debian-zh") as e:
        load_pairs("wiki")
    _one_line(e)


# ---- tokenizers ------------------------------------------------------------------------------


def test_chinese_corpus_round_trips_through_its_character_tokenizer(chinese, tmp_path):
    texts = [t for p in chinese.train for t in (p.source, p.target)]
    tokenizer = train_chars(texts)
    assert [tokenizer.token_to_id(t) for t in SPECIALS] == list(range(len(SPECIALS)))
    save_tokenizer(tokenizer, tmp_path)
    tokenizer = load_tokenizer(tmp_path)
    seen = "".join(sorted(set("".join(texts))))
    assert tokenizer.decode(tokenizer.encode(seen).ids) == seen
    assert len(tokenizer.encode(seen).ids) == len(seen)  # one id per character
    for text in texts[:200]:
        assert tokenizer.decode(tokenizer.encode(text).ids) == text
    unseen = tokenizer.encode("\U0001f600")
    assert unseen.ids == [tokenizer.token_to_id("<unk>")]


def test_english_bpe_trains_and_round_trips_normalised_text(english, tmp_path):
    texts = [t for p in english.train[:300] for t in (p.source, p.target)]
    tokenizer = train_bpe(texts, vocab_size=600)
    assert [tokenizer.token_to_id(t) for t in SPECIALS] == list(range(len(SPECIALS)))
    tokenizer = load_tokenizer(save_tokenizer(tokenizer, tmp_path))
    for text in texts + [p.source for p in english.test[:50]] + ["ﬁle  ｆｕｌｌ width, two  spaces ✓"]:
        ids = tokenizer.encode(text).ids
        assert tokenizer.token_to_id("<unk>") not in ids
        assert tokenizer.decode(ids) == unicodedata.normalize("NFKC", text)


def test_tokenizer_file_errors_are_one_line(tmp_path):
    import tokenizers

    (tmp_path / "tokenizer.json").write_text("{not json")
    for path, match in [(tmp_path / "absent", "not found"), (tmp_path, "malformed")]:
        with pytest.raises(KexueError, match=match) as e:
            load_tokenizer(path)
        assert "tokenizer file" in _one_line(e)
    other = tokenizers.Tokenizer(tokenizers.models.WordLevel({"a": 0, "<unk>": 1}, unk_token="<unk>"))
    (tmp_path / "tokenizer.json").write_text(other.to_str())
    with pytest.raises(KexueError, match="special token <pad> should have id 0"):
        load_tokenizer(tmp_path)
    with pytest.raises(KexueError, match="vocab_size must exceed"):
        train_bpe(["a"], vocab_size=100)
