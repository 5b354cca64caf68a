"""ON-LSTM language model: regularisers, state carrying, a tiny LM that learns, distances for parsing."""

import pytest
import torch

from kexue.analysis.perplexity import perplexity
from kexue.analysis.trees import build_tree
from kexue.data.text import LMBatches, Vocab, token_stream
from kexue.data.treebank import generate_sentences
from kexue.errors import KexueError
from kexue.models.onlstm_lm import (
    LanguageModel,
    ONLSTMConfig,
    ResettingBatches,
    StatefulLMLoss,
    embedding_dropout,
    locked_dropout,
    sentence_distances,
)
from kexue.training import TrainConfig, fit


def test_locked_and_embedding_dropout_masks():
    g = torch.Generator().manual_seed(0)
    x = torch.ones(4, 6, 10)
    y = locked_dropout(x, 0.5, True, g)
    assert torch.all(y == y[:, :1])  # one mask per sequence, shared over time
    assert set(y.unique().tolist()) <= {0.0, 2.0}
    assert torch.equal(locked_dropout(x, 0.5, False, g), x)
    w = torch.ones(50, 3)
    e = embedding_dropout(w, 0.3, True, g)
    assert torch.all((e == 0).all(1) | (e == 1 / 0.7).all(1))  # whole word types dropped


def test_tied_weights_and_right_padding_does_not_change_distances():
    torch.manual_seed(0)
    model = LanguageModel(ONLSTMConfig(vocab_size=30, emb=12, hidden=16, layers=3, chunk=4)).eval()
    assert model.decoder.weight is model.embedding.weight
    short = sentence_distances(model, [[5, 6, 7]], boundary=3)[0]
    batched = sentence_distances(model, [[5, 6, 7], [5, 6, 7, 8, 9, 10]], boundary=3)[0]
    for a, b in zip(short, batched):
        torch.testing.assert_close(a, b)
    assert len(short) == 3 and short[1].shape == (3,)


def _train_tiny(cell):
    sents = [s.words for s in generate_sentences(400, seed=1)]
    vocab = Vocab.build(sents)
    stream = token_stream(sents, vocab)
    torch.manual_seed(0)
    model = LanguageModel(
        ONLSTMConfig(
            vocab_size=len(vocab),
            emb=16,
            hidden=24,
            layers=2,
            chunk=4,
            cell=cell,
            dropout=0.1,
            dropouth=0.1,
            dropouti=0.1,
            dropoute=0.0,
            wdrop=0.1,
        )
    )
    held = token_stream([s.words for s in generate_sentences(60, seed=99)], vocab)
    before = perplexity(model, held, batch_size=4, window=20)
    data = ResettingBatches(LMBatches(stream, 16, 20))
    fit(model, StatefulLMLoss(), data, TrainConfig(steps=60, lr=1e-2, progress=False, seed=0))
    return before, perplexity(model, held, batch_size=4, window=20), len(vocab)


def test_tiny_onlstm_lm_learns():
    before, after, v = _train_tiny("onlstm")
    assert before > 0.8 * v  # starts near uniform
    assert after < 0.6 * before


def test_tiny_lstm_baseline_learns():
    before, after, _ = _train_tiny("lstm")
    assert after < 0.6 * before


def test_state_resets_at_epoch_start():
    sents = [s.words for s in generate_sentences(50, seed=2)]
    vocab = Vocab.build(sents)
    inner = LMBatches(token_stream(sents, vocab), 4, 10)
    data = ResettingBatches(inner)
    assert bool(data.batch(0)[2]) and not bool(data.batch(1)[2]) and bool(data.batch(inner.per_epoch)[2])
    model = LanguageModel(ONLSTMConfig(vocab_size=len(vocab), emb=8, hidden=8, layers=1, chunk=4)).eval()
    loss = StatefulLMLoss()
    loss(model, data.batch(0), None)
    carried = loss.states[0][0].clone()
    assert carried.abs().sum() > 0
    loss(model, data.batch(inner.per_epoch), None)  # a new epoch starts from zeros again
    fresh = StatefulLMLoss()
    fresh(model, data.batch(0), None)
    torch.testing.assert_close(loss.states[0][0], fresh.states[0][0])
    tree = build_tree([0.2, 0.9, 0.1], ["a", "b", "c"])
    assert tree == ["a", ["b", "c"]]


def test_n_steps_resume_n_steps_equals_2n_steps_bit_identically(tmp_path):
    """The carried recurrent state is checkpointed (StatefulLMLoss.state_dict): exact resume mid-epoch."""
    sents = [s.words for s in generate_sentences(200, seed=1)]
    vocab = Vocab.build(sents)
    data = ResettingBatches(LMBatches(token_stream(sents, vocab), 4, 10))
    cfg = TrainConfig(steps=8, lr=1e-2, progress=False, seed=0, ckpt_every=4, log_every=2)
    assert not any(data.inner.is_epoch_start(s) for s in range(1, 8))  # the state carries across the resume

    def model():
        torch.manual_seed(0)
        return LanguageModel(
            ONLSTMConfig(
                vocab_size=len(vocab),
                emb=8,
                hidden=12,
                layers=2,
                chunk=4,
                dropout=0.1,
                dropouth=0.1,
                dropouti=0.1,
                dropoute=0.1,
                wdrop=0.1,
            )
        )

    straight = model()
    fit(straight, StatefulLMLoss(), data, cfg, tmp_path / "straight")
    fit(model(), StatefulLMLoss(), data, cfg, tmp_path / "resumed", until=4)
    resumed = model()  # a new process: fresh weights and a fresh loss, everything from the checkpoint
    fit(resumed, StatefulLMLoss(), data, cfg, tmp_path / "resumed", resume=True)
    for (name, a), b in zip(straight.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), name
    assert (tmp_path / "straight" / "metrics.jsonl").read_text() == (tmp_path / "resumed" / "metrics.jsonl").read_text()


def test_config_refuses_what_cannot_build_a_model():
    for bad in (
        dict(chunk=0),
        dict(emb=0),
        dict(hidden=10, chunk=4),
        dict(layers=0),
        dict(dropout=1.0),
        dict(wdrop=-0.1),
        dict(alpha=-1.0),
        dict(tie="yes"),
        dict(cell="gru"),
        dict(vocab_size=0),
    ):
        with pytest.raises(KexueError):
            ONLSTMConfig(**{"vocab_size": 30, "emb": 8, "hidden": 8, "chunk": 4, **bad})
    with pytest.raises(TypeError):  # keywords only: no 14 positional arguments
        ONLSTMConfig(30, 8, 8)
