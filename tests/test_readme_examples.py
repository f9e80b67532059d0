"""The README's submit examples run, and run again, without error (issue 11, item 14).

Every fenced ``json`` block of the README is a JSON Lines example for ``kpx submit`` (when
each line names its ``"member"``) or for ``kpx node submit --member XX`` (XX taken from the
last ``kpx node submit --member XX`` the README shows before the block). They are run as
written, twice, by the ``kpx`` command against a private provisioned region on the real
PostgreSQL and RabbitMQ: both runs exit 0, and the second answers every line from its
``request_id`` with ``(already applied)`` (DESIGN §9).
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from exchange.app.runtime import Runtime

README = Path(__file__).resolve().parents[1] / "README.md"
KPX = Path(sys.executable).with_name("kpx")
_BLOCK = re.compile(r"^[ \t]*```json\n(.*?)^[ \t]*```$", re.DOTALL | re.MULTILINE)
_NODE_SUBMIT = re.compile(r"kpx node submit --member ([A-Z]{2})")


@dataclass(frozen=True)
class Example:
    """One fenced block: its JSON lines and the command that applies them."""

    lines: list[str]
    command: list[str]


def readme_examples(text: str) -> list[Example]:
    """The README's ``json`` blocks with the ``kpx`` command each one is meant for."""
    examples = []
    for block in _BLOCK.finditer(text):
        lines = [line for line in block.group(1).splitlines() if line.strip()]
        if all("member" in json.loads(line) for line in lines):
            command = ["submit", "-"]
        else:
            members = _NODE_SUBMIT.findall(text, 0, block.start())
            assert members, "a json block with no member before any `kpx node submit --member`"
            command = ["node", "submit", "--member", members[-1], "-"]
        examples.append(Example(lines, command))
    return examples


def run(rt: Runtime, example: Example) -> subprocess.CompletedProcess[str]:
    env = rt.settings.child_env()
    return subprocess.run(
        [str(KPX), *example.command],
        input="\n".join(example.lines) + "\n",
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_the_readme_shows_a_node_submit_and_a_submit_example() -> None:
    commands = [e.command[0] for e in readme_examples(README.read_text(encoding="utf-8"))]
    assert sorted(set(commands)) == ["node", "submit"]


def test_every_readme_example_line_carries_a_request_id() -> None:
    for example in readme_examples(README.read_text(encoding="utf-8")):
        assert all("request_id" in json.loads(line) for line in example.lines), example


def test_the_readme_examples_run_twice_and_the_second_run_is_already_applied(
    rt: Runtime,
) -> None:
    examples = readme_examples(README.read_text(encoding="utf-8"))
    first = [run(rt, example) for example in examples]
    for example, done in zip(examples, first, strict=True):
        assert done.returncode == 0, (example.command, done.stdout, done.stderr)
        assert all(" ok " in line for line in done.stdout.splitlines()), done.stdout
    for example, before in zip(examples, first, strict=True):
        again = run(rt, example)
        assert again.returncode == 0, (example.command, again.stdout, again.stderr)
        assert again.stdout.splitlines() == [
            f"{line} (already applied)" for line in before.stdout.splitlines()
        ]
