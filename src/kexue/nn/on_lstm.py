"""ON-LSTM: the ordered-neurons LSTM of Shen et al. (ICLR 2019), kexue.fm/archives/6621.

Hidden size ``n`` is split into ``p = n / chunk_size`` levels. Two master gates over the levels,
each repeated ``chunk_size`` times, decide how much of the history and of the new input each
level keeps:

    f~_t = cumax(a_f)                        master forget gate, rises to 1
    i~_t = 1 - cumax(a_i)   ("paper")        master input gate, falls from 1
         = cs<-(softmax(a_i)) ("su")         Su's reverse cumulative sum
    w_t  = f~_t * i~_t
    c_t  = w_t*(f_t*c_{t-1} + i_t*c^_t) + (f~_t - w_t)*c_{t-1} + (i~_t - w_t)*c^_t
    h_t  = o_t * tanh(c_t)

The layer computes the input projections of every time step in one matrix product and runs a
minimal recurrent loop whose backward pass is written by hand (:class:`_ONLSTMRecurrence`):
autograd records nothing per step; the backward loop runs ``dgates @ U`` and ~16 element-wise
ops per step (every factor independent of the incoming gradient is computed for all steps at
once), and the hidden-to-hidden weight gradient is one matrix product over all steps. Plain
Python (no TorchScript or ``torch.compile``): the matrix products dominate at paper scale, see
``kexue bench onlstm``.

Gate layout of the fused projections (``G = 2p + 4n`` outputs):
``[master forget (p) | master input (p) | forget (n) | input (n) | output (n) | cell (n)]``.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from kexue.errors import KexueError

MASTER_INPUT_FORMS = ("paper", "su")


def cumax(x: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """Cumulative softmax ``cumsum(softmax(x))``: monotonically rising from > 0 to 1 (up to rounding).

    Example: ``cumax(torch.zeros(4))`` -> ``[0.25, 0.5, 0.75, 1.0]``.
    """
    return torch.cumsum(torch.softmax(x, dim=dim), dim=dim)


def reverse_cumsum(x: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """``y_k = sum_{j >= k} x_j`` along ``dim`` (Su's cs<- operator)."""
    return torch.flip(torch.cumsum(torch.flip(x, (dim,)), dim=dim), (dim,))


class _ONLSTMRecurrence(torch.autograd.Function):
    """The recurrent loop of one ON-LSTM layer with a hand-written backward pass.

    Inputs: ``xproj`` (T, B, G) input projections incl. bias; ``weight_hh`` (G, n), already
    DropConnect-masked; ``h0``, ``c0`` (B, n); ``chunk`` size; ``master_input`` form.
    Outputs: ``H`` (T, B, n), ``h_T``, ``c_T`` (B, n), forget distances (T, B), input distances (T, B).
    """

    @staticmethod
    def forward(ctx, xproj, weight_hh, h0, c0, chunk: int, master_input: str):
        T, B, G = xproj.shape
        n = weight_hh.shape[1]
        p = n // chunk
        w_t = weight_hh.t()  # (n, G)
        H = xproj.new_empty(T + 1, B, n)  # H[0] = h0, H[t+1] = h_t
        C = xproj.new_empty(T + 1, B, n)
        TC = xproj.new_empty(T, B, n)  # tanh(c_t)
        FI = xproj.new_empty(T, B, 2, n)  # effective forget f^ and input i^ (official form)
        acts = xproj.new_empty(T, B, 4 * n)  # sigmoid/tanh of f, i, o, c^
        soft = xproj.new_empty(T, B, 2 * p)  # softmax of the master pre-activations
        masters = xproj.new_empty(T, B, 2 * p)  # f~, i~
        H[0], C[0] = h0, c0
        for t in range(T):
            g = torch.addmm(xproj[t], H[t], w_t)  # (B, G)
            s = soft[t].view(B, 2, p)  # softmax of both master pre-activations
            s.copy_(torch.softmax(g[:, : 2 * p].view(B, 2, p), -1))
            m = torch.cumsum(s, -1, out=masters[t].view(B, 2, p))  # eq. (9) for both rows
            m_i = m[:, 1]
            m_i.neg_().add_(1.0)  # paper, eq. (10): 1 - cumax
            if master_input == "su":
                m_i.add_(s[:, 1])  # reverse cumsum = 1 - cumsum + s
            a = acts[t]
            torch.sigmoid(g[:, 2 * p : 2 * p + 3 * n], out=a[:, : 3 * n])
            torch.tanh(g[:, 2 * p + 3 * n :], out=a[:, 3 * n :])
            fi = a[:, : 2 * n].view(B, 2, p, chunk)  # f, i
            mm = m.unsqueeze(-1)  # (B, 2, p, 1): f~, i~
            w = mm[:, :1] * mm[:, 1:]  # omega = f~ * i~, (B, 1, p, 1)
            fih = FI[t].view(B, 2, p, chunk)
            torch.addcmul(mm - w, fi, w, out=fih)  # f^ = f*w + (f~ - w), i^ = i*w + (i~ - w)
            c = C[t + 1].view(B, p, chunk)
            torch.mul(fih[:, 0], C[t].view(B, p, chunk), out=c)
            c.addcmul_(fih[:, 1], a[:, 3 * n :].view(B, p, chunk))  # c_t = f^ c_{t-1} + i^ c^
            torch.mul(torch.tanh(C[t + 1], out=TC[t]), a[:, 2 * n : 3 * n], out=H[t + 1])
        dist_f = 1.0 - masters[..., :p].mean(-1)  # (T, B): syntactic distance d_t
        dist_i = masters[..., p:].mean(-1)
        ctx.save_for_backward(weight_hh, H, C, TC, FI, acts, soft, masters)
        ctx.chunk, ctx.master_input = chunk, master_input
        ctx.mark_non_differentiable(dist_f, dist_i)
        return H[1:], H[T].clone(), C[T].clone(), dist_f, dist_i

    @staticmethod
    def backward(ctx, dH, dhT, dcT, _df, _di):
        weight_hh, H, C, TC, FI, acts, soft, masters = ctx.saved_tensors
        chunk, form = ctx.chunk, ctx.master_input
        T, B, n = dH.shape[0], H.shape[1], H.shape[2]
        p = n // chunk
        # Every factor that does not depend on the incoming gradient, for all steps at once.
        f, i, o, cc = (acts[..., k * n : (k + 1) * n].view(T, B, p, chunk) for k in range(4))
        c_prev, tc = C[:T].view(T, B, p, chunk), TC.view(T, B, p, chunk)
        mf = masters[..., :p].view(T, B, p, 1)
        mi = masters[..., p:].view(T, B, p, 1)
        w = mf * mi
        K = (o * (1 - tc * tc)).reshape(T, B, n)  # dc += dh * K
        gate_fi = torch.stack([c_prev * w * f * (1 - f), cc * w * i * (1 - i)], 2).view(T, B, 2, n)
        gate_o = (tc * o * (1 - o)).reshape(T, B, n)
        gate_c = (FI[:, :, 1].view(T, B, p, chunk) * (1 - cc * cc)).reshape(T, B, n)
        # d/d(f~), d/d(i~) summed over each chunk: dm = sum_C dc * A
        a_f = c_prev * (1 + mi * (f - 1)) + cc * mi * (i - 1)
        a_i = c_prev * mf * (f - 1) + cc * (1 + mf * (i - 1))
        A = torch.stack([a_f, -a_i if form == "paper" else a_i], 2)  # (T, B, 2, p, C)
        f_hat = FI[:, :, 0]
        dG = H.new_empty(T, B, 2 * p + 4 * n)
        dh = dhT.clone()
        dc = dcT.clone()
        for t in range(T - 1, -1, -1):
            dh += dH[t]
            dc.addcmul_(dh, K[t])
            dm = (dc.view(B, 1, p, chunk) * A[t]).sum(-1)  # (B, 2, p)
            if form == "paper":  # m_f = cumsum(s_f), m_i = 1 - cumsum(s_i): ds = +/- reverse cumsum
                ds = reverse_cumsum(dm)
            else:  # Su: m_i = reverse cumsum(s_i) -> ds_i = cumsum(dm_i)
                ds = torch.stack([reverse_cumsum(dm[:, 0]), torch.cumsum(dm[:, 1], -1)], 1)
            s = soft[t].view(B, 2, p)
            sds = s * ds
            g = dG[t]
            torch.mul(s, ds - sds.sum(-1, keepdim=True), out=g[:, : 2 * p].view(B, 2, p))  # softmax backward
            torch.mul(dc.unsqueeze(1), gate_fi[t], out=g[:, 2 * p : 2 * p + 2 * n].view(B, 2, n))
            torch.mul(dh, gate_o[t], out=g[:, 2 * p + 2 * n : 2 * p + 3 * n])
            torch.mul(dc, gate_c[t], out=g[:, 2 * p + 3 * n :])
            dh = g @ weight_hh  # (B, n)
            dc = dc * f_hat[t]
        d_weight = dG.reshape(T * B, -1).t() @ H[:T].reshape(T * B, n)  # (G, n), one product
        return dG, d_weight, dh, dc, None, None


class ONLSTMLayer(nn.Module):
    """One ON-LSTM layer over a whole sequence.

    Args:
        input_size: features of the input.
        hidden_size: ``n``; must be divisible by ``chunk_size``.
        chunk_size: units per level ``C``; the master gates have ``p = n / C`` levels.
        master_input: ``"paper"`` (1 - cumax) or ``"su"`` (reverse cumulative softmax).
        dropconnect: DropConnect rate on the hidden-to-hidden weight; one mask per forward
            pass (per batch of sequences), no rescaling in training and the weight times
            ``1 - dropconnect`` in evaluation, as the official code does.

    Example: ``ONLSTMLayer(8, 12, 3)(torch.randn(2, 5, 8))`` -> ``(out (2, 5, 12), (h, c), (d_f, d_i))``.
    """

    def __init__(
        self, input_size: int, hidden_size: int, chunk_size: int, master_input: str = "paper", dropconnect: float = 0.0
    ):
        super().__init__()
        if hidden_size % chunk_size:
            raise KexueError(f"hidden size {hidden_size} is not divisible by chunk size {chunk_size}")
        if master_input not in MASTER_INPUT_FORMS:
            raise KexueError(f"master_input must be one of {MASTER_INPUT_FORMS}, got {master_input!r}")
        if not 0.0 <= dropconnect < 1.0:
            raise KexueError(f"dropconnect must be in [0, 1), got {dropconnect}")
        self.input_size, self.hidden_size, self.chunk_size = input_size, hidden_size, chunk_size
        self.levels = hidden_size // chunk_size
        self.master_input, self.dropconnect = master_input, dropconnect
        gates = 2 * self.levels + 4 * hidden_size
        self.weight_ih = nn.Parameter(torch.empty(gates, input_size))
        self.weight_hh = nn.Parameter(torch.empty(gates, hidden_size))
        self.bias = nn.Parameter(torch.zeros(gates))
        bound = 1.0 / math.sqrt(hidden_size)
        nn.init.uniform_(self.weight_ih, -bound, bound)
        nn.init.uniform_(self.weight_hh, -bound, bound)

    def recurrent_weight(self, generator: torch.Generator | None = None) -> torch.Tensor:
        """The hidden-to-hidden weight after DropConnect (training) or its expectation (eval)."""
        if not self.dropconnect:
            return self.weight_hh
        if not self.training:
            return self.weight_hh * (1.0 - self.dropconnect)
        keep = torch.rand(self.weight_hh.shape, generator=generator, device=self.weight_hh.device)
        return self.weight_hh * (keep >= self.dropconnect).to(self.weight_hh.dtype)

    def forward(
        self,
        x: torch.Tensor,
        state: tuple[torch.Tensor, torch.Tensor] | None = None,
        generator: torch.Generator | None = None,
    ):
        """Run the layer.

        Args:
            x: (B, T, input_size).
            state: ``(h, c)``, each (B, n); zeros when None.
            generator: random source of the DropConnect mask.
        Returns:
            ``out`` (B, T, n), ``(h_T, c_T)``, ``(dist_forget, dist_input)`` each (B, T), where
            ``dist_forget = 1 - mean_k f~_t(k)`` is the syntactic distance of each token.
        """
        B, T, _ = x.shape
        if state is None:
            zeros = x.new_zeros(B, self.hidden_size)
            state = (zeros, zeros)
        # All input projections in one product: (T, B, G).
        xproj = torch.addmm(self.bias, x.transpose(0, 1).reshape(T * B, -1), self.weight_ih.t()).view(T, B, -1)
        out, h, c, d_f, d_i = _ONLSTMRecurrence.apply(
            xproj, self.recurrent_weight(generator), state[0], state[1], self.chunk_size, self.master_input
        )
        return out.transpose(0, 1), (h, c), (d_f.t(), d_i.t())


class ONLSTM(nn.Module):
    """A stack of ON-LSTM layers (no dropout between them; the LM adds its own).

    Example: ``ONLSTM(8, [12, 12], 3)(x)`` -> ``(out, states, distances)`` with one entry per layer.
    """

    def __init__(
        self,
        input_size: int,
        hidden_sizes: list[int],
        chunk_size: int,
        master_input: str = "paper",
        dropconnect: float = 0.0,
    ):
        super().__init__()
        sizes = [input_size, *hidden_sizes]
        self.layers = nn.ModuleList(
            ONLSTMLayer(sizes[k], sizes[k + 1], chunk_size, master_input, dropconnect) for k in range(len(hidden_sizes))
        )

    def forward(self, x, states=None, generator=None):
        states = states or [None] * len(self.layers)
        new_states, distances = [], []
        for layer, state in zip(self.layers, states):
            x, s, d = layer(x, state, generator)
            new_states.append(s)
            distances.append(d)
        return x, new_states, distances
