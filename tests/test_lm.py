"""Language models: KV cache == full recompute, step == forward, and a tiny LM learns through fit()."""

import pytest
import torch

from kexue.generation import Beam, Greedy, Stopping, decode
from kexue.models.lm import LMConfig, build_lm, lm_loss, perplexity
from kexue.training import TensorBatches, TrainConfig, fit


@pytest.mark.parametrize("arch,head", [("transformer", "softmax"), ("transformer", "st"), ("lstm", "st")])
def test_cache_equals_full_recompute(arch, head):
    torch.manual_seed(0)
    cfg = LMConfig(arch=arch, vocab=20, eos_id=3, dim=16, layers=2, heads=2, max_len=64, dropout=0.0, head=head, eps=0.01)
    model = build_lm(cfg).eval()
    x = torch.randint(4, 20, (3, 12))
    reset = torch.zeros_like(x, dtype=torch.bool)
    reset[:, 4] = True  # as step() does: the ST product starts after a 5-token prompt
    full, _ = model(x, None, reset)
    logp, state = model.step(x[:, :5])
    steps = [logp]
    for t in range(5, 12):
        logp, state = model.step(x[:, t: t + 1], state)
        steps.append(logp)
    assert torch.allclose(torch.stack(steps, 1), full[:, 4:], atol=1e-5)


def test_beam_reorders_model_state():
    torch.manual_seed(0)
    cfg = LMConfig(arch="transformer", vocab=20, eos_id=3, dim=16, layers=1, heads=2, max_len=64, dropout=0.0)
    model = build_lm(cfg).eval()
    prompt = torch.randint(4, 20, (2, 3))
    out = decode(model.step, prompt, search=Beam(3, 0.0, "never"), stopping=Stopping(6, 3))
    # the beam's reported score is the model's own log-probability of its tokens (full recompute)
    for row in range(2):
        seq = torch.cat([prompt[row], out.tokens[row, : out.lengths[row]]])[None]
        reset = torch.zeros_like(seq, dtype=torch.bool)
        log_p, _ = model(seq[:, :-1], None, reset)
        lp = log_p[0, 2:].gather(1, seq[0, 3:, None]).sum()
        assert lp.item() == pytest.approx(out.scores[row].item(), abs=1e-4)


@pytest.mark.parametrize("arch", ["lstm", "transformer"])
def test_tiny_lm_learns(arch):
    torch.manual_seed(0)
    # a deterministic "language": counting sentences 4 5 6 ... of random length, then eos
    g = torch.Generator().manual_seed(0)
    stream = []
    for _ in range(400):
        stream += list(range(4, 4 + int(torch.randint(2, 8, (1,), generator=g)))) + [3]
    stream = torch.tensor(stream)
    windows = stream[: (len(stream) - 1) // 17 * 17 + 1]
    x = windows[:-1].view(-1, 17)[:, :16]
    y = windows[1:].view(-1, 17)[:, :16]
    cfg = LMConfig(arch=arch, vocab=12, eos_id=3, dim=32, layers=1, heads=2, max_len=32, dropout=0.0, head="st", eps=0.01)
    model = build_lm(cfg)
    before = perplexity(model, stream[:600], batch_size=4, window=16)
    fit(model, lm_loss, TensorBatches(x, y, batch_size=16, seed=0),
        TrainConfig(steps=150, lr=1e-2, log_every=50, progress=False))
    after = perplexity(model, stream[:600], batch_size=4, window=16)
    assert before > 8 and after < 2.2
    # greedy continues a sentence by counting up
    out = decode(model.eval().step, torch.tensor([[3, 4, 5]]), search=Greedy(), stopping=Stopping(3, 3))
    assert out.tokens[0, :2].tolist() == [6, 7]


@pytest.mark.parametrize("bad", [dict(dim=0), dict(layers=-1), dict(heads=0), dict(vocab=0), dict(dim="16"),
                                 dict(eos_id=10), dict(dropout=1.0), dict(eps=0.0), dict(eps=float("nan")),
                                 dict(arch="gru"), dict(head="sigmoid"), dict(arch="transformer", dim=10, heads=4)])
def test_config_refuses_what_cannot_build_a_model(bad):
    from kexue.errors import KexueError

    with pytest.raises(KexueError):
        LMConfig(**{"vocab": 10, "eos_id": 3, **bad})
