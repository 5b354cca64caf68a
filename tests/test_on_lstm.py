"""ON-LSTM cell: cumax, the update against a hand-written reference step, the hand-written backward."""

import torch

from kexue.nn.on_lstm import ONLSTMLayer, cumax, reverse_cumsum


def reference_step(x, h, c, W, U, b, chunk, form):
    """The paper's equations written out one by one, in double precision, with explicit repeats."""
    n = h.shape[1]
    p = n // chunk
    g = x @ W.t() + h @ U.t() + b
    a_f, a_i = g[:, :p], g[:, p : 2 * p]
    f, i, o, cc = g[:, 2 * p :].split(n, dim=1)
    f, i, o, cc = torch.sigmoid(f), torch.sigmoid(i), torch.sigmoid(o), torch.tanh(cc)
    sf, si = torch.softmax(a_f, 1), torch.softmax(a_i, 1)
    mf = torch.stack([sf[:, : k + 1].sum(1) for k in range(p)], 1)
    if form == "paper":
        mi = 1 - torch.stack([si[:, : k + 1].sum(1) for k in range(p)], 1)
    else:
        mi = torch.stack([si[:, k:].sum(1) for k in range(p)], 1)
    mf = mf.repeat_interleave(chunk, 1)
    mi = mi.repeat_interleave(chunk, 1)
    w = mf * mi
    c_new = w * (f * c + i * cc) + (mf - w) * c + (mi - w) * cc
    return o * torch.tanh(c_new), c_new, 1 - mf.mean(1)


def test_cumax_monotone_in_unit_interval():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(50, 17, generator=g) * 5
    y = cumax(x)
    assert torch.all(y[:, 1:] >= y[:, :-1])
    assert torch.all(y >= 0) and torch.all(y <= 1 + 1e-6)
    torch.testing.assert_close(y[:, -1], torch.ones(50))
    torch.testing.assert_close(cumax(torch.zeros(4)), torch.tensor([0.25, 0.5, 0.75, 1.0]))
    torch.testing.assert_close(reverse_cumsum(torch.tensor([1.0, 2.0, 3.0])), torch.tensor([6.0, 5.0, 3.0]))


def _layer(form, seed=0):
    torch.manual_seed(seed)
    layer = ONLSTMLayer(5, 12, 3, master_input=form).double()
    with torch.no_grad():
        for prm in layer.parameters():
            prm.uniform_(-0.8, 0.8)
    return layer


def test_layer_matches_reference_steps_both_forms():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, 6, 5, generator=g, dtype=torch.double)
    h0 = torch.randn(2, 12, generator=g, dtype=torch.double)
    c0 = torch.randn(2, 12, generator=g, dtype=torch.double)
    for form in ("paper", "su"):
        layer = _layer(form)
        out, (hT, cT), (d_f, _) = layer(x, (h0, c0))
        h, c = h0, c0
        for t in range(6):
            h, c, d = reference_step(x[:, t], h, c, layer.weight_ih, layer.weight_hh, layer.bias, 3, form)
            torch.testing.assert_close(out[:, t], h)
            torch.testing.assert_close(d_f[:, t], d)
        torch.testing.assert_close(hT, h)
        torch.testing.assert_close(cT, c)


def test_handwritten_backward_matches_autograd_of_reference():
    g = torch.Generator().manual_seed(2)
    x = torch.randn(3, 7, 5, generator=g, dtype=torch.double)
    h0 = torch.randn(3, 12, generator=g, dtype=torch.double)
    c0 = torch.randn(3, 12, generator=g, dtype=torch.double)
    probe = torch.randn(3, 7, 12, generator=g, dtype=torch.double)
    for form in ("paper", "su"):
        layer = _layer(form, seed=3)
        xs, hs, cs = (t.clone().requires_grad_() for t in (x, h0, c0))
        out, (hT, cT), _ = layer(xs, (hs, cs))
        ((out * probe).sum() + (hT**2).sum() + cT.sum()).backward()
        ours = [xs.grad, hs.grad, cs.grad] + [prm.grad for prm in layer.parameters()]
        layer.zero_grad()
        xr, hr, cr = (t.clone().requires_grad_() for t in (x, h0, c0))
        h, c, outs = hr, cr, []
        for t in range(7):
            h, c, _ = reference_step(xr[:, t], h, c, layer.weight_ih, layer.weight_hh, layer.bias, 3, form)
            outs.append(h)
        ((torch.stack(outs, 1) * probe).sum() + (h**2).sum() + c.sum()).backward()
        ref = [xr.grad, hr.grad, cr.grad] + [prm.grad for prm in layer.parameters()]
        for a, b in zip(ours, ref):
            torch.testing.assert_close(a, b)


def test_paper_form_never_writes_top_chunk_su_form_does():
    # Paper: the top level has i~ = 0 (up to rounding) and f~ = 1, so its cells keep c0 = 0 forever.
    g = torch.Generator().manual_seed(4)
    x = torch.randn(2, 9, 5, generator=g, dtype=torch.double)
    out_p, (_, c_p), _ = _layer("paper")(x)
    assert c_p[:, -3:].abs().max() < 1e-12 and out_p[..., -3:].abs().max() < 1e-12
    out_s, (_, c_s), _ = _layer("su")(x)
    assert c_s[:, -3:].abs().min() > 1e-6


def test_dropconnect_mask_per_forward_and_eval_expectation():
    layer = ONLSTMLayer(4, 8, 2, dropconnect=0.5)
    g = torch.Generator().manual_seed(0)
    w = layer.recurrent_weight(g)
    dropped = (w == 0).float().mean().item()
    assert 0.35 < dropped < 0.65
    kept = w != 0
    torch.testing.assert_close(w[kept], layer.weight_hh[kept])
    layer.eval()
    torch.testing.assert_close(layer.recurrent_weight(g), layer.weight_hh * 0.5)
