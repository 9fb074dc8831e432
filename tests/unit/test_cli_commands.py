"""The CLI's commands that need no server: version, usage errors, refusing to run an agent."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from trickle import __version__
from trickle.cli.main import cli


def invoke(*args: str, env: dict[str, str] | None = None):  # type: ignore[no-untyped-def]
    return CliRunner().invoke(cli, list(args), env=env or {}, catch_exceptions=False)


def test_version_prints_name_and_version() -> None:
    result = invoke("version")
    assert (result.exit_code, result.stdout) == (0, f"trickle {__version__}\n")


def test_version_json_is_machine_readable() -> None:
    result = invoke("version", "--json")
    assert json.loads(result.stdout) == {"name": "trickle", "version": __version__}


def test_version_flag_on_the_group() -> None:
    assert invoke("--version").stdout == f"trickle {__version__}\n"


def test_serve_without_server_refuses_to_pretend_to_be_an_agent(tmp_path: Path) -> None:
    result = invoke("serve", "--data-dir", str(tmp_path / "d"))
    assert result.exit_code == 2
    assert result.stdout == ""
    assert "agents need the cluster feature" in result.stderr
    assert "--server" in result.stderr
    assert not (tmp_path / "d").exists()  # nothing was started or created


def test_serve_with_server_disabled_by_the_environment_refuses_too() -> None:
    result = invoke("serve", env={"TRICKLE_SERVER": "false"})
    assert result.exit_code == 2
    assert "agents need the cluster feature" in result.stderr


def test_malformed_tag_is_a_usage_error() -> None:
    result = invoke("serve", "--server", "--tag", "rack")
    assert result.exit_code == 2
    assert "--tag: malformed tag 'rack': expected key=value" in result.stderr


def test_bad_environment_value_is_a_usage_error_naming_the_variable() -> None:
    result = invoke("serve", "--server", env={"TRICKLE_HTTP_ADDR": "nope"})
    assert result.exit_code == 2
    assert "TRICKLE_HTTP_ADDR: bad address 'nope'" in result.stderr


def test_bad_config_file_is_a_usage_error_naming_key_and_file(tmp_path: Path) -> None:
    path = tmp_path / "trickle.toml"
    path.write_text("server = true\nhttp_addr = ':1'\n", encoding="utf-8")
    result = invoke("serve", "--config", str(path))
    assert result.exit_code == 2
    assert f"http_addr in {path}: unknown setting 'http_addr'" in result.stderr


def test_bad_client_address_is_a_usage_error() -> None:
    result = invoke("jobs", "list", "--address", "ftp://somewhere")
    assert result.exit_code == 2
    assert "unsupported scheme 'ftp'" in result.stderr


def test_executions_limit_must_be_positive() -> None:
    result = invoke("executions", "job1", "--limit", "0")
    assert result.exit_code == 2
    assert "--limit" in result.stderr


def test_every_command_has_help() -> None:
    for args in (
        ["--help"],
        ["serve", "-h"],
        ["jobs", "--help"],
        ["jobs", "list", "--help"],
        ["jobs", "get", "--help"],
        ["jobs", "put", "--help"],
        ["jobs", "delete", "--help"],
        ["jobs", "run", "--help"],
        ["jobs", "toggle", "--help"],
        ["executions", "--help"],
        ["version", "--help"],
    ):
        result = invoke(*args)
        assert result.exit_code == 0, args
        assert "Usage: " in result.stdout, args
