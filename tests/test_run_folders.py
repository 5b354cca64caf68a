"""Faults found at the level of the shared pieces: run folders, checkpoints, the loop, the CLI."""

import os
import subprocess
import sys

import pytest
import torch

from kexue.errors import KexueError
from kexue.io import (
    check_output_dir,
    check_output_file,
    clean_temporaries,
    discard_failed_runs,
    forget_created_runs,
    make_run_dir,
    read_json,
    read_text,
    read_yaml,
    run_config,
    write_json,
)
from kexue.training import TensorBatches, TrainConfig, fit
from kexue.training.checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint
from kexue.training.logging import read_metrics


def _problem():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(96, 6, generator=g)
    return x, (x[:, :3].sum(1) > 0).long()


def _model():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(6, 16), torch.nn.ReLU(), torch.nn.Linear(16, 2))


def _loss(m, batch, g):
    x, y = batch
    return torch.nn.functional.cross_entropy(m(x + 0.01 * torch.randn(x.shape, generator=g)), y), {}


CFG = dict(steps=20, lr=3e-3, schedule="cosine", warmup_steps=3, clip_norm=1.0, progress=False, log_every=3)


def _fit(out, resume=False, until=None, **kw):
    x, y = _problem()
    model = _model()
    result = fit(
        model,
        _loss,
        TensorBatches(x, y, batch_size=16, seed=1),
        TrainConfig(**{**CFG, **kw}),
        out,
        resume=resume,
        until=until,
    )
    return model, result


# ---- fault 1: a checkpoint is never pruned right after it is written; resume never restarts silently


def test_checkpoint_just_written_survives_higher_numbered_ones(tmp_path):
    _fit(tmp_path, steps=30, ckpt_every=10)  # leaves step-000020 and step-000030
    _fit(tmp_path, steps=10, ckpt_every=5)  # a shorter run in the same folder
    ckpts = tmp_path / "checkpoints"
    names = sorted(p.name for p in ckpts.glob("step-*"))
    assert names == ["step-000005", "step-000010"]  # the stale later ones are gone, not the new
    assert latest_checkpoint(ckpts).name == "step-000010"
    model, result = _fit(tmp_path, steps=15, ckpt_every=5, resume=True)
    assert result.step == 15
    assert [r["step"] for r in read_metrics(tmp_path / "metrics.jsonl") if r["split"] == "train"][-1] == 15


def test_resume_with_nothing_to_resume_is_an_error(tmp_path):
    with pytest.raises(KexueError, match="no checkpoint to resume"):
        _fit(tmp_path, resume=True)


def test_latest_naming_a_missing_checkpoint_falls_back_with_a_warning(tmp_path, capsys):
    _fit(tmp_path, ckpt_every=5, until=10)
    (tmp_path / "checkpoints" / "latest").write_text("step-000099\n")
    assert latest_checkpoint(tmp_path / "checkpoints").name == "step-000010"
    assert "step-000099" in capsys.readouterr().err
    _, result = _fit(tmp_path, ckpt_every=5, resume=True)
    assert result.step == 20


def test_corrupt_state_file_is_one_line(tmp_path):
    _fit(tmp_path, ckpt_every=5, until=5)
    (latest_checkpoint(tmp_path / "checkpoints") / "state.pt").write_bytes(os.urandom(256))
    with pytest.raises(KexueError, match="cannot read checkpoint state"):
        _fit(tmp_path, resume=True)


# ---- fault 3: a resume compares configs and writes nothing until the check passes


def test_resume_refuses_a_model_change_and_leaves_config_untouched(tmp_path, capsys):
    run = make_run_dir(tmp_path / "r", "lm-train", {"dim": 16, "lr": 0.01, "steps": 10})
    with pytest.raises(KexueError, match="holds no checkpoint"):  # nothing trained yet: nothing to resume
        make_run_dir(run, "lm-train", {"dim": 16, "lr": 0.01, "steps": 10}, resume=True)
    _fit(run, until=5, ckpt_every=5)
    before = (run / "config.yaml").read_text()
    with pytest.raises(KexueError, match=r"dim 16 -> 32"):
        make_run_dir(run, "lm-train", {"dim": 32, "lr": 0.01, "steps": 10}, resume=True)
    assert (run / "config.yaml").read_text() == before
    with pytest.raises(KexueError, match="is a `lm-train` run, not `onlstm-train`"):
        make_run_dir(run, "onlstm-train", {"dim": 16, "lr": 0.01, "steps": 10}, resume=True)
    make_run_dir(run, "lm-train", {"dim": 16, "lr": 0.02, "steps": 20}, resume=True)
    said = capsys.readouterr().out  # a note on stdout: a later failure stays one line on stderr
    assert "resume changes lr: 0.01 -> 0.02" in said and "resume changes steps: 10 -> 20" in said
    assert run_config(run) == ("lm-train", {"dim": 16, "lr": 0.02, "steps": 20})


def test_resume_of_an_empty_or_foreign_folder_is_an_error(tmp_path):
    with pytest.raises(KexueError, match="holds no run"):
        make_run_dir(tmp_path / "none", "lm-train", {}, resume=True)
    (tmp_path / "foreign").mkdir()
    (tmp_path / "foreign" / "notes.txt").write_text("mine")
    with pytest.raises(KexueError, match="not a kexue run folder"):
        make_run_dir(tmp_path / "foreign", "lm-train", {}, resume=True)


# ---- fault 4: the checkpoint kept after a divergence is finite; finite divergence stops cleanly


def test_weights_that_blow_up_stop_training_and_no_checkpoint_is_non_finite(tmp_path):
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 1)

    def loss_fn(m, batch, g):  # finite loss, but SGD at a huge rate drives the weights to inf
        return (m(batch) ** 2).mean(), {}

    x = torch.ones(32, 4)
    cfg = TrainConfig(steps=50, lr=1e30, optimizer="sgd", clip_norm=None, ckpt_every=1, progress=False)
    with pytest.raises(KexueError, match="training diverged"):
        fit(model, loss_fn, TensorBatches(x, batch_size=8), cfg, tmp_path)
    for ckpt in (tmp_path / "checkpoints").glob("step-*"):
        fresh = torch.nn.Linear(4, 1)
        load_checkpoint(ckpt, fresh)
        assert all(torch.isfinite(p).all() for p in fresh.parameters())


def test_non_finite_eval_metric_stops_with_the_same_message(tmp_path):
    x, y = _problem()
    with pytest.raises(KexueError, match="training diverged: valid_ppl is inf"):
        fit(
            _model(),
            _loss,
            TensorBatches(x, y, batch_size=16),
            TrainConfig(**{**CFG, "eval_every": 5}),
            tmp_path,
            eval_fn=lambda m: {"valid_ppl": float("inf")},
        )


def test_save_checkpoint_refuses_non_finite_weights(tmp_path):
    model = torch.nn.Linear(2, 2)
    with torch.no_grad():
        model.weight[0, 0] = float("nan")
    with pytest.raises(KexueError, match="NaN or infinity"):
        save_checkpoint(tmp_path, model, torch.optim.SGD(model.parameters(), lr=0.1), 1)
    assert not list(tmp_path.iterdir())


# ---- fault 5: a used --out is refused unless --resume or --overwrite


def test_non_empty_out_is_refused_unless_resume_or_overwrite(tmp_path):
    run = make_run_dir(tmp_path / "r", "lm-train", {"dim": 16})
    (run / "metrics.jsonl").write_text('{"step": 1}\n')
    with pytest.raises(KexueError, match="not empty"):
        make_run_dir(run, "lm-train", {"dim": 16})
    make_run_dir(run, "lm-train", {"dim": 8}, overwrite=True)
    assert not (run / "metrics.jsonl").exists() and run_config(run)[1] == {"dim": 8}
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "thesis.tex").write_text("precious")
    with pytest.raises(KexueError, match="not deleting"):
        make_run_dir(mine, "lm-train", {}, overwrite=True)
    assert (mine / "thesis.tex").read_text() == "precious"
    empty = tmp_path / "empty"
    empty.mkdir()
    assert make_run_dir(empty, "lm-train", {}) == empty  # an empty folder is fine


@pytest.mark.parametrize("bad", ["file", "/proc/kexue_probe", "/dev/null", "file/sub"])
def test_unwritable_out_is_refused_before_anything_is_made(tmp_path, bad):
    (tmp_path / "file").write_text("x")
    path = tmp_path / bad if not bad.startswith("/") else bad
    with pytest.raises(KexueError, match="--out"):
        make_run_dir(path, "lm-train", {})
    with pytest.raises(KexueError):
        check_output_dir(path)


def test_output_file_checks(tmp_path):
    with pytest.raises(KexueError, match="is a folder"):
        check_output_file(tmp_path, "--results")
    with pytest.raises(KexueError, match="cannot write"):
        check_output_file("/proc/kexue_probe/r.json")
    check_output_file(tmp_path / "new" / "r.json")
    assert not (tmp_path / "new").exists()  # a check makes nothing


# ---- fault 6: temporaries are cleaned; a failed command leaves no half-made run folder


def test_interrupted_writes_are_cleaned_on_the_next_start(tmp_path):
    _fit(tmp_path, ckpt_every=5, until=5)
    (tmp_path / "checkpoints" / ".step-000010.tmp").mkdir()
    (tmp_path / ".results.json.abcd.tmp").write_text("half")
    assert clean_temporaries(tmp_path) == 2
    assert not list(tmp_path.rglob(".*.tmp"))
    (tmp_path / "checkpoints" / ".step-000010.tmp").mkdir()
    _fit(tmp_path, ckpt_every=5, resume=True, until=10)  # fit cleans its own leftovers too
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["latest", "step-000005", "step-000010"]


def test_failed_command_removes_the_folder_it_made_unless_it_holds_weights(tmp_path):
    forget_created_runs()
    a = make_run_dir(tmp_path / "a", "x", {})
    b = make_run_dir(tmp_path / "b", "x", {})
    _fit(b, ckpt_every=5, until=5)
    discard_failed_runs()
    assert not a.exists() and (b / "checkpoints").is_dir()


# ---- fault 7: resume keeps the logging windows and never repeats metric lines


def test_resume_rewinds_metrics_and_keeps_training_averages(tmp_path):
    _fit(tmp_path / "straight", ckpt_every=4, eval_every=4)
    _fit(tmp_path / "killed", ckpt_every=4, until=8)
    with open(tmp_path / "killed" / "metrics.jsonl", "a") as f:  # written after the checkpoint, then killed
        f.write('{"step": 9, "split": "train", "loss": 1.0}\n{"step": 12, "split": "eval", "acc": 0.5}\n{"step"')
    _, result = _fit(tmp_path / "killed", ckpt_every=4, resume=True)
    straight = [r for r in read_metrics(tmp_path / "straight" / "metrics.jsonl") if r["split"] == "train"]
    killed = [r for r in read_metrics(tmp_path / "killed" / "metrics.jsonl") if r["split"] == "train"]
    assert [r["step"] for r in killed] == [r["step"] for r in straight]  # no repeated or stray lines
    for a, b in zip(straight, killed):  # the window that spans the checkpoint (steps 7-9) averages the same
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-6)
    _, again = _fit(tmp_path / "killed", ckpt_every=4, resume=True)  # a finished run resumed: no NaN summary
    assert again.step == 20 and again.train["loss"] == pytest.approx(killed[-1]["loss"])


# ---- the one reader


def test_reader_turns_every_read_failure_into_one_line(tmp_path):
    (tmp_path / "latin1.txt").write_bytes(b"caf\xe9\n")
    (tmp_path / "bad.json").write_text("{'a': 1}")
    (tmp_path / "list.yaml").write_text("- 1\n")
    (tmp_path / "tag.yaml").write_text("a: !!python/object/apply:os.system ['true']\n")
    (tmp_path / "empty.yaml").write_text("")
    cases = [
        (read_text, tmp_path / "nope.txt", "not found"),
        (read_text, tmp_path, "is a folder"),
        (read_text, tmp_path / "latin1.txt", "not UTF-8"),
        (read_json, tmp_path / "bad.json", "line 1"),
        (read_yaml, tmp_path / "list.yaml", "mapping"),
        (read_yaml, tmp_path / "tag.yaml", "not valid YAML"),
    ]
    for reader, path, message in cases:
        with pytest.raises(KexueError, match=message) as e:
            reader(path)
        assert str(path) in str(e.value) and "\n" not in str(e.value)
    assert read_yaml(tmp_path / "empty.yaml") == {}


def test_written_files_follow_the_umask(tmp_path):
    old = os.umask(0o022)
    try:
        write_json(tmp_path / "a.json", {"a": 1})
        assert (tmp_path / "a.json").stat().st_mode & 0o777 == 0o644
        os.umask(0o077)
        write_json(tmp_path / "b.json", {"a": 1})
        assert (tmp_path / "b.json").stat().st_mode & 0o777 == 0o600
    finally:
        os.umask(old)


# ---- the command line itself


def test_help_and_version_do_not_import_torch():
    code = (
        "import sys, io, contextlib\nfrom kexue.cli import main\nbuf = io.StringIO()\n"
        "with contextlib.redirect_stdout(buf):\n    main(['--help']); main(['--version'])\n"
        "assert 'torch' not in sys.modules and 'sklearn' not in sys.modules, 'heavy import'\n"
        "print(buf.getvalue())"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "vae-cluster" in out and "reproduce" in out and "kexue 0." in out


@pytest.mark.parametrize(
    "args, match",
    [
        (["nosuch"], "unknown command 'nosuch'"),
        (["lm", "nosuch"], "unknown subcommand 'nosuch'"),
        (["lm"], "choose a subcommand"),
        (["lm", "train", "--setings.epochs", "1"], "unrecognized arguments"),
        (["lm", "train", "--config"], "--config"),
    ],
)
def test_bad_command_lines_are_one_line_with_a_help_hint(cli_error, args, match):
    cli_error(args, match=match)


def test_progress_bars_stay_out_of_a_log_unless_asked(tmp_path):
    code = (
        "import os, sys\nfrom kexue.cli import main\nmain(['--version'])\n"
        "from tqdm.auto import tqdm\nb = tqdm(total=1, file=sys.stderr)\n"
        "print(b.disable, getattr(b, 'mininterval', None))"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("TQDM_")}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env).stdout
    assert out.strip().splitlines()[-1] == "True None"  # stderr is a pipe here, not a terminal
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, env={**env, "TQDM_MININTERVAL": "60"}
    ).stdout
    assert out.strip().splitlines()[-1] == "False 60.0"  # a user who asks for bars in a log gets them


def _cli_parameters():
    """(command, flag, type) of every parameter of every CLI command, dataclass fields expanded."""
    import dataclasses
    import inspect
    import typing

    from kexue.cli import GROUPS, _resolve

    def visit(name, hint, where):
        if dataclasses.is_dataclass(hint):
            hints = typing.get_type_hints(hint)
            for f in dataclasses.fields(hint):
                yield from visit(f"{name}.{f.name}", hints[f.name], where)
        else:
            yield where, name, hint

    for group, (_, commands) in GROUPS.items():
        for sub, spec in commands.items():
            fn = _resolve(spec)
            hints = typing.get_type_hints(fn)
            for p in inspect.signature(fn).parameters:
                yield from visit(p, hints.get(p), f"{group} {sub}".strip())


def test_no_cli_number_is_unconstrained():
    params = list(_cli_parameters())
    bare = [f"{cmd} --{name}: {hint}" for cmd, name, hint in params if hint in (int, float, int | None, float | None)]
    assert not bare, "give these a kexue.params type: " + "; ".join(bare)
    constrained = [p for p in params if "jsonargparse.typing" in str(p[2]) or "Literal" in str(p[2])]
    assert len(constrained) >= 150  # 153 of 252 when this was written; the rest are flags, paths and names


def test_the_core_imports_without_the_extras_and_a_missing_extra_is_one_line():
    code = (
        "import sys\nimport kexue.generation, kexue.training, kexue.models.lm, kexue.nn.nystrom\n"
        "heavy = [m for m in ('scipy', 'sklearn', 'matplotlib', 'transformers') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
        "sys.modules['sklearn'] = None  # as if scikit-learn were not installed\n"
        "from kexue.cli import main\n"
        "main(['vae-cluster', 'train', '--data', 'digits'])\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip() == (
        "kexue: error: this needs the package 'sklearn', which is not installed: pip install 'kexue[vae]'"
    )


def test_overwrite_never_deletes_a_folder_with_someone_elses_config(tmp_path):
    project = tmp_path / "project"
    (project / "src").mkdir(parents=True)
    (project / "config.yaml").write_text("database: postgres\n")
    (project / "src" / "main.py").write_text("print('mine')\n")
    with pytest.raises(KexueError, match="not deleting"):
        make_run_dir(project, "lm-train", {}, overwrite=True)
    with pytest.raises(KexueError, match="not a kexue run folder"):
        make_run_dir(project, "lm-train", {}, resume=True)
    assert (project / "src" / "main.py").read_text() == "print('mine')\n"


def test_a_failed_resume_puts_the_config_back(tmp_path, capsys):
    run = make_run_dir(tmp_path / "r", "fit", {"steps": 10})
    _fit(run, steps=10, ckpt_every=5)
    before = (run / "config.yaml").read_text()
    make_run_dir(run, "fit", {"steps": 5}, resume=True)  # allowed change, written ...
    with pytest.raises(KexueError, match="at step 10, beyond the 5 steps"):
        _fit(run, steps=5, resume=True)  # ... but the checkpoint is past it: refused
    discard_failed_runs()  # what the CLI does when a command fails
    assert (run / "config.yaml").read_text() == before


def test_commands_not_ready_for_ddp_refuse_it_in_one_line(monkeypatch):
    from kexue.training import distributed

    distributed.require_single_process("kexue mlm train")  # one process: fine
    monkeypatch.setattr(distributed, "world_size", lambda: 2)
    with pytest.raises(KexueError, match="does not run under torchrun with 2 processes"):
        distributed.require_single_process("kexue mlm train")


def test_a_run_made_before_a_setting_existed_resumes_with_its_default(tmp_path, monkeypatch):
    """lm train gained settings.batching (and others) later: an older run's config.yaml lacks them. A
    resume at the default goes on; asking for another value is still refused."""
    import kexue.recipes.lm  # noqa: F401  (registers lm-train's added settings)
    from kexue.io import make_run_dir

    out = tmp_path / "old"
    make_run_dir(out, "lm-train", {"corpus": "ptb", "settings": {"dim": 8, "steps": 4}})
    (out / "model.safetensors").write_bytes(b"x")  # something to resume
    new = {"corpus": "ptb", "settings": {"dim": 8, "steps": 6, "batching": "stream", "patience": 0}}
    assert make_run_dir(out, "lm-train", new, resume=True, may_change={"settings.steps"}) == out
    (out / "config.yaml").write_text("# kexue run config: lm-train\ncorpus: ptb\nsettings:\n  dim: 8\n  steps: 4\n")
    changed = {"corpus": "ptb", "settings": {"dim": 8, "steps": 4, "batching": "sentence"}}
    with pytest.raises(KexueError, match="settings.batching '<unset>' -> 'sentence'"):
        make_run_dir(out, "lm-train", changed, resume=True, may_change={"settings.steps"})
