"""Unit tests of trickle serve's cluster flags (Dkron's --bootstrap-expect, --retry-max,
--rpc-port, --raft-multiplier): each from a flag, TRICKLE_* and the config file, its
default, and errors naming where the bad value came from."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from trickle.cli.config import (
    ConfigError,
    ignored_gossip_settings,
    parse_raft_multiplier,
    parse_rpc_port,
    raft_listener_where,
    resolve,
)
from trickle.cli.main import cli
from trickle.cli.serve import _Binding, _explain
from trickle.engine.config import DEFAULT_RAFT_TICK
from trickle.errors import JoinFailed

JOIN = {"join": ["10.0.0.1"]}


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "trickle.toml"
    path.write_text(text, encoding="utf-8")
    return path


def error_of(flags: dict[str, object], environ: dict[str, str] | None = None) -> str:
    with pytest.raises(ConfigError) as info:
        resolve(flags, environ or {})
    return str(info.value)


# --- defaults ---------------------------------------------------------------------------------


def test_defaults_are_dkrons() -> None:
    engine = resolve({"server": True, **JOIN}, {}).engine
    assert engine.bootstrap_expect == 0
    assert engine.join_retry_max == 0  # retry forever
    assert engine.raft_tick == DEFAULT_RAFT_TICK  # multiplier 1
    assert engine.raft_bind == "0.0.0.0:6868"


# --- --bootstrap-expect -----------------------------------------------------------------------


def test_bootstrap_expect_from_each_source(tmp_path: Path) -> None:
    server = {"server": True, **JOIN}
    assert resolve({**server, "bootstrap-expect": "3"}, {}).engine.bootstrap_expect == 3
    settings = resolve(server, {"TRICKLE_BOOTSTRAP_EXPECT": "5"})
    assert settings.engine.bootstrap_expect == 5
    assert settings.sources["bootstrap-expect"] == "environment TRICKLE_BOOTSTRAP_EXPECT"
    path = write(tmp_path, "bootstrap-expect = 3\n")
    assert resolve({**server, "config": str(path)}, {}).engine.bootstrap_expect == 3
    # a flag beats the environment, which beats the file
    settings = resolve(
        {**server, "config": str(path), "bootstrap-expect": "1"},
        {"TRICKLE_BOOTSTRAP_EXPECT": "5"},
    )
    assert settings.engine.bootstrap_expect == 1


def test_bootstrap_expect_on_an_agent_is_refused_with_the_fix() -> None:
    message = error_of({"bootstrap-expect": "3", **JOIN})
    assert message.startswith("--bootstrap-expect 3: only servers form the Raft cluster")
    assert "give --server too" in message


def test_bootstrap_expect_with_peers_is_refused_naming_both_sources(tmp_path: Path) -> None:
    flags = {"server": True, "bootstrap-expect": "3", "raft-addr": ":6868", **JOIN}
    message = error_of({**flags, "peers": ["b=10.0.0.2:6868"]})
    assert message.startswith("--bootstrap-expect 3 and --peer are two ways to form a cluster")
    path = write(tmp_path, 'bootstrap-expect = 3\n[peers]\nb = "10.0.0.2:6868"\n')
    message = error_of({"server": True, "config": str(path), **JOIN})
    assert message.startswith(f"bootstrap-expect in {path} 3 and peers in {path} are two ways")


def test_bootstrap_expect_without_gossip_asks_for_join() -> None:
    message = error_of({"server": True}, {"TRICKLE_BOOTSTRAP_EXPECT": "3"})
    assert message.startswith("TRICKLE_BOOTSTRAP_EXPECT 3: the servers find each other by gossip")
    assert "--join" in message


def test_bootstrap_expect_zero_is_off_even_on_an_agent() -> None:
    assert resolve({"bootstrap-expect": "0", **JOIN}, {}).engine.bootstrap_expect == 0


@pytest.mark.parametrize(("text", "problem"), [("-1", "must be 0 or more"), ("three", "integer")])
def test_bad_bootstrap_expect_names_the_source(tmp_path: Path, text: str, problem: str) -> None:
    message = error_of({"server": True, **JOIN}, {"TRICKLE_BOOTSTRAP_EXPECT": text})
    assert message.startswith("TRICKLE_BOOTSTRAP_EXPECT: ") and problem in message
    path = write(tmp_path, 'bootstrap-expect = "3"\n')
    message = error_of({"server": True, "config": str(path), **JOIN})
    assert message == f"bootstrap-expect in {path}: expected an integer, got a string"


# --- --retry-max ------------------------------------------------------------------------------


def test_retry_max_from_each_source(tmp_path: Path) -> None:
    assert resolve({"retry-max": "3", **JOIN}, {}).engine.join_retry_max == 3
    assert resolve(JOIN, {"TRICKLE_RETRY_MAX": "7"}).engine.join_retry_max == 7
    path = write(tmp_path, "retry-max = 2\n")
    assert resolve({"config": str(path), **JOIN}, {}).engine.join_retry_max == 2


def test_negative_retry_max_is_refused() -> None:
    assert error_of({"retry-max": "-1", **JOIN}) == "--retry-max: must be 0 or more, got -1"


def test_retry_max_without_gossip_is_reported_as_ignored() -> None:
    settings = resolve({"server": True, "retry-max": "3"}, {})
    assert ignored_gossip_settings(settings) == ["--retry-max"]


def test_join_failed_is_explained_with_the_addresses_and_the_flag() -> None:
    failure = JoinFailed(
        "n1 could not join the cluster: none of 10.0.0.1:8946 answered in 2 attempts"
    )
    message = _explain(BaseExceptionGroup("engine", [failure]), _Binding())
    assert message == (
        "n1 could not join the cluster: none of 10.0.0.1:8946 answered in 2 attempts; "
        "gave up (--retry-max)"
    )


# --- --rpc-port and --raft-addr ---------------------------------------------------------------


def test_rpc_port_listens_on_the_bind_addr_host() -> None:
    flags = {"server": True, "bind-addr": "10.0.0.1", "rpc-port": "7000"}
    assert resolve(flags, {}).engine.raft_bind == "10.0.0.1:7000"
    flags = {"server": True, "bind-addr": "[fd00::1]:8946", "rpc-port": "0"}
    assert resolve(flags, {}).engine.raft_bind == "[fd00::1]:0"


def test_rpc_port_without_bind_addr_listens_on_every_interface(tmp_path: Path) -> None:
    assert resolve({"server": True, "rpc-port": "7000"}, {}).engine.raft_bind == "0.0.0.0:7000"
    assert resolve(JOIN, {"TRICKLE_RPC_PORT": "7001"}).engine.raft_bind == "0.0.0.0:7001"
    path = write(tmp_path, "rpc-port = 7002\n")
    assert resolve({"config": str(path), **JOIN}, {}).engine.raft_bind == "0.0.0.0:7002"


def test_a_gossiping_server_and_an_agent_listen_on_6868_by_default() -> None:
    assert resolve({"server": True, **JOIN}, {}).engine.raft_bind == "0.0.0.0:6868"
    flags = {"server": True, "bind-addr": "127.0.0.1:0"}
    assert resolve(flags, {}).engine.raft_bind == "127.0.0.1:6868"
    assert resolve({"bind-addr": "10.0.0.5"}, {}).engine.raft_bind == "10.0.0.5:6868"


def test_a_server_without_gossip_listens_nowhere_unless_told() -> None:
    assert resolve({"server": True}, {}).engine.raft_bind is None


def test_raft_addr_and_rpc_port_on_the_same_port_use_raft_addr() -> None:
    flags = {"server": True, "raft-addr": "127.0.0.1:7000", "rpc-port": "7000", **JOIN}
    assert resolve(flags, {}).engine.raft_bind == "127.0.0.1:7000"


def test_raft_addr_and_rpc_port_on_different_ports_contradict(tmp_path: Path) -> None:
    path = write(tmp_path, 'raft-addr = "127.0.0.1:7000"\n')
    message = error_of({"server": True, "config": str(path), "rpc-port": "7001", **JOIN})
    assert message.startswith(
        f"--rpc-port 7001 and raft-addr in {path} 127.0.0.1:7000 name different ports for "
        "the one Raft/RPC listener: give one of them"
    )


@pytest.mark.parametrize("text", ["-1", "65536", "port", "6868.0"])
def test_bad_rpc_port_is_refused(text: str) -> None:
    with pytest.raises(ConfigError, match="^TRICKLE_RPC_PORT: expected a port number"):
        parse_rpc_port(text, where="TRICKLE_RPC_PORT")


def test_rpc_port_satisfies_a_static_cluster() -> None:
    flags = {"server": True, "node-name": "a", "rpc-port": "6868", "peers": ["b=10.0.0.2:6868"]}
    assert resolve(flags, {}).engine.raft_bind == "0.0.0.0:6868"
    message = error_of({"server": True, "node-name": "a", "peers": ["b=10.0.0.2:6868"]})
    assert "--rpc-port 6868" in message


def test_rpc_port_on_the_http_port_is_refused_naming_it() -> None:
    message = error_of({"server": True, "http-addr": "127.0.0.1:7000", "rpc-port": "7000"})
    assert message.startswith("--rpc-port: port 7000 is also the HTTP API's (--http-addr)")


def test_default_rpc_port_on_the_gossip_port_is_named_as_the_default() -> None:
    message = error_of({"server": True, "bind-addr": ":6868"})
    assert "the default --rpc-port 6868" in message


def test_the_listener_is_named_by_its_source() -> None:
    assert raft_listener_where({"raft-addr": "flag --raft-addr"}) == "--raft-addr"
    assert raft_listener_where(
        {"raft-addr": "default", "rpc-port": "environment TRICKLE_RPC_PORT"}
    ) == ("TRICKLE_RPC_PORT")
    assert raft_listener_where({"raft-addr": "default", "rpc-port": "default"}) == (
        "the default --rpc-port 6868"
    )


# --- --raft-multiplier ------------------------------------------------------------------------


def test_raft_multiplier_scales_the_tick(tmp_path: Path) -> None:
    engine = resolve({"server": True, "raft-multiplier": "4"}, {}).engine
    assert engine.raft_tick == pytest.approx(DEFAULT_RAFT_TICK * 4)
    engine = resolve(
        {"server": True, "raft-tick": "10ms"}, {"TRICKLE_RAFT_MULTIPLIER": "10"}
    ).engine
    assert engine.raft_tick == pytest.approx(0.1)
    path = write(tmp_path, "raft-multiplier = 2\n")
    engine = resolve({"server": True, "config": str(path)}, {}).engine
    assert engine.raft_tick == pytest.approx(DEFAULT_RAFT_TICK * 2)


@pytest.mark.parametrize("value", [0, 11, -1])
def test_raft_multiplier_outside_1_to_10_fails_as_dkrons(value: int) -> None:
    with pytest.raises(ConfigError) as info:
        parse_raft_multiplier(str(value))
    assert str(info.value) == f"--raft-multiplier: cannot be {value}, must be between 1 and 10"


def test_raft_multiplier_in_a_file_must_be_an_integer(tmp_path: Path) -> None:
    path = write(tmp_path, "raft-multiplier = 1.5\n")
    message = error_of({"server": True, "config": str(path)})
    assert message == f"raft-multiplier in {path}: expected an integer, got a float"


# --- the command line -------------------------------------------------------------------------


def test_serve_refuses_bootstrap_expect_on_an_agent_with_exit_2(tmp_path: Path) -> None:
    args = ["serve", "--data-dir", str(tmp_path), "--join", "10.0.0.1", "--bootstrap-expect", "3"]
    result = CliRunner().invoke(cli, args, env={})
    assert result.exit_code == 2
    assert "--bootstrap-expect 3: only servers form the Raft cluster" in result.stderr


def test_serve_refuses_a_raft_multiplier_of_11_with_exit_2(tmp_path: Path) -> None:
    args = ["serve", "--server", "--data-dir", str(tmp_path), "--raft-multiplier", "11"]
    result = CliRunner().invoke(cli, args, env={})
    assert result.exit_code == 2
    assert "--raft-multiplier: cannot be 11, must be between 1 and 10" in result.stderr


def test_serve_help_lists_the_cluster_flags() -> None:
    text = CliRunner().invoke(cli, ["serve", "--help"]).stdout
    for flag in ("--bootstrap-expect", "--retry-max", "--rpc-port", "--raft-multiplier"):
        assert flag in text
    for env in ("TRICKLE_BOOTSTRAP_EXPECT", "TRICKLE_RETRY_MAX", "TRICKLE_RPC_PORT"):
        assert env in text
