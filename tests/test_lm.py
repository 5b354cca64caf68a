"""Language models: KV cache == full recompute, step == forward, a tiny LM learns through fit(), and the
one perplexity of the package on hand-made models."""

import math

import pytest
import torch

from kexue.analysis.perplexity import perplexity
from kexue.errors import KexueError
from kexue.generation import Beam, Greedy, Stopping, decode
from kexue.models.lm import LMConfig, build_lm, lm_loss
from kexue.training import TensorBatches, TrainConfig, fit


@pytest.mark.parametrize("arch,head", [("transformer", "softmax"), ("transformer", "st"), ("lstm", "st")])
def test_cache_equals_full_recompute(arch, head):
    torch.manual_seed(0)
    cfg = LMConfig(
        arch=arch, vocab=20, eos_id=3, dim=16, layers=2, heads=2, max_len=64, dropout=0.0, head=head, eps=0.01
    )
    model = build_lm(cfg).eval()
    x = torch.randint(4, 20, (3, 12))
    reset = torch.zeros_like(x, dtype=torch.bool)
    reset[:, 4] = True  # as step() does: the ST product starts after a 5-token prompt
    full, _ = model(x, None, reset)
    logp, state = model.step(x[:, :5])
    steps = [logp]
    for t in range(5, 12):
        logp, state = model.step(x[:, t : t + 1], state)
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
    cfg = LMConfig(
        arch=arch, vocab=12, eos_id=3, dim=32, layers=1, heads=2, max_len=32, dropout=0.0, head="st", eps=0.01
    )
    model = build_lm(cfg)
    before = perplexity(model, stream[:600], batch_size=4, window=16)
    fit(
        model,
        lm_loss,
        TensorBatches(x, y, batch_size=16, seed=0),
        TrainConfig(steps=150, lr=1e-2, log_every=50, progress=False),
    )
    after = perplexity(model, stream[:600], batch_size=4, window=16)
    assert before > 8 and after < 2.2
    # greedy continues a sentence by counting up
    out = decode(model.eval().step, torch.tensor([[3, 4, 5]]), search=Greedy(), stopping=Stopping(3, 3))
    assert out.tokens[0, :2].tolist() == [6, 7]


@pytest.mark.parametrize(
    "bad",
    [
        dict(dim=0),
        dict(layers=-1),
        dict(heads=0),
        dict(vocab=0),
        dict(dim="16"),
        dict(eos_id=10),
        dict(dropout=1.0),
        dict(eps=0.0),
        dict(eps=float("nan")),
        dict(arch="gru"),
        dict(head="sigmoid"),
        dict(arch="transformer", dim=10, heads=4),
    ],
)
def test_config_refuses_what_cannot_build_a_model(bad):
    from kexue.errors import KexueError

    with pytest.raises(KexueError):
        LMConfig(**{"vocab": 10, "eos_id": 3, **bad})


def test_config_takes_keywords_only():
    with pytest.raises(TypeError):
        LMConfig("lstm", 10)


class _Fixed(torch.nn.Module):
    """A hand-made LM: next-token scores ``table[x]`` (V, V); counts its calls and the states it is given."""

    def __init__(self, table: torch.Tensor, carries_state: bool = True):
        super().__init__()
        self.table = torch.nn.Parameter(table, requires_grad=False)
        self.carries_state = carries_state
        self.states = []

    def forward(self, x, state=None):
        self.states.append(state)
        return self.table[x], len(self.states)  # the state: how many windows came before


def test_perplexity_is_the_exponential_of_the_mean_nll_of_each_next_token():
    V = 5
    uniform = _Fixed(torch.zeros(V, V))
    stream = torch.arange(40) % V
    assert perplexity(uniform, stream, batch_size=4, window=3) == pytest.approx(V)  # uniform: exactly V
    # a model sure of "next = x + 1 (mod V)" with probability 0.9: every step of this stream is that
    p = torch.full((V, V), 0.1 / (V - 1))
    p[torch.arange(V), (torch.arange(V) + 1) % V] = 0.9
    sure = _Fixed(p.log())
    assert perplexity(sure, stream, batch_size=4, window=3) == pytest.approx(1 / 0.9)
    # logits shifted by a constant per row are the same distribution
    assert perplexity(_Fixed(p.log() + 7.0), stream, batch_size=4, window=3) == pytest.approx(1 / 0.9)


def test_perplexity_carries_the_state_only_for_a_model_that_carries_it():
    stream = torch.arange(40) % 5
    carried, fresh = _Fixed(torch.zeros(5, 5)), _Fixed(torch.zeros(5, 5), carries_state=False)
    perplexity(carried, stream, batch_size=4, window=3)  # 10 tokens per row: windows of 3, 3, 3
    perplexity(fresh, stream, batch_size=4, window=3)
    assert carried.states == [None, 1, 2] and fresh.states == [None, None, None]


def test_perplexity_evaluates_in_eval_mode_and_restores_the_mode():
    modes = []

    class Recorder(_Fixed):
        def forward(self, x, state=None):
            modes.append(self.training)
            return super().forward(x, state)

    model = Recorder(torch.zeros(5, 5)).train()
    perplexity(model, torch.arange(40) % 5, batch_size=4, window=3)
    assert modes == [False, False, False] and model.training


def test_perplexity_refuses_a_short_stream_and_reports_overflow_as_inf():
    with pytest.raises(KexueError, match="at least 8"):
        perplexity(_Fixed(torch.zeros(5, 5)), torch.arange(7) % 5, batch_size=4)
    hopeless = torch.full((5, 5), -1000.0)
    hopeless[:, 0] = 0.0  # all mass on token 0, never the next one
    assert perplexity(_Fixed(hopeless), torch.arange(1, 41) % 4 + 1, batch_size=4, window=3) == math.inf
