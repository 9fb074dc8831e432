"""Unit tests of trickle serve's gossip settings (--bind-addr, --advertise-addr, --join,
--retry-interval, --encrypt, --profile): parsing, precedence, port clashes, and errors
naming the flag, the environment variable or the config file key, never a key's text."""

from __future__ import annotations

import base64
import os
from pathlib import Path

import pytest
from click.testing import CliRunner

from trickle.cli.config import (
    ConfigError,
    ignored_gossip_settings,
    load_config_file,
    parse_advertise_addr,
    parse_bind_addr,
    parse_encrypt_keys,
    parse_join,
    parse_joins,
    parse_retry_interval,
    resolve,
)
from trickle.cli.serve import _Binding, _explain, ready_line, serve
from trickle.engine.config import DEFAULT_JOIN_RETRY_INTERVAL
from trickle.gossip.keyring import encode_key

KEY1 = encode_key(bytes(range(32)))
KEY2 = encode_key(bytes(range(100, 116)))
BAD_KEY = base64.b64encode(b"seven b").decode()  # base64, but 7 bytes


# unset every TRICKLE_* variable for the command-line tests: only their flags count
NO_TRICKLE_ENV: dict[str, str | None] = {k: None for k in os.environ if k.startswith("TRICKLE_")}


def write(tmp_path: Path, text: str, name: str = "trickle.toml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def error_of(flags: dict[str, object], environ: dict[str, str] | None = None) -> str:
    with pytest.raises(ConfigError) as info:
        resolve(flags, environ or {})
    return str(info.value)


# --- defaults ---------------------------------------------------------------------------------


def test_without_bind_addr_or_join_there_is_no_gossip() -> None:
    engine = resolve({"server": True}, {}).engine
    assert engine.gossip_enabled is False
    assert engine.gossip_bind is None
    assert engine.gossip_advertise is None
    assert engine.join == ()
    assert engine.encrypt == ()
    assert engine.gossip_profile == "lan"
    assert engine.join_retry_interval == DEFAULT_JOIN_RETRY_INTERVAL == 30.0


def test_join_alone_listens_on_dkrons_port_on_every_interface() -> None:
    engine = resolve({"join": ["10.0.0.1"]}, {}).engine
    assert engine.gossip_enabled is True
    assert engine.gossip_bind == "0.0.0.0:8946"
    assert engine.join == ("10.0.0.1:8946",)


def test_bind_addr_alone_starts_gossip_without_joining() -> None:
    engine = resolve({"bind-addr": "127.0.0.1:0"}, {}).engine
    assert engine.gossip_enabled is True
    assert (engine.gossip_bind, engine.join) == ("127.0.0.1:0", ())


# --- --bind-addr ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (":8946", "0.0.0.0:8946"),
        ("127.0.0.1:0", "127.0.0.1:0"),
        ("10.0.0.1", "10.0.0.1:8946"),
        ("node1.internal:7946", "node1.internal:7946"),
        ("[::1]:8946", "[::1]:8946"),
        ("[::1]", "[::1]:8946"),
        (" 10.0.0.1:7000 ", "10.0.0.1:7000"),
    ],
)
def test_bind_addr_takes_a_host_and_an_optional_port(text: str, expected: str) -> None:
    assert parse_bind_addr(text) == expected
    assert resolve({"bind-addr": text}, {}).engine.gossip_bind == expected


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("", "cannot be empty"),
        ("host:", "bad port"),
        ("host:x", "bad port"),
        ("host:70000", "bad port"),
        ("::1:8946", r"\[host\]:port"),
    ],
)
def test_bad_bind_addr_names_the_flag(text: str, reason: str) -> None:
    with pytest.raises(ConfigError, match=f"^--bind-addr: .*{reason}"):
        parse_bind_addr(text)


def test_bad_bind_addr_names_the_variable_or_the_file_key(tmp_path: Path) -> None:
    assert error_of({}, {"TRICKLE_BIND_ADDR": "h:x"}).startswith("TRICKLE_BIND_ADDR: bad port")
    path = write(tmp_path, 'bind-addr = "h:x"\n')
    assert error_of({"config": str(path)}).startswith(f"bind-addr in {path}: bad port")
    path = write(tmp_path, "bind-addr = 8946\n", "int.toml")
    assert f"bind-addr in {path}: expected a string, got an integer" in error_of(
        {"config": str(path)}
    )


# --- port clashes -----------------------------------------------------------------------------


def test_gossip_port_cannot_be_the_http_port() -> None:
    assert error_of({"bind-addr": "127.0.0.1:9000", "http-addr": ":9000"}) == (
        "--bind-addr: gossip port 9000 is also the HTTP API's (--http-addr); gossip uses TCP "
        "as well as UDP, give each its own port"
    )
    message = error_of({}, {"TRICKLE_BIND_ADDR": ":8080"})
    assert message.startswith(
        "TRICKLE_BIND_ADDR: gossip port 8080 is also the HTTP API's (the default --http-addr :8080)"
    )


def test_gossip_port_cannot_be_the_raft_port() -> None:
    message = error_of({"bind-addr": ":6868", "raft-addr": "127.0.0.1:6868"})
    assert message == (
        "--bind-addr: gossip port 6868 is also the Raft listener's (--raft-addr); gossip uses "
        "TCP as well as UDP, give each its own port"
    )


def test_join_alone_on_the_http_port_names_join_and_suggests_bind_addr(tmp_path: Path) -> None:
    path = write(tmp_path, 'http-addr = ":8946"\n')
    message = error_of({"config": str(path)}, {"TRICKLE_JOIN": "10.0.0.1"})
    assert message == (
        "TRICKLE_JOIN: gossip listens on the default --bind-addr :8946, and port 8946 is also "
        f"the HTTP API's (http-addr in {path}); gossip uses TCP as well as UDP, give "
        "--bind-addr another port"
    )


def test_gossip_may_share_a_port_number_on_other_hosts_or_port_zero() -> None:
    flags = {"bind-addr": "127.0.0.1:9000", "http-addr": "127.0.0.2:9000"}
    assert resolve(flags, {}).engine.gossip_bind == "127.0.0.1:9000"
    flags = {"bind-addr": "127.0.0.1:0", "http-addr": "127.0.0.1:0", "raft-addr": "127.0.0.1:0"}
    assert resolve(flags, {}).engine.gossip_bind == "127.0.0.1:0"


# --- --advertise-addr -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("10.0.0.5", "10.0.0.5"),
        ("10.0.0.5:18946", "10.0.0.5:18946"),
        ("node1.example.com", "node1.example.com"),
        ("[fd00::5]", "[fd00::5]"),
        ("[fd00::5]:8946", "[fd00::5]:8946"),
    ],
)
def test_advertise_addr_takes_a_host_and_an_optional_port(text: str, expected: str) -> None:
    assert parse_advertise_addr(text) == expected
    engine = resolve({"bind-addr": ":0", "advertise-addr": text}, {}).engine
    assert engine.gossip_advertise == expected


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        (":8946", "give the host it is reached at"),
        ("0.0.0.0", "not every interface"),
        ("[::]:8946", "not every interface"),
        ("10.0.0.5:0", "port 0 cannot be dialled"),
        ("10.0.0.5:x", "bad port"),
        ("fd00::5", r"write IPv6 hosts as \[host\]"),
        ("[fd00::5", "expected \\[ipv6\\]"),
    ],
)
def test_bad_advertise_addr_names_the_flag(text: str, reason: str) -> None:
    with pytest.raises(ConfigError, match=f"^--advertise-addr: .*{reason}"):
        parse_advertise_addr(text)


# --- --join -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("10.0.0.1", "10.0.0.1:8946"),
        ("10.0.0.1:7946", "10.0.0.1:7946"),
        ("node1.internal", "node1.internal:8946"),
        ("[fd00::1]", "[fd00::1]:8946"),
        ("[fd00::1]:7946", "[fd00::1]:7946"),
    ],
)
def test_join_address_port_defaults_to_8946(text: str, expected: str) -> None:
    assert parse_join(text) == expected


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("", "cannot be empty"),
        (":8946", "give the host it is reached at"),
        ("0.0.0.0:8946", "not every interface"),
        ("10.0.0.1:0", "port 0 cannot be dialled"),
        ("10.0.0.1:99999", "bad port"),
        ("fd00::1", "write IPv6 hosts"),
    ],
)
def test_bad_join_address_names_the_flag(text: str, reason: str) -> None:
    with pytest.raises(ConfigError, match=f"^--join: .*{reason}"):
        parse_join(text)


def test_join_is_repeatable_and_a_repeated_address_is_kept_once() -> None:
    assert parse_joins(["a", "b:1", "a:8946", "c"]) == ("a:8946", "b:1", "c:8946")
    engine = resolve({"join": ["b", "a"]}, {}).engine
    assert engine.join == ("b:8946", "a:8946")


def test_join_from_the_environment_is_comma_separated() -> None:
    engine = resolve({}, {"TRICKLE_JOIN": "10.0.0.1, 10.0.0.2:7946,,"}).engine
    assert engine.join == ("10.0.0.1:8946", "10.0.0.2:7946")
    assert error_of({}, {"TRICKLE_JOIN": "a,0.0.0.0"}).startswith("TRICKLE_JOIN: bad address")


def test_join_in_the_config_file_is_an_array_or_one_string(tmp_path: Path) -> None:
    path = write(tmp_path, 'join = ["10.0.0.1", "10.0.0.2:7946"]\n')
    assert load_config_file(path)["join"] == (
        ("10.0.0.1:8946", "10.0.0.2:7946"),
        f"config file {path}",
    )
    path = write(tmp_path, 'join = "10.0.0.1"\n', "one.toml")
    assert load_config_file(path)["join"][0] == ("10.0.0.1:8946",)
    path = write(tmp_path, 'retry-join = ["10.0.0.3"]\n', "dkron.toml")  # Dkron's name
    assert load_config_file(path)["join"][0] == ("10.0.0.3:8946",)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("join = 8946\n", "join in {}: expected an array of strings, got an integer"),
        ('join = ["a", 1]\n', "join in {}: expected an array of strings, got an array holding an"),
        ("join = [[]]\n", "join in {}: expected an array of strings, got an array holding an"),
        ('join = ["a", ":1"]\n', "join in {}: bad address ':1'"),
        ("[join]\na = 1\n", "join in {}: expected an array of strings, got a table"),
    ],
)
def test_bad_join_in_the_config_file_names_the_key_and_the_file(
    tmp_path: Path, text: str, message: str
) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_config_file(path)
    assert str(info.value).startswith(message.format(path))


def test_join_is_taken_whole_from_the_highest_source(tmp_path: Path) -> None:
    path = write(tmp_path, 'join = ["file1", "file2"]\n')
    settings = resolve({"config": str(path)}, {"TRICKLE_JOIN": "env1"})
    assert settings.engine.join == ("env1:8946",)
    assert settings.sources["join"] == "environment TRICKLE_JOIN"
    settings = resolve({"config": str(path), "join": ["flag1"]}, {"TRICKLE_JOIN": "env1"})
    assert settings.engine.join == ("flag1:8946",)
    assert settings.sources["join"] == "flag --join"
    settings = resolve({"config": str(path), "join": ()}, {})  # no --join given
    assert settings.engine.join == ("file1:8946", "file2:8946")


# --- --retry-interval -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "seconds"), [("30s", 30.0), ("1m", 60.0), ("500ms", 0.5), ("2", 2)]
)
def test_retry_interval_is_a_duration(text: str, seconds: float) -> None:
    assert parse_retry_interval(text) == pytest.approx(seconds)
    engine = resolve({"join": ["h"], "retry-interval": text}, {}).engine
    assert engine.join_retry_interval == pytest.approx(seconds)


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("0s", "must be more than 0"),
        ("-1s", "cannot be negative"),
        ("soon", "expected a duration such as 30s"),
        ("inf", "expected a duration such as 30s"),
    ],
)
def test_bad_retry_interval_names_the_source(tmp_path: Path, text: str, reason: str) -> None:
    assert error_of({"retry-interval": text}).startswith(f"--retry-interval: {reason}")
    assert error_of({}, {"TRICKLE_RETRY_INTERVAL": text}).startswith(
        f"TRICKLE_RETRY_INTERVAL: {reason}"
    )
    path = write(tmp_path, f"retry-interval = {text!r}\n".replace("'", '"'))
    assert error_of({"config": str(path)}).startswith(f"retry-interval in {path}: {reason}")


# --- --encrypt --------------------------------------------------------------------------------


def test_encrypt_keys_keep_their_order_the_first_encrypts() -> None:
    engine = resolve({"bind-addr": ":0", "encrypt": [KEY2, KEY1, KEY2]}, {}).engine
    assert engine.encrypt == (KEY2, KEY1)
    assert parse_encrypt_keys([f"  {KEY1}\n"]) == (KEY1,)


def test_encrypt_from_the_environment_and_the_config_file(tmp_path: Path) -> None:
    engine = resolve({}, {"TRICKLE_ENCRYPT": f"{KEY1},{KEY2}"}).engine
    assert engine.encrypt == (KEY1, KEY2)
    path = write(tmp_path, f'encrypt = "{KEY1}"\n')  # Dkron's config has one key
    assert load_config_file(path)["encrypt"][0] == (KEY1,)
    path = write(tmp_path, f'encrypt = ["{KEY2}", "{KEY1}"]\n', "rotation.toml")
    assert load_config_file(path)["encrypt"][0] == (KEY2, KEY1)


@pytest.mark.parametrize(
    ("key", "reason"),
    [
        ("not base64!", "the encryption key is not valid base64 (generate one with"),
        (BAD_KEY, "the encryption key must decode to 16, 24 or 32 bytes, not 7 bytes"),
        ("", "the encryption key is empty"),
    ],
)
def test_bad_key_names_where_it_came_from_but_never_shows_the_key(
    tmp_path: Path, key: str, reason: str
) -> None:
    message = error_of({"encrypt": [key]})
    assert message.startswith(f"--encrypt: {reason}")
    message = error_of({"encrypt": [KEY1, key]})
    assert message.startswith(f"--encrypt (key 2 of 2): {reason}")
    if key:
        assert key not in message
        message = error_of({}, {"TRICKLE_ENCRYPT": f"{key},{KEY1}"})
        assert message.startswith(f"TRICKLE_ENCRYPT (key 1 of 2): {reason}")
        assert key not in message
        path = write(tmp_path, f'encrypt = ["{KEY1}", "{KEY2}", "{key}"]\n')
        message = error_of({"config": str(path)})
        assert message.startswith(f"encrypt in {path} (key 3 of 3): {reason}")
        assert key not in message


def test_bad_key_in_a_lower_layer_is_reported_even_when_overridden(tmp_path: Path) -> None:
    path = write(tmp_path, f'encrypt = "{BAD_KEY}"\n')
    message = error_of({"config": str(path), "encrypt": [KEY1]})
    assert message.startswith(f"encrypt in {path}: the encryption key must decode")


def test_settings_repr_never_shows_the_keys() -> None:
    settings = resolve({"bind-addr": ":0", "encrypt": [KEY1, KEY2]}, {})
    text = repr(settings)
    assert KEY1 not in text
    assert KEY2 not in text
    assert "encrypt=<2 keys>" in text
    assert "encrypt=<1 key>" in repr(resolve({"encrypt": [KEY1]}, {}))
    assert "encrypt=()" in repr(resolve({}, {}))


# --- --profile --------------------------------------------------------------------------------


@pytest.mark.parametrize("profile", ["lan", "wan", "local", "fast", "FAST"])
def test_profile_chooses_a_gossip_timing_preset(profile: str) -> None:
    engine = resolve({"bind-addr": ":0", "profile": profile}, {}).engine
    assert engine.gossip_profile == profile.lower()


def test_bad_profile_names_each_source(tmp_path: Path) -> None:
    assert error_of({"profile": "lan2"}) == (
        "--profile: expected one of lan, wan, local, fast, got 'lan2'"
    )
    assert error_of({}, {"TRICKLE_PROFILE": "slow"}).startswith("TRICKLE_PROFILE: expected")
    path = write(tmp_path, "profile = 1\n")
    assert error_of({"config": str(path)}) == (
        f"profile in {path}: expected a string, got an integer"
    )


# --- settings that need gossip ----------------------------------------------------------------


def test_gossip_settings_without_gossip_are_named_as_ignored(tmp_path: Path) -> None:
    path = write(tmp_path, 'profile = "fast"\n')
    settings = resolve(
        {"config": str(path), "encrypt": [KEY1], "advertise-addr": "10.0.0.5"},
        {"TRICKLE_RETRY_INTERVAL": "5s"},
    )
    assert ignored_gossip_settings(settings) == [
        "--advertise-addr",
        "TRICKLE_RETRY_INTERVAL",
        "--encrypt",
        f"profile in {path}",
    ]
    settings = resolve({"config": str(path), "bind-addr": ":0", "encrypt": [KEY1]}, {})
    assert ignored_gossip_settings(settings) == []
    assert ignored_gossip_settings(resolve({}, {})) == []


# --- the command line -------------------------------------------------------------------------


def test_retry_join_is_dkrons_name_for_join() -> None:
    result = CliRunner().invoke(
        serve, ["--server", "--retry-join", "10.0.0.1", "--http-addr", ":8946"], env=NO_TRICKLE_ENV
    )
    assert result.exit_code == 2
    assert "--join: gossip listens on the default --bind-addr :8946" in result.output


def test_bad_key_on_the_command_line_is_a_usage_error_without_the_key() -> None:
    result = CliRunner().invoke(
        serve, ["--server", "--bind-addr", "127.0.0.1:0", "--encrypt", BAD_KEY], env=NO_TRICKLE_ENV
    )
    assert result.exit_code == 2
    assert "--encrypt: the encryption key must decode to 16, 24 or 32 bytes" in result.output
    assert BAD_KEY not in result.output


# --- the ready line and bind errors -----------------------------------------------------------


def test_ready_line_names_the_gossip_address_only_when_gossip_runs() -> None:
    settings = resolve({"server": True, "http-addr": "127.0.0.1:0"}, {})
    urls = ["http://127.0.0.1:8080"]
    assert "gossip" not in ready_line(settings, urls)
    line = ready_line(settings, urls, raft=("::1", 6868), gossip=("10.0.0.5", 8946))
    assert (line["raft"], line["gossip"]) == ("[::1]:6868", "10.0.0.5:8946")
    assert ready_line(settings, urls, gossip=("fd00::5", 0))["gossip"] == "[fd00::5]:0"


def _raise_address_in_use_from(module: str) -> OSError:
    """An EADDRINUSE raised by code of ``module`` (as a bind in that package would be)."""
    namespace: dict[str, object] = {"__name__": module}
    exec("def bind():\n    raise OSError(98, 'Address already in use')\n", namespace)
    try:
        namespace["bind"]()  # type: ignore[operator]
    except OSError as exc:
        return exc
    raise AssertionError("unreachable")


def test_a_bind_error_while_starting_names_the_listener_that_raised_it() -> None:
    binding = _Binding(raft="127.0.0.1:6868 (--raft-addr)", gossip="127.0.0.1:8946 (--bind-addr)")
    gossip_error = _raise_address_in_use_from("trickle.gossip.transport")
    raft_error = _raise_address_in_use_from("trickle.raft.transport")
    assert _explain(gossip_error, binding) == (
        "cannot listen on 127.0.0.1:8946 (--bind-addr): the address is already in use"
    )
    assert _explain(raft_error, binding) == (
        "cannot listen on 127.0.0.1:6868 (--raft-addr): the address is already in use"
    )
    only_gossip = _Binding(gossip="0.0.0.0:8946 (--bind-addr's default, used with --join)")
    assert "0.0.0.0:8946 (--bind-addr's default" in _explain(raft_error, only_gossip)
    assert _explain(raft_error, _Binding(http="127.0.0.1:8080")) == (
        "cannot listen on 127.0.0.1:8080: the address is already in use"
    )
