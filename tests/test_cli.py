"""The command line's one error boundary: every failure leaves as one line and a table code.

The codes (exchange/app/exits.py, README "Exit codes"): 0 ok, 1 refused or failed check,
2 usage or configuration, 3 service unavailable. The commands run in process through
``exchange.app.cli.run``, on the real PostgreSQL.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest
from support.region import region_text
from support.services import Database

from exchange import errors
from exchange.adapters.postgres import connect
from exchange.app import cli
from exchange.app.exits import ExitCode, exit_code, message
from exchange.domain.region import load_region
from exchange.registry import service
from exchange.wire import topology

UNKNOWN = "XS-BW-2026-0000001-03"


def _kpx(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = cli.run(list(args))
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for key in ("KPX_REGION", "KPX_AMQP_URL", "KPX_AMQP_MANAGEMENT_URL", "KPX_DATABASE_URL",
                "KPX_BROKER_ADMIN_PASSWORD"):  # fmt: skip
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("KPX_STATE_DIR", str(tmp_path / "state"))


@pytest.fixture
def registry_region(tmp_path: Path, database: Database, database_server_url: str) -> Path:
    """A region file whose registry is a fresh, migrated test database."""
    text = region_text("kpxt_cli").replace(
        'database = "kpxt_cli_registry"', f'database = "{database.name}"'
    )
    path = tmp_path / "region.toml"
    path.write_text(text, encoding="utf-8")
    conn = connect(database.url)
    try:
        service.prepare_database(conn, load_region(path))
    finally:
        conn.close()
    return path


def test_help_exits_0_without_reading_a_region(
    capsys: pytest.CaptureFixture[str], clean_env: None
) -> None:
    code, out, _ = _kpx(capsys, "--region", "/nonexistent/region.toml", "node", "--help")
    assert code == ExitCode.OK
    assert "submit" in out


def test_a_bad_setting_exits_2_with_one_line_naming_the_key(
    capsys: pytest.CaptureFixture[str], clean_env: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KPX_AMQP_URL", "http://kpx:s3cret@broker/")
    code, out, err = _kpx(capsys, "registry", "rejections")
    assert code == ExitCode.USAGE
    assert out == ""
    assert err.splitlines() == [
        "kpx: ConfigError: KPX_AMQP_URL must be a URL starting amqp:// or amqps://, "
        "got 'http://kpx:***@broker/'"
    ]


def test_a_missing_region_file_exits_2(capsys: pytest.CaptureFixture[str], clean_env: None) -> None:
    code, _, err = _kpx(capsys, "--region", "/nonexistent/region.toml", "registry", "rejections")
    assert code == ExitCode.USAGE
    assert "/nonexistent/region.toml" in err


def test_a_usage_error_exits_2(capsys: pytest.CaptureFixture[str], clean_env: None) -> None:
    code, _, err = _kpx(capsys, "registry", "show")
    assert code == ExitCode.USAGE
    assert "Missing argument" in err


def test_an_unknown_certificate_exits_1_with_one_line(
    capsys: pytest.CaptureFixture[str], clean_env: None, registry_region: Path
) -> None:
    code, out, err = _kpx(capsys, "--region", str(registry_region), "registry", "show", UNKNOWN)
    assert code == ExitCode.FAILED
    assert out == ""
    assert err.splitlines() == [f"kpx: NotFound: certificate {UNKNOWN} is unknown to the registry"]


def test_a_failed_verification_exits_1(
    capsys: pytest.CaptureFixture[str], clean_env: None, registry_region: Path
) -> None:
    code, out, _ = _kpx(capsys, "--region", str(registry_region), "registry", "verify", UNKNOWN)
    assert code == ExitCode.FAILED
    assert UNKNOWN in out


def test_a_missing_key_exits_2(
    capsys: pytest.CaptureFixture[str], clean_env: None, registry_region: Path
) -> None:
    code, _, err = _kpx(
        capsys, "--region", str(registry_region), "registry", "participant", "suspend", "ZW",
        "--reason", "no key yet",
    )  # fmt: skip
    assert code == ExitCode.USAGE
    assert err.startswith("kpx: KeyFileError: ")


def test_a_refusal_exits_1_with_its_reason_code(
    capsys: pytest.CaptureFixture[str], clean_env: None, registry_region: Path
) -> None:
    region = ("--region", str(registry_region))
    assert _kpx(capsys, *region, "keys", "generate", "--member", "XS")[0] == ExitCode.OK
    code, _, err = _kpx(
        capsys, *region, "registry", "participant", "suspend", "SO",
        "--reason", "no such participant",
    )  # fmt: skip
    assert code == ExitCode.FAILED
    (line,) = err.splitlines()
    assert line.startswith("kpx: refused ")


def test_a_database_that_does_not_answer_exits_3(
    capsys: pytest.CaptureFixture[str], clean_env: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KPX_DATABASE_URL", "postgresql://postgres:s3cret@127.0.0.1:1/postgres")
    code, _, err = _kpx(capsys, "registry", "show", UNKNOWN)
    assert code == ExitCode.UNAVAILABLE
    (line,) = err.splitlines()
    assert line.startswith("kpx: service unavailable: ")
    assert "s3cret" not in line


def _all_kpx_errors() -> list[type[errors.KpxError]]:
    found, todo = [], [errors.KpxError]
    while todo:
        cls = todo.pop()
        found.append(cls)
        todo.extend(cls.__subclasses__())
    return found


@pytest.mark.parametrize("cls", _all_kpx_errors(), ids=lambda c: c.__name__)
def test_every_kpx_error_has_the_exit_code_of_the_table(cls: type[errors.KpxError]) -> None:
    exc = cls("CODE", "a sentence") if cls is errors.Refusal else cls("a\n  sentence")
    if issubclass(cls, errors.ConfigError | errors.KeyFileError):
        expected = ExitCode.USAGE
    elif issubclass(cls, errors.TransientError):
        expected = ExitCode.UNAVAILABLE
    else:
        expected = ExitCode.FAILED
    assert exit_code(exc) == expected
    assert "\n" not in message(exc)


def test_every_command_group_of_the_table_is_attached() -> None:
    cli.attach_commands()
    names = set(cli.cli.commands)
    assert {"node", "submit", "registry", "reconciler", "reconcile", "stats", "demo"} <= names
    registry = cli.cli.commands["registry"]
    assert isinstance(registry, cli.click.Group) and "discrepancies" in registry.commands


def test_topology_export_takes_the_admin_password_from_the_settings_only(
    capsys: pytest.CaptureFixture[str],
    clean_env: None,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    output = tmp_path / "definitions.json"
    monkeypatch.setenv("KPX_BROKER_ADMIN_PASSWORD", "s3cret-admin")
    code, out, _ = _kpx(capsys, "topology", "export", "--output", str(output))
    assert code == ExitCode.OK
    text = output.read_text(encoding="utf-8")
    assert "s3cret-admin" not in text + out
    (admin,) = [u for u in json.loads(text)["users"] if u["name"] == "kpx-admin"]
    salt = base64.b64decode(admin["password_hash"])[:4]
    assert admin["password_hash"] == topology.password_hash("s3cret-admin", salt)


def test_topology_export_without_an_admin_password_exits_2(
    capsys: pytest.CaptureFixture[str], clean_env: None, tmp_path: Path
) -> None:
    code, _, err = _kpx(capsys, "topology", "export", "--output", str(tmp_path / "d.json"))
    assert code == ExitCode.USAGE
    assert "KPX_BROKER_ADMIN_PASSWORD" in err
    assert not (tmp_path / "d.json").exists()
