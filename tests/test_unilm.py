"""SimBERT's pieces: the masks (exact matrices), the UniLM model, the objective, pairs, search.

A tiny random BERT (hidden 16, one layer) with a hand-made WordPiece vocabulary is saved once per
module with ``save_pretrained``; one test builds a Chinese-character vocabulary the same way.
"""

import math

import pytest
import torch
from torch.nn import functional as F

from kexue.data.paraphrase import first_sentence, paraphrase_pairs
from kexue.errors import KexueError
from kexue.models.unilm import (
    additive_mask,
    build_unilm,
    encode_pairs,
    encode_texts,
    load_unilm,
    retrieval_loss,
    seq2seq_loss,
    simbert_loss,
)
from kexue.nn.masks import causal_mask, unilm_mask
from kexue.recipes.simbert import generate, nearest, retrieval_scores

WORDS = "the a cat dog sat ran on mat fast slow big small red blue house tree".split()
SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def save_tiny_bert(folder, words=WORDS, seed=0):
    """A 1-layer BERT (hidden 16) and its WordPiece tokenizer, saved with save_pretrained."""
    from transformers import BertConfig, BertModel, BertTokenizerFast

    tok = BertTokenizerFast(vocab={w: i for i, w in enumerate(SPECIAL + list(words))})
    cfg = BertConfig(
        vocab_size=len(tok),
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=80,
    )
    torch.manual_seed(seed)
    BertModel(cfg).save_pretrained(str(folder))
    tok.save_pretrained(str(folder))
    return folder


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    folder = save_tiny_bert(tmp_path_factory.mktemp("tiny-bert"))
    model, tok = load_unilm(folder, "cls")
    return folder, model.eval(), tok


# ---- masks -----------------------------------------------------------------------------------


def test_causal_mask_exact_with_padding():
    expected = torch.tensor([[1, 0, 0], [1, 1, 0], [1, 1, 0]], dtype=torch.bool)
    assert torch.equal(causal_mask(3, torch.tensor([[1, 1, 0]]))[0], expected)
    assert torch.equal(causal_mask(2)[0], torch.tensor([[1, 0], [1, 1]], dtype=torch.bool))


def test_unilm_mask_exact():
    # [CLS] a [SEP] | b [SEP] PAD : segments 0 0 0 1 1 0(pad), attention 1 1 1 1 1 0
    seg = torch.tensor([[0, 0, 0, 1, 1, 0]])
    att = torch.tensor([[1, 1, 1, 1, 1, 0]])
    expected = torch.tensor(
        [
            [1, 1, 1, 0, 0, 0],
            [1, 1, 1, 0, 0, 0],
            [1, 1, 1, 0, 0, 0],
            [1, 1, 1, 1, 0, 0],
            [1, 1, 1, 1, 1, 0],
            [1, 1, 1, 1, 1, 0],
        ],
        dtype=torch.bool,
    )
    assert torch.equal(unilm_mask(seg, att)[0], expected)


def test_unilm_mask_pads_source_and_target():
    # source padded in the middle (batched prompts), then two target tokens
    seg = torch.tensor([[0, 0, 0, 1, 1]])
    att = torch.tensor([[1, 1, 0, 1, 1]])
    m = unilm_mask(seg, att)[0]
    assert not m[:, 2].any()  # nobody sees the pad
    assert m[0].tolist() == [True, True, False, False, False]
    assert m[4].tolist() == [True, True, False, True, True]


def test_additive_mask_values():
    m = additive_mask(torch.tensor([[[True, False], [True, True]]]))
    assert m.shape == (1, 1, 2, 2)
    assert m[0, 0, 0, 0] == 0 and m[0, 0, 0, 1] == torch.finfo(torch.float32).min


# ---- model -----------------------------------------------------------------------------------


def test_lm_head_tied_to_embeddings(tiny):
    _, model, _ = tiny
    assert model.lm_head.decoder.weight is model.bert.embeddings.word_embeddings.weight


def test_segment1_token_sees_no_later_token(tiny):
    _, model, tok = tiny
    ids, seg, att = encode_pairs(tok, [("the cat sat", "a dog ran fast")])
    hidden = model.hidden_states(ids[:1], seg[:1], att[:1])
    t = int((seg[0] == 1).nonzero()[0])  # first token of segment 1
    changed = ids[:1].clone()
    changed[0, t + 1 :] = tok.convert_tokens_to_ids("tree")  # change every later token
    hidden2 = model.hidden_states(changed, seg[:1], att[:1])
    assert torch.allclose(hidden[0, : t + 1], hidden2[0, : t + 1], atol=1e-6)
    assert not torch.allclose(hidden[0, t + 1 :], hidden2[0, t + 1 :])


@pytest.mark.parametrize("pooling", ["cls", "mean"])
def test_sentence_vector_never_sees_segment1(tiny, pooling):
    folder, _, tok = tiny
    model, _ = load_unilm(folder, pooling)
    model.eval()
    ids, seg, att = encode_pairs(tok, [("the cat sat", "a dog ran fast")])
    _, v = model(ids, seg, att)
    other = ids.clone()
    other[0, seg[0] == 1] = tok.convert_tokens_to_ids("house")
    _, v2 = model(other, seg, att)
    assert torch.allclose(v[0], v2[0], atol=1e-6)
    # and the joint pass gives the same vector as encoding the sentence alone
    e_ids, e_att = encode_texts(tok, ["the cat sat"])
    assert torch.allclose(model.encode(e_ids, e_att)[0], F.normalize(v[0], dim=-1), atol=1e-5)


def test_padding_does_not_change_vectors(tiny):
    _, model, tok = tiny
    ids, att = encode_texts(tok, ["the cat", "a big red dog sat on the mat"])
    alone_ids, alone_att = encode_texts(tok, ["the cat"])
    assert torch.allclose(model.encode(ids, att)[0], model.encode(alone_ids, alone_att)[0], atol=1e-5)


def test_chinese_character_vocabulary(tmp_path):
    folder = save_tiny_bert(tmp_path / "zh", words=list("我们喜欢机器学习自然语言处理"))
    model, tok = load_unilm(folder, "cls")
    ids, seg, att = encode_pairs(tok, [("我喜欢机器学习", "我们喜欢自然语言处理")])
    assert tok.unk_token_id not in ids.tolist()[0]
    loss, _ = simbert_loss(model, (ids, seg, att))
    loss.backward()
    assert math.isfinite(float(loss.detach()))
    out = generate(model.eval(), tok, ["我喜欢学习"], candidates=3, max_len=8, seed=0)
    assert len(out) == 1 and len(out[0]) == 3


# ---- objective -------------------------------------------------------------------------------


def test_retrieval_loss_exact_value():
    # unit vectors; cosines: r0.r1 = 0.6, r0.r2 = 0, r0.r3 = 0.8, r1.r2 = 0.8, r1.r3 = 0.96, r2.r3 = 0.6
    v = torch.tensor([[1.0, 0.0], [0.6, 0.8], [0.0, 2.0], [0.8, 0.6]])  # row 2 has norm 2: normalised first
    # (partner cosine, cosines to the two other rows); the diagonal never counts
    rows = [(0.6, [0.0, 0.8]), (0.6, [0.8, 0.96]), (0.6, [0.0, 0.8]), (0.6, [0.8, 0.96])]
    expected = sum(-30 * p + math.log(math.exp(30 * p) + sum(math.exp(30 * o) for o in others)) for p, others in rows)
    assert float(retrieval_loss(v)) == pytest.approx(expected / 4, rel=1e-5)
    assert float(retrieval_loss(v, scale=1.0)) == pytest.approx(
        sum(-p + math.log(math.exp(p) + sum(math.exp(o) for o in others)) for p, others in rows) / 4, rel=1e-5
    )


def test_retrieval_loss_ignores_self_and_needs_even_rows():
    v = torch.tensor([[1.0, 0.0], [0.0, 1.0]])  # two rows: the only candidate is the partner
    assert float(retrieval_loss(v)) == pytest.approx(0.0, abs=1e-6)
    with pytest.raises(KexueError, match="even"):
        retrieval_loss(torch.ones(3, 2))


def test_seq2seq_loss_only_on_segment1():
    ids = torch.tensor([[2, 5, 3, 6, 3, 0]])
    seg = torch.tensor([[0, 0, 0, 1, 1, 0]])
    att = torch.tensor([[1, 1, 1, 1, 1, 0]])
    logits = torch.zeros(1, 6, 8)
    logits[0, 2, 6] = 2.0  # [SEP] (pos 2) predicts token 6 at pos 3
    logits[0, 3, 3] = 1.0  # pos 3 predicts [SEP] at pos 4
    logits[0, 0, 1] = 50.0  # a segment-0 target: never counted
    expected = (
        F.cross_entropy(logits[0, 2:3], torch.tensor([6])) + F.cross_entropy(logits[0, 3:4], torch.tensor([3]))
    ) / 2
    assert float(seq2seq_loss(logits, ids, seg, att)) == pytest.approx(float(expected), rel=1e-6)


def test_simbert_loss_is_seq2seq_plus_retrieval(tiny):
    _, model, tok = tiny
    batch = encode_pairs(tok, [("the cat sat", "a dog ran"), ("big tree", "red house")])
    hidden, vectors = model(*batch)
    expected = seq2seq_loss(model.logits(hidden), *batch) + retrieval_loss(vectors)
    loss, parts = simbert_loss(model, batch)
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)
    assert parts["seq2seq"] + parts["similarity"] == pytest.approx(loss.item(), rel=1e-5)


def test_pairs_are_adjacent_both_orders(tiny):
    _, _, tok = tiny
    ids, seg, _ = encode_pairs(tok, [("the cat", "a dog ran")])
    cat, dog = tok.convert_tokens_to_ids("cat"), tok.convert_tokens_to_ids("dog")
    assert ids[0, seg[0] == 0].tolist().count(cat) == 1 and dog in ids[0, seg[0] == 1].tolist()
    assert dog in ids[1, seg[1] == 0].tolist() and cat in ids[1, seg[1] == 1].tolist()


def test_training_improves_retrieval(tmp_path):
    from kexue.data.pairs import TextPair

    model = build_unilm(load_unilm(save_tiny_bert(tmp_path / "b"), "mean")[0].config, "mean")
    _, tok = load_unilm(tmp_path / "b")
    nouns, adjs = ["cat", "dog", "house", "tree", "mat"], ["big", "small", "red", "blue"]
    pairs = [TextPair(f"the {a} {n}", f"a {n} {a}", n + a) for n in nouns for a in adjs]
    before = retrieval_scores(model, tok, pairs)["top1"]
    torch.manual_seed(0)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    batch = encode_pairs(tok, [(p.source, p.target) for p in pairs])
    model.train()
    for _ in range(60):
        loss, _ = simbert_loss(model, batch)
        opt.zero_grad()
        loss.backward()
        opt.step()
    after = retrieval_scores(model.eval(), tok, pairs)["top1"]
    assert after >= before + 0.3, (before, after)


def test_generation_is_batched_and_seeded(tiny):
    _, model, tok = tiny
    a = generate(model, tok, ["the cat sat", "big red house on a mat"], candidates=4, max_len=6, seed=1)
    b = generate(model, tok, ["the cat sat", "big red house on a mat"], candidates=4, max_len=6, seed=1)
    assert a == b and [len(x) for x in a] == [4, 4]
    alone = generate(model, tok, ["the cat sat"], candidates=4, max_len=6, seed=1)
    assert all(isinstance(t, str) for t in alone[0])


# ---- data ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, first",
    [
        ("Foo is a tool, e.g. for bar. It also baz.", "Foo is a tool, e.g. for bar."),
        (
            "Version 1.2 of node.js (see www.x.org) is here. Next one.",
            "Version 1.2 of node.js (see www.x.org) is here.",
        ),
        ("Written by J. Smith et al. in 2001! More text", "Written by J. Smith et al. in 2001!"),
        ("Does it work? Yes.", "Does it work?"),
        ("one   sentence\n only", "one sentence only"),
        ("It ends with etc. and no capital after. Then more.", "It ends with etc. and no capital after."),
    ],
)
def test_first_sentence(text, first):
    assert first_sentence(text) == first


def test_no_test_package_in_training_pairs():
    train, test = paraphrase_pairs("train"), paraphrase_pairs("test")
    assert len(train) > 50000 and len(test) > 2000
    assert not {p.group for p in train} & {p.group for p in test}
    p = test[0]
    assert p.source == "visualisation and analysis for single valued point data"
    assert p.target.startswith("This program provides") and p.target.endswith("(x,y,z,value).")


# ---- search ----------------------------------------------------------------------------------


def test_faiss_matches_exact_search():
    pytest.importorskip("faiss")
    g = torch.Generator().manual_seed(0)
    corpus = F.normalize(torch.randn(300, 24, generator=g), dim=-1)
    queries = F.normalize(torch.randn(20, 24, generator=g), dim=-1)
    s1, i1 = nearest(queries, corpus, 5, "exact")
    s2, i2 = nearest(queries, corpus, 5, "faiss")
    assert torch.equal(i1, i2)
    assert torch.allclose(s1, s2, atol=1e-5)
