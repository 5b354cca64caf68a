import pytest
import torch

from kexue.data.text import LMBatches, Vocab, load_ptb, read_lines, token_stream
from kexue.errors import KexueError


def test_vocab_orders_by_frequency_and_roundtrips(tmp_path):
    v = Vocab.build([["b", "a", "b"], ["c", "b", "a"]])
    assert v.itos[:4] == ["<pad>", "<unk>", "<bos>", "<eos>"] and v.itos[4:] == ["b", "a", "c"]
    assert v.encode(["a", "zzz"]) == [5, v.unk]
    assert v.decode([v.bos, 4, 5, v.eos]) == ["b", "a"]
    v.save(tmp_path / "v.json")
    assert Vocab.load(tmp_path / "v.json").itos == v.itos
    (tmp_path / "bad.json").write_text("{}")
    with pytest.raises(KexueError, match="malformed"):
        Vocab.load(tmp_path / "bad.json")


def test_stream_and_lm_batches_are_shifted_windows():
    v = Vocab.build([["a", "b", "c"]])
    stream = token_stream([["a", "b", "c"]] * 10, v)  # 40 ids, each sentence ends with <eos>
    assert stream[:4].tolist() == [4, 5, 6, v.eos]
    b = LMBatches(stream, batch_size=2, bptt=3)
    x, y = b.batch(1)
    rows = stream.view(2, 20)
    assert torch.equal(x, rows[:, 3:6]) and torch.equal(y, rows[:, 4:7])
    assert b.per_epoch == 6 and b.is_epoch_start(6) and torch.equal(b.batch(6)[0], b.batch(0)[0])
    with pytest.raises(KexueError, match="too short"):
        LMBatches(stream[:5], batch_size=2, bptt=3)


def test_ptb_splits_and_plain_text(tmp_path):
    valid = load_ptb("valid")
    assert len(valid) == 3370 and sum(map(len, valid)) == 70390
    with pytest.raises(KexueError, match="split"):
        load_ptb("dev")
    (tmp_path / "t.txt").write_text("hello world\n\n a b c \n")
    assert read_lines(tmp_path / "t.txt") == [["hello", "world"], ["a", "b", "c"]]
    with pytest.raises(KexueError, match="not found"):
        read_lines(tmp_path / "nope.txt")


def test_corpus_folder_errors_name_the_file(tmp_path):
    from kexue.data.text import load_corpus

    with pytest.raises(KexueError, match="not found"):
        load_corpus(str(tmp_path / "nope"), "train")
    (tmp_path / "train.txt").write_text("a b c\n")
    assert load_corpus(str(tmp_path), "train") == [["a", "b", "c"]]
    with pytest.raises(KexueError, match="has no valid.txt"):
        load_corpus(str(tmp_path), "valid")
    (tmp_path / "valid.txt").write_bytes(b"caf\xe9\n")
    with pytest.raises(KexueError, match=r"valid.txt is not UTF-8"):
        load_corpus(str(tmp_path), "valid")
    (tmp_path / "test.txt").write_text("\n \n")
    with pytest.raises(KexueError, match="test.txt holds no sentences"):
        load_corpus(str(tmp_path), "test")
    (tmp_path / "extra.json").write_text('{"itos": ["a"], "more": 1}')
    with pytest.raises(KexueError, match="unknown key"):
        Vocab.load(tmp_path / "extra.json")
    (tmp_path / "broken.json").write_text('{"itos": [')
    with pytest.raises(KexueError, match="broken.json is not valid JSON"):
        Vocab.load(tmp_path / "broken.json")
