"""Settings: every environment variable is read in one place, and no secret is ever shown."""

from __future__ import annotations

from pathlib import Path

import pytest

from exchange.app.settings import Settings, example_region_path
from exchange.errors import ConfigError
from nodes.service import NodeService

SECRET = "s3cret-pa55"
ENV = {
    "KPX_AMQP_URL": f"amqp://kpx-admin:{SECRET}@broker.example:5672/",
    "KPX_DATABASE_URL": f"postgresql://kpx:{SECRET}@db.example:5432/postgres",
    "KPX_AMQP_MANAGEMENT_URL": f"https://kpx-admin:{SECRET}@broker.example:15671",
    "KPX_BROKER_ADMIN_PASSWORD": SECRET,
    "KPX_STATE_DIR": "/var/lib/kpx",
}


def test_every_setting_comes_from_the_environment() -> None:
    settings = Settings.from_env(ENV)
    assert settings.amqp_url == ENV["KPX_AMQP_URL"]
    assert settings.database_url == ENV["KPX_DATABASE_URL"]
    assert settings.management_url == ENV["KPX_AMQP_MANAGEMENT_URL"]
    assert settings.admin_password() == SECRET
    assert settings.state_dir == Path("/var/lib/kpx")


def test_a_child_process_environment_reads_back_the_same_settings_and_nothing_else() -> None:
    settings = Settings.from_env({**ENV, "KPX_METRICS_HOST": "10.0.0.5"})
    assert Settings.from_env(settings.child_env({"PATH": "/bin"})) == settings
    # What these settings leave unset does not leak in from the parent's environment.
    bare = Settings.from_env({"KPX_STATE_DIR": "/srv/kpx"})
    env = bare.child_env({**ENV, "PATH": "/bin"})
    assert "KPX_BROKER_ADMIN_PASSWORD" not in env and "KPX_AMQP_MANAGEMENT_URL" not in env
    assert env["PATH"] == "/bin" and Settings.from_env(env) == bare


def test_the_repr_shows_no_secret() -> None:
    shown = repr(Settings.from_env(ENV))
    assert SECRET not in shown
    assert "broker.example" in shown and "***" in shown


def test_the_default_region_is_the_example_shipped_in_the_package() -> None:
    settings = Settings.from_env({})
    assert settings.region_path == example_region_path()
    repo_copy = Path(__file__).resolve().parents[1] / "deploy" / "region.example.toml"
    assert settings.region_path.read_bytes() == repo_copy.read_bytes()


def test_the_admin_password_has_no_default() -> None:
    with pytest.raises(ConfigError, match="KPX_BROKER_ADMIN_PASSWORD"):
        Settings.from_env({}).admin_password()


def test_a_management_url_that_is_not_http_is_refused_by_name() -> None:
    with pytest.raises(ConfigError, match="KPX_AMQP_MANAGEMENT_URL"):
        Settings.from_env({"KPX_AMQP_MANAGEMENT_URL": "amqp://broker:15672"})


def test_a_node_service_repr_shows_no_password() -> None:
    service = NodeService(
        code="BW",
        dsn=f"postgresql://kpx:{SECRET}@db/kpx_node_bw",
        amqp_url=f"amqp://kpx-bw:{SECRET}@broker/kpx",
        schemas=None,  # type: ignore[arg-type]
        keyring=None,  # type: ignore[arg-type]
        senders=frozenset({"XS"}),
    )
    assert SECRET not in repr(service)
    assert "BW" in repr(service)


def test_the_help_shows_no_admin_password_default() -> None:
    from click.testing import CliRunner

    from exchange.app.cli import cli

    out = CliRunner().invoke(cli, ["topology", "export", "--help"])
    assert out.exit_code == 0
    assert "--admin-password" not in out.output  # neither an option nor a shown default
    assert "KPX_BROKER_ADMIN_PASSWORD" in out.output
