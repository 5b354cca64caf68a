import dataclasses
import shlex
from pathlib import Path

from kexue.provenance import command_line, describe_machine, machine_facts


@dataclasses.dataclass
class Settings:
    epochs: int = 50
    lr: float = 1e-3
    kl: str = "sampled"


def train(
    data: str = "mnist5k",
    steps: int = 10,
    landmarks: list[int] | None = None,
    quick: bool = False,
    settings: Settings = Settings(),
    note: str = "a b",
    out: Path | None = None,
    resume: bool = False,
) -> None:
    """A command."""


def test_command_line_prints_only_what_differs_and_round_trips_through_a_shell():
    args = dict(
        data="digits",
        steps=10,
        landmarks=[8, 16],
        quick=True,
        settings=Settings(epochs=3, kl="closed"),
        note="it's",
        out=Path("runs/x"),
        resume=True,
    )
    line = command_line("vae-cluster train", train, args)
    assert line == (
        "kexue vae-cluster train --data digits --landmarks '[8, 16]' --quick "
        "--settings.epochs 3 --settings.kl closed --note 'it'\"'\"'s'"
    )
    assert shlex.split(line)[-1] == "it's"  # quoting survives a shell
    assert command_line("vae-cluster train", train, {"steps": 10}) == "kexue vae-cluster train"
    assert command_line("x", train, {"steps": 10}, keep=("steps",)) == "kexue x --steps 10"
    assert command_line("x", train, {"landmarks": None, "quick": False}) == "kexue x"


def test_machine_facts_are_measured():
    facts = machine_facts()
    assert facts["cores"] >= 1 and facts["torch_threads"] >= 1 and facts["torch"]
    assert str(facts["cores"]) in describe_machine(facts)
