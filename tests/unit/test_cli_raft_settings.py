"""Unit tests of trickle serve's Raft settings: parsing, precedence, and errors naming the
flag, the environment variable or the config file key."""

from __future__ import annotations

from pathlib import Path

import pytest

from trickle.cli.config import (
    ConfigError,
    load_config_file,
    parse_peer,
    parse_peer_list,
    parse_peers,
    parse_raft_addr,
    parse_raft_tick,
    resolve,
)
from trickle.engine.config import DEFAULT_RAFT_TICK, DEFAULT_SNAPSHOT_ENTRIES


def write(tmp_path: Path, text: str, name: str = "trickle.toml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def error_of(flags: dict[str, object], environ: dict[str, str] | None = None) -> str:
    with pytest.raises(ConfigError) as info:
        resolve(flags, environ or {})
    return str(info.value)


# --- defaults ---------------------------------------------------------------------------------


def test_a_lone_server_has_no_raft_listener_and_the_safe_defaults() -> None:
    engine = resolve({"server": True}, {}).engine
    assert engine.raft_bind is None
    assert engine.peers == {}
    assert engine.raft_durability == "fsync"
    assert engine.raft_tick == DEFAULT_RAFT_TICK
    assert engine.linearizable_reads is True
    assert engine.snapshot_entries == DEFAULT_SNAPSHOT_ENTRIES


# --- --raft-addr ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (":6868", "0.0.0.0:6868"),
        ("127.0.0.1:0", "127.0.0.1:0"),
        ("node1.internal:6868", "node1.internal:6868"),
        ("[::1]:6868", "[::1]:6868"),
        (" 10.0.0.1:7000 ", "10.0.0.1:7000"),
    ],
)
def test_raft_addr_accepts_what_http_addr_accepts(text: str, expected: str) -> None:
    assert parse_raft_addr(text) == expected
    assert resolve({"raft-addr": text}, {}).engine.raft_bind == expected


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("6868", "expected host:port"),
        ("host:", "bad port"),
        ("host:70000", "bad port"),
        ("::1:6868", r"\[host\]:port"),
    ],
)
def test_bad_raft_addr_names_the_flag(text: str, reason: str) -> None:
    with pytest.raises(ConfigError, match=f"^--raft-addr: .*{reason}"):
        resolve({"raft-addr": text}, {})


def test_bad_raft_addr_names_the_variable_or_the_file_key(tmp_path: Path) -> None:
    assert error_of({}, {"TRICKLE_RAFT_ADDR": "6868"}).startswith("TRICKLE_RAFT_ADDR: ")
    path = write(tmp_path, 'raft-addr = "6868"\n')
    assert error_of({"config": str(path)}).startswith(f"raft-addr in {path}: bad address")
    path = write(tmp_path, "raft-addr = 6868\n")
    assert f"raft-addr in {path}: expected a string, got an integer" in error_of(
        {"config": str(path)}
    )


def test_raft_addr_cannot_share_the_http_port() -> None:
    message = error_of({"raft-addr": ":9000", "http-addr": "127.0.0.1:9000"})
    assert message == (
        "--raft-addr: port 9000 is also the HTTP API's (--http-addr); give each its own port"
    )
    message = error_of({}, {"TRICKLE_RAFT_ADDR": ":8080"})
    assert "TRICKLE_RAFT_ADDR: port 8080 is also the HTTP API's (the default --http-addr" in (
        message
    )


def test_raft_addr_may_share_a_port_number_on_other_hosts_or_port_zero() -> None:
    settings = resolve({"raft-addr": "127.0.0.1:9000", "http-addr": "127.0.0.2:9000"}, {})
    assert settings.engine.raft_bind == "127.0.0.1:9000"
    settings = resolve({"raft-addr": "127.0.0.1:0", "http-addr": "127.0.0.1:0"}, {})
    assert settings.engine.raft_bind == "127.0.0.1:0"


# --- --peer -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("node2=10.0.0.2:6868", ("node2", "10.0.0.2:6868")),
        (" node2 = node2.internal:7000 ", ("node2", "node2.internal:7000")),
        ("node3=[fd00::3]:6868", ("node3", "[fd00::3]:6868")),
    ],
)
def test_peer_parses_name_and_raft_address(text: str, expected: tuple[str, str]) -> None:
    assert parse_peer(text) == expected


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("node2", "malformed peer 'node2': expected NAME=HOST:PORT"),
        ("=10.0.0.2:6868", "the node name is empty"),
        ("my node=10.0.0.2:6868", "the node name contains a comma or whitespace"),
        ("node2=10.0.0.2", "--peer node2: bad address '10.0.0.2': expected host:port"),
        ("node2=10.0.0.2:x", "--peer node2: bad port"),
        ("node2=:6868", "--peer node2: bad address ':6868': give the host the peer is reached"),
        ("node2=0.0.0.0:6868", "not every interface"),
        ("node2=[::]:6868", "not every interface"),
        ("node2=10.0.0.2:0", "--peer node2: bad address '10.0.0.2:0': port 0 cannot be dialled"),
    ],
)
def test_malformed_peer_is_rejected_naming_the_flag(text: str, reason: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_peer(text)
    message = str(info.value)
    assert message.startswith("--peer")
    assert reason in message


def test_peer_given_twice_is_an_error() -> None:
    with pytest.raises(ConfigError, match=r"--peer: peer 'b' is given twice \(h:1 and h:2\)"):
        parse_peers(["b=h:1", "a=h:3", "b=h:2"])


def test_environment_peer_list_is_comma_separated() -> None:
    assert parse_peer_list("b=h2:6868, c=h3:6868,,", where="TRICKLE_PEERS") == {
        "b": "h2:6868",
        "c": "h3:6868",
    }


def test_peers_from_flags_need_a_raft_addr_named_in_the_error() -> None:
    message = error_of({"server": True, "node-name": "a", "peers": ["b=10.0.0.2:6868"]})
    assert message.startswith("--raft-addr: a server with peers (b, given by --peer)")
    assert "e.g. --raft-addr :6868" in message


def test_missing_raft_addr_error_suggests_the_servers_own_peer_entry() -> None:
    peers = ["a=10.0.0.1:6868", "b=10.0.0.2:6868", "c=10.0.0.3:6868"]
    message = error_of({"server": True, "node-name": "a", "peers": peers})
    assert message.startswith("--raft-addr: a server with peers (b, c, given by --peer)")
    assert "e.g. --raft-addr 10.0.0.1:6868" in message


def test_missing_raft_addr_error_names_where_the_peers_came_from(tmp_path: Path) -> None:
    message = error_of({"server": True, "node-name": "a"}, {"TRICKLE_PEERS": "b=h:1"})
    assert "(b, given by TRICKLE_PEERS)" in message
    path = write(tmp_path, '[peers]\nb = "h:1"\n')
    assert f"(b, given by peers in {path})" in error_of(
        {"server": True, "node-name": "a", "config": str(path)}
    )


def test_peers_listing_only_this_server_need_no_raft_addr() -> None:
    engine = resolve({"server": True, "node-name": "a", "peers": ["a=10.0.0.1:6868"]}, {}).engine
    assert engine.peers == {"a": "10.0.0.1:6868"}
    assert engine.raft_bind is None


def test_a_static_cluster_member_resolves_its_peers_and_listener() -> None:
    flags = {
        "server": True,
        "node-name": "a",
        "raft-addr": ":6868",
        "peers": ["a=10.0.0.1:6868", "b=10.0.0.2:6868", "c=10.0.0.3:6868"],
    }
    engine = resolve(flags, {}).engine
    assert engine.raft_bind == "0.0.0.0:6868"
    assert engine.peers == {"a": "10.0.0.1:6868", "b": "10.0.0.2:6868", "c": "10.0.0.3:6868"}


def test_peers_table_in_the_config_file(tmp_path: Path) -> None:
    path = write(tmp_path, '[peers]\nb = "10.0.0.2:6868"\nc = "[fd00::3]:6868"\n')
    assert load_config_file(path)["peers"] == (
        {"b": "10.0.0.2:6868", "c": "[fd00::3]:6868"},
        f"config file {path}",
    )
    path = write(tmp_path, '[peer]\nb = "10.0.0.2:6868"\n', "singular.toml")
    assert load_config_file(path)["peers"][0] == {"b": "10.0.0.2:6868"}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('peers = "b=h:1"\n', "peers in {}: expected a table, got a string"),
        ("[peers]\nb = 6868\n", "peers.b in {}: expected a string, got an integer"),
        ('[peers]\nb = "h"\n', "peers.b in {}: bad address 'h'"),
        ('[peers]\nb = ":6868"\n', "peers.b in {}: bad address ':6868'"),
        ('[peers]\n"my b" = "h:1"\n', "peers.my b in {}: malformed peer"),
    ],
)
def test_bad_peers_table_names_the_key_and_the_file(
    tmp_path: Path, text: str, message: str
) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_config_file(path)
    assert message.format(path) in str(info.value)


def test_peers_are_taken_whole_from_the_highest_source(tmp_path: Path) -> None:
    path = write(tmp_path, 'raft-addr = ":6868"\n[peers]\nb = "h2:1"\nc = "h3:1"\n')
    settings = resolve(
        {"server": True, "config": str(path), "node-name": "a"}, {"TRICKLE_PEERS": "d=h4:1"}
    )
    assert settings.engine.peers == {"d": "h4:1"}
    assert settings.sources["peers"] == "environment TRICKLE_PEERS"
    settings = resolve(
        {"server": True, "config": str(path), "node-name": "a", "peers": ["e=h5:1"]},
        {"TRICKLE_PEERS": "d=h4:1"},
    )
    assert settings.engine.peers == {"e": "h5:1"}
    assert settings.sources["peers"] == "flag --peer"


def test_empty_peer_flags_do_not_override(tmp_path: Path) -> None:
    path = write(tmp_path, 'raft-addr = ":6868"\n[peers]\nb = "h2:1"\n')
    settings = resolve({"server": True, "config": str(path), "node-name": "a", "peers": ()}, {})
    assert settings.engine.peers == {"b": "h2:1"}


# --- durability, tick, reads, snapshots --------------------------------------------------------


@pytest.mark.parametrize(("text", "expected"), [("fsync", "fsync"), ("NONE", "none")])
def test_raft_durability_choices(text: str, expected: str) -> None:
    assert resolve({"raft-durability": text}, {}).engine.raft_durability == expected


def test_bad_raft_durability_names_each_source(tmp_path: Path) -> None:
    assert error_of({"raft-durability": "full"}).startswith(
        "--raft-durability: expected one of fsync, none, got 'full'"
    )
    assert error_of({}, {"TRICKLE_RAFT_DURABILITY": "off"}).startswith(
        "TRICKLE_RAFT_DURABILITY: expected one of fsync, none"
    )
    path = write(tmp_path, "raft-durability = false\n")
    assert f"raft-durability in {path}: expected a string, got a boolean" in error_of(
        {"config": str(path)}
    )


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("25ms", 0.025), ("100ms", 0.1), ("1s", 1.0), ("0.05", 0.05), ("1ms", 0.001), ("10s", 10.0)],
)
def test_raft_tick_is_a_duration(text: str, seconds: float) -> None:
    assert parse_raft_tick(text) == pytest.approx(seconds)


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("fast", "expected a duration such as 25ms, got 'fast'"),
        ("0", "must be from 1ms to 10s, got '0'"),
        ("500us", "must be from 1ms to 10s"),
        ("1m", "must be from 1ms to 10s"),
        ("-25ms", "cannot be negative"),
        ("nan", "expected a duration such as 25ms"),
        ("inf", "expected a duration such as 25ms"),
    ],
)
def test_bad_raft_tick_names_the_flag(text: str, reason: str) -> None:
    message = error_of({"raft-tick": text})
    assert message.startswith("--raft-tick: ")
    assert reason in message


def test_raft_tick_from_environment_and_file(tmp_path: Path) -> None:
    path = write(tmp_path, 'raft-tick = "50ms"\n')
    assert resolve({"config": str(path)}, {}).engine.raft_tick == pytest.approx(0.05)
    settings = resolve({"config": str(path)}, {"TRICKLE_RAFT_TICK": "10ms"})
    assert settings.engine.raft_tick == pytest.approx(0.01)
    settings = resolve({"config": str(path), "raft-tick": "200ms"}, {"TRICKLE_RAFT_TICK": "10ms"})
    assert settings.engine.raft_tick == pytest.approx(0.2)
    assert error_of({}, {"TRICKLE_RAFT_TICK": "soon"}).startswith("TRICKLE_RAFT_TICK: ")
    path = write(tmp_path, "raft-tick = 25\n", "int.toml")
    assert f"raft-tick in {path}: expected a string, got an integer" in error_of(
        {"config": str(path)}
    )


def test_stale_reads_turns_linearizable_reads_off(tmp_path: Path) -> None:
    assert resolve({"stale-reads": True}, {}).engine.linearizable_reads is False
    assert resolve({}, {"TRICKLE_STALE_READS": "yes"}).engine.linearizable_reads is False
    assert resolve({}, {"TRICKLE_STALE_READS": "false"}).engine.linearizable_reads is True
    path = write(tmp_path, "stale-reads = true\n")
    settings = resolve({"config": str(path)}, {})
    assert settings.engine.linearizable_reads is False
    assert settings.sources["stale-reads"] == f"config file {path}"
    # the environment overrides the file, both ways
    settings = resolve({"config": str(path)}, {"TRICKLE_STALE_READS": "0"})
    assert settings.engine.linearizable_reads is True


def test_bad_stale_reads_names_the_source(tmp_path: Path) -> None:
    assert error_of({}, {"TRICKLE_STALE_READS": "sometimes"}).startswith(
        "TRICKLE_STALE_READS: expected true or false, got 'sometimes'"
    )
    path = write(tmp_path, 'stale-reads = "yes"\n')
    assert f"stale-reads in {path}: expected true or false, got a string" in error_of(
        {"config": str(path)}
    )


def test_snapshot_entries(tmp_path: Path) -> None:
    assert resolve({"snapshot-entries": 100}, {}).engine.snapshot_entries == 100
    assert resolve({}, {"TRICKLE_SNAPSHOT_ENTRIES": "50"}).engine.snapshot_entries == 50
    assert error_of({"snapshot-entries": "0"}).startswith(
        "--snapshot-entries: must be at least 1, got 0"
    )
    path = write(tmp_path, 'snapshot-entries = "many"\n')
    assert f"snapshot-entries in {path}: expected an integer, got a string" in error_of(
        {"config": str(path)}
    )


def test_bad_raft_value_in_a_lower_layer_is_reported_even_when_overridden(
    tmp_path: Path,
) -> None:
    path = write(tmp_path, 'raft-durability = "sometimes"\n')
    with pytest.raises(ConfigError, match="raft-durability in .*trickle.toml: expected one of"):
        resolve({"config": str(path), "raft-durability": "fsync"}, {})


def test_example_config_files_commented_raft_keys_are_valid_when_uncommented(
    tmp_path: Path,
) -> None:
    example = Path(__file__).resolve().parents[2] / "examples" / "trickle.toml"
    keys = ("raft-addr", "raft-durability", "raft-tick", "stale-reads", "snapshot-entries")
    lines = []
    for line in example.read_text(encoding="utf-8").splitlines():
        uncommented = line.removeprefix("# ")
        if uncommented.startswith((*keys, "[peers]", "node1 =", "node2 =", "node3 =")):
            line = uncommented
        lines.append(line)
    path = write(tmp_path, "\n".join(lines) + "\n")
    settings = resolve({"config": str(path), "node-name": "node1"}, {})
    assert {k for k, v in settings.sources.items() if v != "default"} >= {*keys, "peers"}
    engine = settings.engine
    assert engine.raft_bind == "0.0.0.0:6868"
    assert set(engine.peers) == {"node1", "node2", "node3"}
    assert (engine.raft_durability, engine.raft_tick) == ("fsync", DEFAULT_RAFT_TICK)


def test_example_config_files_commented_gossip_keys_are_valid_when_uncommented(
    tmp_path: Path,
) -> None:
    example = Path(__file__).resolve().parents[2] / "examples" / "trickle.toml"
    keys = ("bind-addr", "advertise-addr", "join", "retry-interval", "profile", "encrypt")
    lines = []
    for line in example.read_text(encoding="utf-8").splitlines():
        uncommented = line.removeprefix("# ")
        if uncommented.startswith(keys):
            line = uncommented
        lines.append(line)
    path = write(tmp_path, "\n".join(lines) + "\n")
    settings = resolve({"config": str(path), "node-name": "node1"}, {})
    assert {k for k, v in settings.sources.items() if v != "default"} >= set(keys)
    engine = settings.engine
    assert engine.gossip_enabled and engine.join == ("10.0.0.1:8946",)
    assert len(engine.encrypt) == 1 and "encrypt=<1 key>" in repr(engine)
    assert engine.encrypt[0] not in repr(engine)
