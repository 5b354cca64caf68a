"""The self-terminating head: a valid distribution, the p(eos) bound and the greedy stop bound."""

import math

import pytest
import torch

from kexue.generation import Greedy, Stopping, decode
from kexue.models.lm import LMConfig, build_lm
from kexue.nn.heads import SelfTerminatingHead, segmented_cumsum


def test_segmented_cumsum_restarts():
    x = torch.tensor([[1.0, 1.0, 1.0, 1.0], [1.0, 2.0, 3.0, 4.0]])
    reset = torch.tensor([[False, True, False, False], [False, False, False, True]])
    out = segmented_cumsum(x, reset, torch.tensor([5.0, 0.0]))
    assert out.tolist() == [[6.0, 1.0, 2.0, 3.0], [1.0, 3.0, 6.0, 4.0]]


def test_st_head_is_a_distribution_with_the_eos_bound():
    torch.manual_seed(0)
    eps = 0.05
    head = SelfTerminatingHead(8, 10, eos_id=3, eps=eps)
    with torch.no_grad():
        head.proj.bias[3] = 5.0  # sigmoid near 1: the bound is nearly tight
    h = torch.randn(4, 30, 8)
    reset = torch.zeros(4, 30, dtype=torch.bool)
    reset[:, 0] = True
    log_p, _ = head(h, torch.zeros(4), reset)
    assert torch.allclose(log_p.exp().sum(-1), torch.ones(4, 30), atol=1e-5)
    p_eos = log_p[..., 3].exp()
    bound = 1 - (1 - eps) ** torch.arange(1, 31, dtype=torch.float)
    assert (p_eos >= bound - 1e-6).all()
    assert (p_eos[:, 1:] >= p_eos[:, :-1] - 1e-6).all()  # non-decreasing


@pytest.mark.parametrize("arch,eps", [("lstm", 0.1), ("transformer", 0.1), ("lstm", 0.02)])
def test_greedy_stops_within_the_bound(arch, eps):
    torch.manual_seed(1)
    cfg = LMConfig(
        arch=arch, vocab=30, eos_id=3, dim=16, layers=1, heads=2, max_len=256, dropout=0.0, head="st", eps=eps
    )
    model = build_lm(cfg).eval()
    with torch.no_grad():  # make eos as unlikely as the head allows: the bound alone must stop decoding
        model.head.proj.bias[3] = 20.0
        model.head.proj.bias[7] = 30.0  # one word takes all of alpha_t: eos wins only once p(eos) > 1/2
    bound = math.ceil(-math.log(2) / math.log(1 - eps))  # 7 for eps = 0.1, 35 for 0.02
    prompt = torch.randint(4, 30, (6, 5))
    out = decode(model.step, prompt, search=Greedy(), stopping=Stopping(200, 3))
    assert out.finished.all()
    assert int(out.lengths.max()) <= bound
    assert int(out.lengths.max()) >= bound - 1  # and the bound is nearly reached when eos is not preferred
