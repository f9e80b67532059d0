"""A short ``kpx demo`` end to end: real services, real processes, precision and recall 1.0.

The demo uses its fixed private vhost ``kpx_demo`` and metrics ports 9501-9519, so two demos
must not run at once on one machine; the state directory (keys, region file, logs) is the
test's own.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow


def _kpx() -> list[str]:
    script = Path(sys.executable).with_name("kpx")
    return [str(script)] if script.exists() else [sys.executable, "-m", "exchange.app.cli"]


def test_a_short_demo_finds_exactly_the_seeded_anomalies_and_stops_cleanly(
    tmp_path: Path, amqp_admin_url: str, database_server_url: str
) -> None:
    env = dict(
        os.environ,
        KPX_STATE_DIR=str(tmp_path / "state"),
        KPX_AMQP_URL=amqp_admin_url,
        KPX_DATABASE_URL=database_server_url,
        COLUMNS="120",
    )
    env.pop("KPX_REGION", None)
    done = subprocess.run(
        [*_kpx(), "demo", "--duration", "10", "--rate", "10"],
        capture_output=True,
        text=True,
        env=env,
        timeout=170,
        check=False,
    )
    output = done.stdout + done.stderr
    logs = tmp_path / "state" / "demo" / "logs"
    tails = "\n".join(
        f"== {log.name}\n" + "\n".join(log.read_text().splitlines()[-5:])
        for log in sorted(logs.glob("*.log"))
    )
    assert done.returncode == 0, output + "\n" + tails
    assert "precision 1.00  recall 1.00" in output
    assert "found 19 of 19 seeded anomalies, 0 false positive(s)" in output
    assert "kpx demo: ok" in output
    assert "/verify/XS-" in output and "password" in output  # the portal's URLs
