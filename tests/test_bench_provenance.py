"""Where benchmark figures come from: commands derived from the call, measured machine facts beside
the figures, ``published`` only for numbers from papers, and the committed rows held to the same rules."""

import ast
import importlib.util
import json
from pathlib import Path

import pytest

from kexue.cli import main
from kexue.provenance import command_line

ROOT = Path(__file__).resolve().parents[1]
TINY_ONLSTM = {
    "input_size": 4,
    "hidden": 8,
    "layers": 1,
    "chunk_size": 4,
    "batch": 2,
    "bptt": 3,
    "rounds": 1,
    "threads": 1,
}
MACHINE_KEYS = {"cpu", "cores", "torch_threads", "load_average_1m", "torch", "python", "gpu"}
UNMEASURED = ("2-core", "shared machine", "shared with other jobs", "shared 2")


def _load_fix_script():
    spec = importlib.util.spec_from_file_location("fix_provenance", ROOT / "benchmarks" / "fix_provenance.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_committed_bench_rows_are_already_what_the_rules_give():
    """benchmarks/fix_provenance.py has nothing left to change: every committed bench row's command is
    the one command_line derives from the recorded call, and no internal target sits in `published`."""
    fix = _load_fix_script()
    assert fix.planned() == {}
    onlstm = json.loads((ROOT / "benchmarks/results/onlstm.json").read_text())
    speed = {k: v for k, v in onlstm.items() if k.startswith("onlstm.speed.")}
    assert speed and all(v["published"] is None and v["source"] is None for v in speed.values())
    assert {v["command"] for v in speed.values()} == {"kexue bench onlstm --rounds 7 --threads 1"}
    repetition = json.loads((ROOT / "benchmarks/results/repetition.json").read_text())
    assert {v["command"] for v in repetition.values()} == {"kexue bench repetition"}


def test_no_results_or_details_file_claims_an_unmeasured_machine():
    for path in (ROOT / "benchmarks" / "results").rglob("*.json"):
        text = path.read_text(encoding="utf-8").lower()
        assert not any(phrase in text for phrase in UNMEASURED), path


def test_bench_onlstm_rows_and_details(tmp_path):
    from kexue.bench.onlstm import onlstm

    results, details = tmp_path / "res.json", tmp_path / "timings.json"
    main(
        [
            "bench",
            "onlstm",
            *(f"--{k}={v}" for k, v in TINY_ONLSTM.items()),
            "--out",
            str(tmp_path / "run"),
            "--results",
            str(results),
            "--details",
            str(details),
        ]
    )
    rows = json.loads(results.read_text())
    command = command_line("bench onlstm", onlstm, TINY_ONLSTM)
    assert command == (
        "kexue bench onlstm --input_size 4 --hidden 8 --layers 1 --chunk_size 4 --batch 2 --bptt 3 "
        "--rounds 1 --threads 1"
    )
    assert all(r["command"] == command and r["published"] is None and r["source"] is None for r in rows.values())
    timings = json.loads(details.read_text())
    assert timings == json.loads((tmp_path / "run" / "timings.json").read_text())
    assert set(timings["machine"]) == MACHINE_KEYS and timings["machine"]["torch_threads"] == 1
    assert timings["targets"]["ratio_vs_nn_lstm"]["at_most"] == 2.0
    for f in (tmp_path / "run").iterdir():
        assert not any(p in f.read_text(encoding="utf-8").lower() for p in UNMEASURED), f


def test_bench_repetition_command_and_machine(tmp_path, monkeypatch):
    import kexue.bench.repetition as bench_repetition
    from kexue.recipes.repetition import check_claims, study_level

    def tiny_study(quick, seed):
        sentences = [s.split() for s in ["the cat sat on the mat", "a dog sat on the log", "the dog and a cat"]] * 3
        res = study_level(sentences, ["sample", "top_p:0.9", "top_k:10", "greedy"])
        res.pop("chain")
        res.pop("by_token")
        detail = {
            "quick": quick,
            "seed": seed,
            "levels": {"word": res},
            "mc": {"random": [{"rel_error": 0.01, "z": 0.5, "rel_stderr": 0.01}], "corpus": []},
        }
        detail["claims"] = check_claims(detail)
        return detail

    monkeypatch.setattr(bench_repetition, "run_study", tiny_study)
    main(["bench", "repetition", "--quick", "--seed", "3", "--out", str(tmp_path / "run")])
    rows = json.loads((tmp_path / "run" / "results.json").read_text())
    assert {r["command"] for r in rows.values()} == {"kexue bench repetition --quick --seed 3"}
    detail = json.loads((tmp_path / "run" / "detail.json").read_text())
    assert set(detail["machine"]) == MACHINE_KEYS and "note" not in detail


def test_reproduce_section_commands_come_from_the_bench_signature():
    from kexue.bench.repetition import repetition

    assert command_line("bench repetition", repetition, {"quick": True}) == "kexue bench repetition --quick"
    assert command_line("bench repetition", repetition, {"quick": False}) == "kexue bench repetition"


def test_the_report_prints_the_machine_it_measured(tmp_path):
    from kexue.reproduce.report import SectionResult, write_report
    from kexue.results import Figure

    facts = {
        "cpu": "Test CPU 9000",
        "cores": 7,
        "torch_threads": 3,
        "load_average_1m": 0.25,
        "torch": "2.x",
        "python": "3.x",
        "gpu": None,
    }
    section = SectionResult("x", "1. X (kexue.fm/archives/1)", [Figure("x.a", 1.0, None, None, "kexue x")])
    report = write_report(tmp_path, [section], "quick", facts).read_text()
    assert "Test CPU 9000, 7 cores, 3 torch threads, load 0.25, torch 2.x" in report
    measured = write_report(tmp_path, [section], "quick").read_text()  # measured now when not given
    assert "Machine (measured at the start):" in measured and "cores" in measured and "torch thread" in measured


MODULES = [
    "bench/decoding.py",
    "bench/nystrom.py",
    "bench/onlstm.py",
    "bench/repetition.py",
    "bench/common.py",
    "recipes/repetition.py",
    "reproduce/__init__.py",
    "reproduce/report.py",
    "reproduce/repetition.py",
]


@pytest.mark.parametrize("module", MODULES)
def test_no_hand_assembled_command_strings(module):
    """No string (or f-string) in code that starts like a command line: commands come from command_line."""
    tree = ast.parse((ROOT / "src" / "kexue" / module).read_text(encoding="utf-8"))
    docstrings = {
        id(n.body[0].value)
        for n in ast.walk(tree)
        if isinstance(n, (ast.Module, ast.FunctionDef, ast.ClassDef))
        and n.body
        and isinstance(n.body[0], ast.Expr)
        and isinstance(n.body[0].value, ast.Constant)
    }
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings:
            assert not node.value.lstrip().startswith("kexue "), f"{module}:{node.lineno}: {node.value!r}"
        if isinstance(node, ast.JoinedStr) and node.values and isinstance(node.values[0], ast.Constant):
            assert not str(node.values[0].value).lstrip().startswith("kexue "), f"{module}:{node.lineno}"


def _load_pin_script():
    spec = importlib.util.spec_from_file_location("pin_default", ROOT / "benchmarks" / "pin_default.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_a_changed_default_is_pinned_into_the_committed_rows_measured_under_it(capsys):
    """benchmarks/pin_default.py: a row's command names only non-default flags, so when a default changes
    the rows measured under the old one get it, once; the pinned command is what command_line derives today."""
    from dataclasses import fields, replace

    from kexue.recipes.vae_cluster import DEFAULT_SETTINGS, VAEClusterConfig, preset_settings, run_study

    pin = _load_pin_script()
    anchor, release = pin.CHANGES["anchor-2026-12-02"], pin.CHANGES["anchor-epochs-2026-12-03"]
    names = [f.name for f in fields(VAEClusterConfig)]
    assert names[-2:] == ["anchor_epochs", "anchor"]  # pin() follows the class's order
    assert release.later == ("--settings.anchor",) and not anchor.later
    study = "kexue vae-cluster study --data m --seeds 0"
    assert pin.pin(f"{study} --settings.epochs 3 --pretrained r", anchor) == (
        f"{study} --settings.epochs 3 --settings.anchor 0.0 --pretrained r"
    )
    assert pin.pin(f"{study} --preset su2018", anchor) == f"{study} --settings.anchor 0.0 --preset su2018"
    assert pin.pin(f"{study} --jobs 2", anchor) == f"{study} --settings.anchor 0.0 --jobs 2"
    assert pin.pin(study, anchor) == f"{study} --settings.anchor 0.0"
    named = f"{study} --settings.anchor 10.0"
    assert pin.pin(named, anchor) == named and pin.pin("kexue vae-cluster eval --run r", anchor).endswith("--run r")
    # the release goes before a named anchor, after the other settings; a row without the anchor keeps its command
    assert pin.pin(f"{study} --settings.epochs 3 --settings.anchor 10.0 --pretrained r", release) == (
        f"{study} --settings.epochs 3 --settings.anchor_epochs null --settings.anchor 10.0 --pretrained r"
    )
    assert pin.pin(f"{study} --settings.epochs 3 --jobs 2", release) == (
        f"{study} --settings.epochs 3 --settings.anchor_epochs null --jobs 2"
    )
    assert pin.pin(f"{study} --jobs 2", release) == f"{study} --settings.anchor_epochs null --jobs 2"
    for moot in (f"{study} --settings.anchor 0.0 --preset su2018", f"{study} --settings.anchor_epochs 3"):
        assert pin.pin(moot, release) == moot
    # applied once: the ledger lists the rows pinned, and each still measured as then names the flag
    assert pin.main(["--check"]) == 0 and capsys.readouterr().out == ""
    ledger = json.loads(pin.LEDGER.read_text())
    assert set(ledger["anchor-2026-12-02"]) == set(anchor.files)
    assert sum(map(len, ledger["anchor-2026-12-02"].values())) == 310
    pinned = {file: set(keys) for file, keys in ledger["anchor-epochs-2026-12-03"].items()}
    results = {f: json.loads((ROOT / "benchmarks/results" / f).read_text()) for f in pinned}
    assert pinned["vae_ablation.json"] == {
        k for k in results["vae_ablation.json"] if k.startswith("vae_ablation.anchor.")
    }
    assert pinned["vae_release.json"] == {k for k in results["vae_release.json"] if k.startswith("vae_release.held.")}
    assert pinned["reproduce_quick.json"] == {k for k in results["reproduce_quick.json"] if k.startswith("vae.digits.")}
    assert pinned["vae_cluster.json"] == {f"vae.{d}.{m}" for d in ("mnist5k", "fashion_mnist") for m in [
        k.split(".", 2)[2] for k in results["vae_cluster.json"] if k.startswith("vae.mnist5k.")]}  # fmt: skip
    held = command_line(
        "vae-cluster study",
        run_study,
        {"data": "mnist5k", "seeds": "0,1,2,3,4", "settings": replace(DEFAULT_SETTINGS, anchor_epochs=None), "jobs": 2},
        keep=("data", "seeds"),
    )
    assert results["vae_release.json"]["vae_release.held.mnist5k.acc_hungarian"]["command"] == held
    # every results file with vae-cluster rows is in the change, or none of its rows is affected by it
    for path in sorted((ROOT / "benchmarks/results").glob("*.json")):
        rows = json.loads(path.read_text())
        commands = [r["command"] for r in rows.values() if isinstance(r, dict) and "command" in r]
        affected = [c for c in commands if pin.pin(c, release) != c]
        assert path.name in release.files or not affected, f"{path.name}: {affected[:1]}"
    rows = json.loads((ROOT / "benchmarks/results/vae_cluster.json").read_text())
    today = command_line(
        "vae-cluster study",
        run_study,
        {"data": "mnist5k", "seeds": "0,1,2", "settings": preset_settings("su2018"), "preset": "su2018"},
        keep=("data", "seeds"),
    )
    assert rows["vae.su2018.mnist5k.acc_hungarian"]["command"] == today


def test_a_pinned_row_that_a_new_measurement_replaced_is_not_checked(tmp_path, monkeypatch):
    """pin_default --check: a pinned row stripped of its flag is a problem; one replaced by a new measurement
    (its other flags changed, even at the same value) or with a new value is not."""
    pin = _load_pin_script()
    monkeypatch.setattr(pin, "RESULTS", tmp_path)
    flag = "--settings.anchor_epochs"
    then = "kexue vae-cluster study --data m --seeds 0 --settings.anchor_epochs null"
    rows = {
        "stripped": {"value": 0.5, "command": "kexue vae-cluster study --data m --seeds 0"},
        "replaced": {"value": 0.5, "command": "kexue vae-cluster study --data m --seeds 0 --pretrained r"},
        "remeasured": {"value": 0.7, "command": "kexue vae-cluster study --data m --seeds 0"},
        "kept": {"value": 0.5, "command": then},
    }
    (tmp_path / "r.json").write_text(json.dumps({k: {**r, "published": None, "source": None} for k, r in rows.items()}))
    ledger = {"r.json": {k: {"value": 0.5, "command": then} for k in rows} | {"gone": {"value": 0.1, "command": then}}}
    rows["renamed"] = {"value": 0.5, "command": then.replace("null", "3")}  # names the flag, not its old value
    (tmp_path / "r.json").write_text(json.dumps({k: {**r, "published": None, "source": None} for k, r in rows.items()}))
    ledger["r.json"]["renamed"] = {"value": 0.5, "command": then}
    assert pin.problems("anchor-epochs-2026-12-03", ledger) == [
        f"r.json: {key} no longer names {flag} null" for key in ("stripped", "renamed")
    ]
