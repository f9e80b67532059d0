"""Stored text reaches an operator's terminal escaped (issue 12 item 6, issue 11 item 10).

Unit tests for the one escaping function, and the real commands run as processes against a
provisioned region: a certificate whose exporter carries terminal escapes and a right-to-left
override, a refused line naming such text, and a dead letter whose reason holds them.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pika
import pytest
from support.pipeline import issue_line
from support.region import provisioned_region
from support.services import unique_name

from exchange.adapters.terminal import escape
from exchange.app.runtime import Runtime
from exchange.wire import topology

KPX = Path(sys.executable).with_name("kpx")
HOSTILE = "Evil\x1b]0;pwned\x07 \x1b[2J\u202eLtd\u200b\r\x9b31m"
RAW = ("\x1b", "\x07", "\u202e", "\u200b", "\r", "\x9b")


def test_controls_bidi_overrides_and_escapes_are_escaped() -> None:
    shown = escape(HOSTILE)
    assert not any(c in shown for c in RAW)
    assert "\\u001b" in shown and "\\u202e" in shown and "\\u009b" in shown


def test_printable_text_newlines_and_tabs_pass_unchanged() -> None:
    for text in ("Côte d’Ivoire", "دبي للماس", "Ошибка", "a\tb\nc", "💎 100.00 ct"):
        assert escape(text) == text


@pytest.fixture(scope="module")
def rt(
    tmp_path_factory: pytest.TempPathFactory, amqp_admin_url: str, database_server_url: str
) -> Iterator[Runtime]:
    tmp = tmp_path_factory.mktemp("terminal")
    with provisioned_region(tmp, unique_name(), amqp_admin_url, database_server_url) as r:
        yield r


def kpx(rt: Runtime, *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    env = rt.settings.child_env()
    return subprocess.run(
        [str(KPX), *args], env=env, input=stdin, capture_output=True, text=True, timeout=60,
        check=False,
    )  # fmt: skip


def assert_escaped(output: str) -> None:
    assert not any(c in output for c in RAW), repr(output[:400])


def test_node_commands_show_stored_text_escaped(rt: Runtime) -> None:
    line = json.loads(issue_line("BW", "AE", datetime.now(UTC)))
    line["certificate"]["exporter"]["name"] = HOSTILE
    done = kpx(rt, "node", "submit", "--member", "BW", "-", stdin=json.dumps(line) + "\n")
    assert done.returncode == 0, done.stdout + done.stderr
    for table in (("--json",), ()):
        listed = kpx(rt, "node", "certificates", "--member", "BW", *table)
        assert listed.returncode == 0, listed.stderr
        assert_escaped(listed.stdout)
    void = {"op": "void", "certificate_id": f"XS-BW-2026-{HOSTILE}", "reason": HOSTILE}
    refused = kpx(rt, "node", "submit", "--member", "BW", "-", stdin=json.dumps(void) + "\n")
    assert refused.returncode == 1 and "refused" in refused.stdout
    assert_escaped(refused.stdout + refused.stderr)


def test_dead_letter_reasons_are_listed_escaped(rt: Runtime) -> None:
    conn = pika.BlockingConnection(pika.URLParameters(rt.amqp_url(None)))
    try:
        channel = conn.channel()
        channel.confirm_delivery()
        headers = {"x-kpx-reason": f"SCHEMA_INVALID: {HOSTILE}", "x-kpx-queue": "kpx.registry"}
        props = pika.BasicProperties(message_id="m-1", headers=headers, delivery_mode=2)
        channel.basic_publish(topology.DEAD, f"BW.{HOSTILE}", b"junk", props)
    finally:
        conn.close()
    for args in (("registry", "dead-letters"), ("registry", "dead-letters", "--json")):
        shown = kpx(rt, *args)
        assert shown.returncode == 0, shown.stderr
        assert "SCHEMA_INVALID" in shown.stdout
        assert_escaped(shown.stdout + shown.stderr)
    parsed = json.loads(kpx(rt, "registry", "dead-letters", "--json").stdout)
    assert parsed[0]["reason"] == f"SCHEMA_INVALID: {HOSTILE}"  # the JSON still says it exactly
    checked = kpx(rt, "check")  # the queue's depth and the store's count, escaped too
    assert "waiting in kpx.registry.dead" in checked.stdout, checked.stderr
    assert "1 stored pending and 0 re-injected" in checked.stdout
    done = kpx(rt, "registry", "dead-letters", "reinject", "m-1")
    assert (done.returncode, done.stdout) == (0, "re-injected 1 message(s)\n"), done.stderr
    again = kpx(rt, "registry", "dead-letters", "reinject", "m-1", "nobody")
    assert again.returncode == 1 and again.stdout == "re-injected 0 message(s)\n"
    assert "m-1: already re-injected at " in again.stderr and "by cli:" in again.stderr
    assert "nobody: no such dead letter" in again.stderr
    assert_escaped(checked.stdout + done.stdout + again.stdout + again.stderr)
