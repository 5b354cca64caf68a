import json

import pytest
import torch

from kexue.errors import KexueError
from kexue.io import atomic_path, make_run_dir, read_json, read_text, run_config, write_json
from kexue.reproduce.report import SectionResult, figure_table, write_report
from kexue.results import Figure, load_results, write_results
from kexue.training.checkpoint import load_weights, save_weights


def test_atomic_path_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "out.json"
    write_json(target, {"a": 1})
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("crash while writing")
    assert json.loads(target.read_text()) == {"a": 1}  # the old file is intact
    assert [p.name for p in tmp_path.iterdir()] == ["out.json"]  # no temporary left behind


def test_results_schema_roundtrip_and_merge(tmp_path):
    path = tmp_path / "r.json"
    write_results(path, [Figure("vae.x.acc", 0.5, 0.6, "blog", "kexue a")])
    write_results(path, [Figure("vae.y.acc", 0.25)], merge=True)
    data = load_results(path)
    assert data["vae.x.acc"] == {"value": 0.5, "published": 0.6, "source": "blog", "command": "kexue a"}
    assert data["vae.y.acc"]["published"] is None and set(data) == {"vae.x.acc", "vae.y.acc"}
    with pytest.raises(ValueError, match="not finite"):
        write_results(path, [Figure("bad", float("nan"))])
    path.write_text("[1, 2]")
    with pytest.raises(KexueError, match="schema"):
        load_results(path)


def test_report_table_and_files(tmp_path):
    figs = [
        Figure("vae.m.acc", 0.91234, 0.9446, "VaDE", "kexue vae-cluster study"),
        Figure("vae.m.nmi", 0.8, None, None, "kexue vae-cluster study"),
        Figure("vae.m.ari", 0.7, None, None, "kexue other"),
    ]
    table = figure_table(figs)
    assert "| vae.m.acc | 0.9123 | 0.9446 | VaDE | [1] |" in table and "| vae.m.ari | 0.7 | – |  | [2] |" in table
    assert table.count("`kexue vae-cluster study`") == 1 and "[2] `kexue other`" in table
    sections = [
        SectionResult("vae", "1. VAE (kexue.fm/archives/5887)", figs, notes="short by 3 points"),
        SectionResult("x", "2. X (y)", figs, headline=["vae.*.a*"]),
    ]
    write_report(tmp_path, sections, "quick")
    text = (tmp_path / "report.md").read_text()
    assert "## 1. VAE" in text and "short by 3 points" in text
    summary = text.split("## Summary")[1].split("## 1. VAE")[0]
    # default headline: the figures with a published number; explicit: fnmatch patterns
    assert summary.count("| 1. VAE | vae.m.acc | 0.9123 | 0.9446 |") == 1 and "| 1. VAE | vae.m.nmi" not in summary
    assert "| 2. X | vae.m.acc |" in summary and "| 2. X | vae.m.ari | 0.7 | – |" in summary
    assert "vae.m.nmi" not in summary
    assert load_results(tmp_path / "results.json")["vae.m.acc"]["value"] == pytest.approx(0.91234)


def test_run_dir_saves_config(tmp_path):
    run = make_run_dir(tmp_path / "r", "cmd", {"lr": 0.1, "path": tmp_path, "out": tmp_path / "r"})
    assert run_config(run) == ("cmd", {"lr": 0.1, "path": str(tmp_path)})  # out is where, not what: not saved


def test_weights_roundtrip_with_tied_parameters_and_bad_file(tmp_path):
    a = torch.nn.Sequential(torch.nn.Embedding(5, 3), torch.nn.Linear(3, 5))
    a[1].weight = a[0].weight  # tied, as in weight-tied LMs
    save_weights(a, tmp_path / "w.safetensors")
    b = torch.nn.Sequential(torch.nn.Embedding(5, 3), torch.nn.Linear(3, 5))
    load_weights(b, tmp_path / "w.safetensors")
    assert torch.equal(a[0].weight, b[0].weight) and torch.equal(a[1].bias, b[1].bias)
    (tmp_path / "bad.safetensors").write_bytes(b"\x00garbage")
    with pytest.raises(KexueError, match="cannot read weights"):
        load_weights(b, tmp_path / "bad.safetensors")
    with pytest.raises(KexueError, match="do not fit"):
        load_weights(torch.nn.Linear(2, 2), tmp_path / "w.safetensors")


def test_a_non_utf8_file_names_the_line_of_the_bad_byte(tmp_path):
    bad = tmp_path / "texts.txt"
    bad.write_bytes("第一行\nsecond \xff line\n".encode().replace(b"\xc3\xbf", b"\xff"))
    with pytest.raises(
        KexueError, match=r"^--file .*texts\.txt is not UTF-8 text \(byte 0xff at line 2, byte 8 of the line\)$"
    ):
        read_text(bad, "--file")
    bad.write_bytes(b'{"a":\n\n "\xfe"}')
    with pytest.raises(KexueError, match=r"byte 0xfe at line 3, byte 3 of the line"):
        read_json(bad, "--config")
