"""The CLI's commands that need no server: version, usage errors, refusing to run an agent,
and the tables of the cluster commands."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from trickle import __version__
from trickle.cli import output
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


def test_an_agent_without_join_does_not_start_and_says_why(tmp_path: Path) -> None:
    result = invoke(
        "serve", "--data-dir", str(tmp_path / "d"), "--http-addr", "127.0.0.1:0", "--rpc-port", "0"
    )
    assert result.exit_code == 1
    assert result.stdout == ""
    assert "join" in result.stderr and "finds the servers by gossip" in result.stderr


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
        ["members", "--help"],
        ["leave", "--help"],
        ["raft", "--help"],
        ["raft", "list-peers", "--help"],
        ["raft", "remove-peer", "--help"],
        ["version", "--help"],
    ):
        result = invoke(*args)
        assert result.exit_code == 0, args
        assert "Usage: " in result.stdout, args


def test_remove_peer_needs_a_peer_id() -> None:
    result = invoke("raft", "remove-peer")
    assert result.exit_code == 2
    assert "Missing option '--peer-id'" in result.stderr


def test_remove_peer_refuses_a_blank_peer_id() -> None:
    result = invoke("raft", "remove-peer", "--peer-id", " ")
    assert result.exit_code == 2
    assert "--peer-id" in result.stderr and "give the node name of a server" in result.stderr


def test_unknown_raft_subcommand_is_a_usage_error() -> None:
    result = invoke("raft", "add-peer")
    assert result.exit_code == 2
    assert "No such command 'add-peer'" in result.stderr


def test_members_table_shows_address_status_and_every_tag() -> None:
    members = [
        {
            "Name": "node1",
            "Addr": "10.0.0.1",
            "Port": 8946,
            "Status": 1,
            "statusText": "alive",
            "Tags": {"server": "true", "dc": "dc1", "rpc_addr": "10.0.0.1:6868"},
        },
        {"Name": "agent-7", "Addr": "fd00::7", "Port": 8946, "Status": 4, "Tags": {}},
        {"Name": "ghost", "Addr": "", "Port": 0, "Status": 3},
    ]
    assert output.members_table(members).splitlines() == [
        "NAME     ADDRESS         STATUS  TAGS",
        "node1    10.0.0.1:8946   alive   dc=dc1, rpc_addr=10.0.0.1:6868, server=true",
        "agent-7  [fd00::7]:8946  failed  -",
        "ghost    -               left    -",
    ]


def test_raft_peers_table_is_dkrons() -> None:
    peers = [
        {"id": "a", "node": "a", "address": "10.0.0.1:6868", "leader": False, "voter": True},
        {"id": "b", "node": "b", "address": "10.0.0.2:6868", "leader": True, "voter": True},
        {"id": "c", "node": "c", "address": "", "leader": False, "voter": False},
    ]
    assert output.raft_peers_table(peers).splitlines() == [
        "Node  ID  Address        State     Voter",
        "a     a   10.0.0.1:6868  follower  true",
        "b     b   10.0.0.2:6868  leader    true",
        "c     c   -              follower  false",
    ]
