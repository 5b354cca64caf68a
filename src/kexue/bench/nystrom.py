"""``kexue bench nystrom``: time, peak memory and error of Nyström attention against exact
attention and two public implementations, side by side in one process.

Methods
    exact        PyTorch ``scaled_dot_product_attention`` (on CPU its fused flash kernel, which
                 never stores the n × n matrix); also ``exact-naive``, softmax(QKᵀ/√d)·V written
                 out, the baseline the paper's Table 1 measures, for memory only.
    lucidrains   ``nystrom_attention.NystromAttention`` (PyPI ``nystrom-attention``).
    hf           ``transformers`` ``NystromformerSelfAttention``.
    ours         :func:`kexue.nn.nystrom.nystrom_attention` / :class:`NystromAttention`.

Core vs layer. The *core* is attention given q, k, v. The peers have no separate core routine,
so their own ``forward`` is run with the projections replaced by zero-cost slicing views: the
input is the concatenation ``[q | k | v]`` of shape (B, n, 3·512) and ``to_qkv`` / ``query``,
``key``, ``value`` just take their slice (``to_out`` is the identity). Everything the peer
computes between projections is therefore timed, and nothing else. The *layer* adds each
method's own q/k/v and output projections (hf has no output projection in its self-attention
module, so one ``nn.Linear`` is added). No conv skip anywhere (equal work).

Time: minimum over ``repeats`` runs after one warm-up (a run longer than 3 s is timed once);
forward under ``torch.no_grad``; forward + backward with gradients for the inputs (core) or
the parameters (layer). Memory: peak of the bytes held by tensors allocated through PyTorch's
CPU allocator during one call, above what was held before it (``torch.profiler`` with
``profile_memory``; kernels' scratch tensors are counted, raw mallocs inside BLAS are not).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from kexue.analysis.attention import DIM, HEADS, core_functions, relative_errors
from kexue.analysis.attention import call_core as _call  # noqa: F401 (tests/test_bench_nystrom.py imports it here)
from kexue.analysis.attention import hf_nystrom as _hf
from kexue.analysis.attention import lucidrains_nystrom as _lucidrains
from kexue.analysis.attention import pack_qkv as _packed
from kexue.bench.common import copy_file
from kexue.checks import check_new_run_dir, check_results_file, require_modules
from kexue.io import check_output_file, make_run_dir, save_figure, write_json
from kexue.nn.nystrom import ExactAttention, NystromAttention
from kexue.params import PositiveInt, check, set_threads
from kexue.progress import progress
from kexue.provenance import command_line, describe_machine, machine_facts
from kexue.results import Figure, write_results

PAPER = "Xiong et al. 2021, Table 1 (one attention module, GTX 1080Ti, n=8192, m=64)"


def layer_modules(n: int, m: int) -> dict[str, nn.Module]:
    """Each method's whole layer (q/k/v and output projections), (B, n, dim) -> (B, n, dim)."""
    return {
        "exact": ExactAttention(DIM, HEADS),
        "lucidrains": _lucidrains(m, core=False),
        "hf": _hf(n, m, core=False),
        "ours": NystromAttention(DIM, HEADS, num_landmarks=m),
    }


def peak_memory(fn: Callable[[], object]) -> int:
    """Peak bytes of PyTorch CPU tensors allocated during ``fn()`` above the level before it."""
    from torch.profiler import ProfilerActivity, profile

    os.environ.setdefault("KINETO_LOG_LEVEL", "6")  # kineto prints two USDT lines per profile otherwise
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        out = fn()
        del out
    events = sorted((e.start_ns(), e.nbytes()) for e in prof.profiler.kineto_results.events() if e.name() == "[memory]")
    level = peak = 0
    for _, nbytes in events:
        level += nbytes
        peak = max(peak, level)
    return peak


def best_time(fn: Callable[[], object], repeats: int) -> float:
    """Minimum wall time over ``repeats`` runs after one warm-up (one timed run if it takes > 3 s)."""
    t0 = time.perf_counter()
    fn()
    first = time.perf_counter() - t0
    if first > 3.0:
        return first
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def _qkv(n: int, seed: int, scale: float = 1.0) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(seed)
    return tuple(torch.randn(1, HEADS, n, DIM // HEADS, generator=g) * scale for _ in range(3))


def measure_core(n: int, m: int, repeats: int) -> dict[str, dict[str, float]]:
    """Forward / forward+backward seconds and peak bytes of each method's core at length n."""
    out: dict[str, dict[str, float]] = {}
    q, k, v = _qkv(n, seed=n)
    packed = _packed(q, k, v)
    grad = torch.randn(1, n, DIM, generator=torch.Generator().manual_seed(1))
    for name, (fn, layout) in core_functions(n, m).items():
        args = (q, k, v) if layout == "heads" else (packed,)
        leaves = [a.detach().clone().requires_grad_() for a in args]

        def forward(fn=fn, args=args):
            with torch.no_grad():
                return fn(*args)

        def forward_backward(fn=fn, leaves=leaves):
            for a in leaves:
                a.grad = None
            fn(*leaves).backward(grad)

        out[name] = {
            "fwd_s": best_time(forward, repeats),
            "fwdbwd_s": best_time(forward_backward, repeats),
            "fwd_bytes": peak_memory(forward),
            "fwdbwd_bytes": peak_memory(forward_backward),
        }
    # the paper's exact baseline stores the (B, H, n, n) matrix; measured for memory only
    naive = lambda: torch.softmax(q @ k.transpose(-1, -2) * (DIM // HEADS) ** -0.5, dim=-1) @ v
    with torch.no_grad():
        out["exact-naive"] = {"fwd_bytes": peak_memory(naive)}
    return out


def measure_layer(n: int, m: int, repeats: int) -> dict[str, dict[str, float]]:
    """Forward / forward+backward seconds of each method's whole layer at length n."""
    torch.manual_seed(0)
    x = torch.randn(1, n, DIM, generator=torch.Generator().manual_seed(n))
    out: dict[str, dict[str, float]] = {}
    for name, layer in layer_modules(n, m).items():

        def forward(layer=layer):
            with torch.no_grad():
                return layer(x)

        def forward_backward(layer=layer):
            layer.zero_grad(set_to_none=True)
            layer(x).sum().backward()

        out[name] = {"fwd_s": best_time(forward, repeats), "fwdbwd_s": best_time(forward_backward, repeats)}
    return out


def _plot_errors(errors: dict[int, dict[int, dict[str, float]]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    landmarks = sorted({m for per_n in errors.values() for m in per_n})
    fig, axes = plt.subplots(1, len(landmarks), figsize=(3.2 * len(landmarks), 3.2), sharey=True)
    for ax, m in zip(axes if len(landmarks) > 1 else [axes], landmarks):
        ns = sorted(n for n in errors if m in errors[n])
        for name, style in (("ours", "o-"), ("lucidrains", "s--"), ("hf", "^:")):
            ax.plot(ns, [errors[n][m][name] for n in ns], style, label=name)
        ax.set_xscale("log", base=2)
        ax.set_title(f"m = {m}")
        ax.set_xlabel("sequence length n")
    axes_list = axes if len(landmarks) > 1 else [axes]
    axes_list[0].set_ylabel("‖Ŷ − Y‖ / ‖Y‖ vs exact")
    axes_list[0].legend()
    fig.suptitle("Nyström attention: relative error against exact softmax attention (random q, k, v)", y=1.04)
    save_figure(fig, path)


def _plot_times(core: dict[int, dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ns = sorted(core)
    fig, axes = plt.subplots(1, 2, figsize=(8, 3.2))
    for ax, key, title in ((axes[0], "fwd_s", "core forward"), (axes[1], "fwdbwd_s", "core forward + backward")):
        for name, style in (("exact", "k-"), ("ours", "o-"), ("lucidrains", "s--"), ("hf", "^:")):
            ax.plot(ns, [core[n][name][key] for n in ns], style, label=name)
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("sequence length n")
        ax.set_ylabel("seconds")
        ax.set_title(title)
    axes[0].legend()
    save_figure(fig, path)


def nystrom(
    quick: bool = False,
    lengths: list[PositiveInt] | None = None,
    error_lengths: list[PositiveInt] | None = None,
    error_landmarks: list[PositiveInt] | None = None,
    num_landmarks: PositiveInt = 64,
    repeats: PositiveInt = 3,
    threads: PositiveInt | None = None,
    out: Path | None = None,
    overwrite: bool = False,
    results: Path | None = None,
    details: Path | None = None,
    error_figure: Path | None = None,
    time_figure: Path | None = None,
) -> Path:
    """Benchmark Nyström attention against exact attention and the public implementations.

    Writes into the run folder ``out``: ``results.json`` (results schema), ``details.json`` (every
    measurement) and the plots ``error.png`` and ``time.png``. Nothing outside it unless named:
    ``results`` merges the figures into that results JSON; ``details``, ``error_figure`` and
    ``time_figure`` copy the details and plots there (the committed run:
    ``--results benchmarks/results/nystrom.json --details benchmarks/results/nystrom_details.json
    --error_figure benchmarks/results/nystrom_error.png --time_figure benchmarks/results/nystrom_time.png``).

    Args:
        quick: small sizes (n up to 2048, errors up to 1024, one repeat) that finish in a few minutes.
        lengths: sequence lengths for time and memory (default 1024 … 16384); multiples of ``num_landmarks``.
        error_lengths: sequence lengths of the error study (default 512 … 8192); multiples of every
            error landmark count (the hf peer splits n into m equal segments).
        error_landmarks: landmark counts of the error study (default 16, 32, 64, 128).
        num_landmarks: m for time and memory (64 as in the paper).
        repeats: timed runs per measurement (the minimum is kept).
        threads: torch CPU threads for every method (default: torch's). On a machine shared with
            other jobs, 1 avoids the thread wake-ups that otherwise dominate small kernels.
        out: run folder (default runs/bench-nystrom-<time>/).
        overwrite: replace an existing run folder ``out``.
        results: also merge the figures into this results JSON (e.g. benchmarks/results/nystrom.json).
        details: also copy the details JSON here.
        error_figure: also copy the error plot (PNG) here.
        time_figure: also copy the timing plot (PNG) here.
    Returns:
        The path of the run's results.json.
    """
    config = dict(locals())  # the parameters as given: config.yaml reruns the same benchmark
    check(lengths is None or len(lengths) > 0, "--lengths names no length")
    check(error_lengths is None or len(error_lengths) > 0, "--error_lengths names no length")
    check(error_landmarks is None or len(error_landmarks) > 0, "--error_landmarks names no landmark count")
    lengths = lengths or ([1024, 2048] if quick else [1024, 2048, 4096, 8192, 16384])
    error_lengths = error_lengths or ([512, 1024] if quick else [512, 1024, 2048, 4096, 8192])
    error_landmarks = error_landmarks or [16, 32, 64, 128]
    bad = [n for n in lengths if n % num_landmarks]
    check(not bad, f"--lengths {bad} are not multiples of --num_landmarks {num_landmarks}")
    bad = [(n, m) for n in error_lengths for m in error_landmarks if n % m]
    check(
        not bad,
        "every --error_lengths value must be a multiple of every --error_landmarks value; "
        f"not so for (n, m) = {', '.join(map(str, bad[:3]))}",
    )
    check_new_run_dir(out, overwrite)
    check_results_file(results)
    for path, flag in ((details, "--details"), (error_figure, "--error_figure"), (time_figure, "--time_figure")):
        check_output_file(path, flag)
    require_modules(("nystrom_attention", "pip install 'kexue[peers]'"), ("transformers", "pip install 'kexue[hf]'"))
    out = make_run_dir(out, "bench-nystrom", config, overwrite=overwrite)
    repeats = 1 if quick else repeats
    set_threads(threads)
    command = command_line("bench nystrom", nystrom, config)
    details_data: dict = {
        "machine": machine_facts(),
        "command": command,
        "torch": torch.__version__,
        "dim": DIM,
        "heads": HEADS,
        "num_landmarks": num_landmarks,
        "batch": 1,
        "core": {},
        "layer": {},
        "errors": {},
    }

    for n in progress(lengths, desc="time/memory"):
        details_data["core"][n] = measure_core(n, num_landmarks, repeats)
        details_data["layer"][n] = measure_layer(n, num_landmarks, repeats)
    for n in progress(error_lengths, desc="error"):
        details_data["errors"][n] = relative_errors(n, error_landmarks, *_qkv(n, seed=10_000 + n))

    figures: list[Figure] = []
    for n in lengths:
        core, layer = details_data["core"][n], details_data["layer"][n]
        peers = ("lucidrains", "hf")
        best_peer = min(peers, key=lambda p: core[p]["fwd_s"])
        p = f"nystrom.n{n}"
        pub = n == 8192
        figures += [
            Figure(
                f"{p}.core_speedup_vs_exact",
                core["exact"]["fwd_s"] / core["ours"]["fwd_s"],
                12.7 if pub else None,
                PAPER if pub else None,
                command,
            ),
            Figure(f"{p}.core_speedup_vs_best_peer", core[best_peer]["fwd_s"] / core["ours"]["fwd_s"], command=command),
            Figure(
                f"{p}.core_fwdbwd_speedup_vs_exact",
                core["exact"]["fwdbwd_s"] / core["ours"]["fwdbwd_s"],
                command=command,
            ),
            Figure(
                f"{p}.core_fwdbwd_speedup_vs_best_peer",
                min(core[q]["fwdbwd_s"] for q in peers) / core["ours"]["fwdbwd_s"],
                command=command,
            ),
            Figure(
                f"{p}.core_memory_ratio_vs_exact",
                core["ours"]["fwd_bytes"] / core["exact"]["fwd_bytes"],
                round(450 / 10233, 4) if pub else None,
                PAPER if pub else None,
                command,
            ),
            Figure(
                f"{p}.core_memory_ratio_vs_naive_exact",
                core["ours"]["fwd_bytes"] / core["exact-naive"]["fwd_bytes"],
                round(450 / 10233, 4) if pub else None,
                PAPER if pub else None,
                command,
            ),
            Figure(
                f"{p}.core_fwdbwd_memory_ratio_vs_exact",
                core["ours"]["fwdbwd_bytes"] / core["exact"]["fwdbwd_bytes"],
                command=command,
            ),
            Figure(f"{p}.layer_speedup_vs_exact", layer["exact"]["fwd_s"] / layer["ours"]["fwd_s"], command=command),
            Figure(
                f"{p}.layer_speedup_vs_best_peer",
                min(layer[q]["fwd_s"] for q in peers) / layer["ours"]["fwd_s"],
                command=command,
            ),
            Figure(
                f"{p}.layer_fwdbwd_speedup_vs_exact",
                layer["exact"]["fwdbwd_s"] / layer["ours"]["fwdbwd_s"],
                command=command,
            ),
            Figure(f"{p}.core_fwd_seconds_ours", core["ours"]["fwd_s"], command=command),
            Figure(f"{p}.core_fwd_seconds_exact", core["exact"]["fwd_s"], command=command),
        ]
        details_data["core"][n]["best_peer"] = best_peer
    for n, per_m in details_data["errors"].items():
        if num_landmarks in per_m:
            errs = per_m[num_landmarks]
            best_peer = details_data["core"].get(n, {}).get("best_peer") or min(("lucidrains", "hf"), key=errs.get)
            figures += [
                Figure(f"nystrom.n{n}.rel_error", errs["ours"], command=command),
                Figure(f"nystrom.n{n}.best_peer_rel_error", errs[best_peer], command=command),
            ]

    path = write_results(out / "results.json", figures)
    write_json(out / "details.json", _jsonable(details_data))
    _plot_errors(details_data["errors"], out / "error.png")
    _plot_times(details_data["core"], out / "time.png")
    if results is not None:
        write_results(results, figures, merge=True)
    for src, dst in (
        (out / "details.json", details),
        (out / "error.png", error_figure),
        (out / "time.png", time_figure),
    ):
        if dst is not None:
            copy_file(src, dst)

    print(f"{'n':>6} {'scope':>6} {'method':>10} {'fwd s':>9} {'fwd+bwd s':>10} {'fwd MB':>8}")
    for n in lengths:
        for scope in ("core", "layer"):
            for name, r in details_data[scope][n].items():
                if isinstance(r, dict) and "fwd_s" in r:
                    mb = f"{r['fwd_bytes'] / 2**20:8.1f}" if "fwd_bytes" in r else f"{'':>8}"
                    print(f"{n:>6} {scope:>6} {name:>10} {r['fwd_s']:9.4f} {r['fwdbwd_s']:10.4f} {mb}")
    for f in figures:
        if f.key.startswith(f"nystrom.n{max(lengths)}.") or f.key.endswith("rel_error"):
            print(f"{f.key} = {f.value:.4g}")
    written = [p for p in (results, details, error_figure, time_figure) if p is not None]
    print(f"measured on {describe_machine(details_data['machine'])}")
    print(f"wrote {out}" + (f" and {', '.join(map(str, written))}" if written else ""))
    return path


def _jsonable(obj):
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    return obj
