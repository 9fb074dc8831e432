"""Unit tests of trickle serve's settings: parsing, TOML files, and precedence."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from trickle.cli.config import (
    ConfigError,
    load_config_file,
    normalise_address,
    parse_executor_limit,
    parse_http_addr,
    parse_tag,
    parse_tag_list,
    resolve,
)


def write(tmp_path: Path, text: str, name: str = "trickle.toml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


# --- tags --------------------------------------------------------------------------------------


def test_tag_splits_on_first_equals_sign() -> None:
    assert parse_tag("rack=a=b") == ("rack", "a=b")


def test_tag_value_may_be_empty() -> None:
    assert parse_tag("gpu=") == ("gpu", "")


@pytest.mark.parametrize(
    ("text", "reason"),
    [("rack", "expected key=value"), ("=a", "the key is empty"), ("my rack=a", "whitespace")],
)
def test_malformed_tag_is_rejected_with_the_reason(text: str, reason: str) -> None:
    with pytest.raises(ConfigError, match=reason) as info:
        parse_tag(text)
    assert "--tag" in str(info.value)
    assert repr(text) in str(info.value)


@pytest.mark.parametrize("key", ["server", "dkron_server", "region", "dc", "role"])
def test_reserved_tag_is_rejected(key: str) -> None:
    with pytest.raises(ConfigError, match="reserved"):
        parse_tag(f"{key}=x")


def test_region_tag_error_points_to_the_region_flag() -> None:
    with pytest.raises(ConfigError, match="use --region"):
        parse_tag("region=eu")


def test_environment_tag_list_is_comma_separated() -> None:
    assert parse_tag_list("a=1, b=2,,", where="TRICKLE_TAGS") == {"a": "1", "b": "2"}


def test_environment_tag_list_error_names_the_variable() -> None:
    with pytest.raises(ConfigError, match="TRICKLE_TAGS: malformed tag 'b'"):
        parse_tag_list("a=1,b", where="TRICKLE_TAGS")


# --- http address ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (":8080", ("0.0.0.0", 8080)),
        ("127.0.0.1:0", ("127.0.0.1", 0)),
        ("localhost:9000", ("localhost", 9000)),
        ("[::1]:8080", ("::1", 8080)),
        (" :65535 ", ("0.0.0.0", 65535)),
    ],
)
def test_http_addr_parses_host_and_port(text: str, expected: tuple[str, int]) -> None:
    assert parse_http_addr(text) == expected


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("8080", "expected host:port"),
        ("localhost", "expected host:port"),
        ("host:", "bad port"),
        ("host:http", "bad port"),
        ("host:-1", "bad port"),
        ("host:65536", "bad port"),
        ("::1:8080", r"\[host\]:port"),
        ("[::1]8080", r"\[ipv6\]:port"),
    ],
)
def test_bad_http_addr_is_rejected_with_the_reason(text: str, reason: str) -> None:
    with pytest.raises(ConfigError, match=reason) as info:
        parse_http_addr(text)
    assert str(info.value).startswith("--http-addr: ")


# --- executor limits, addresses -------------------------------------------------------------


def test_executor_limit_parses_name_and_count() -> None:
    assert parse_executor_limit("shell=4") == ("shell", 4)


@pytest.mark.parametrize("text", ["shell", "=4", "shell=four", "shell=-1"])
def test_bad_executor_limit_is_rejected(text: str) -> None:
    with pytest.raises(ConfigError, match="--executor-limit"):
        parse_executor_limit(text)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("127.0.0.1:8080", "http://127.0.0.1:8080"),
        ("http://node1:8080/", "http://node1:8080"),
        ("https://trickle.example", "https://trickle.example"),
    ],
)
def test_client_address_gets_a_scheme_and_loses_the_trailing_slash(
    text: str, expected: str
) -> None:
    assert normalise_address(text) == expected


def test_client_address_with_another_scheme_is_rejected() -> None:
    with pytest.raises(ConfigError, match="unsupported scheme 'ftp'"):
        normalise_address("ftp://x")


# --- defaults ---------------------------------------------------------------------------------


def test_defaults_match_dkron() -> None:
    settings = resolve({}, {})
    assert settings.engine.data_dir == Path("trickle.data")
    assert (settings.http_host, settings.http_port) == ("0.0.0.0", 8080)
    assert settings.engine.node_name == socket.gethostname()
    assert settings.engine.server is False
    assert settings.engine.region == "global"
    assert settings.engine.datacenter == "dc1"
    assert settings.engine.history_limit == 100
    assert settings.log_level == "info"
    assert set(settings.sources.values()) == {"default"}


# --- precedence -------------------------------------------------------------------------------


FILE = """
server = true
data-dir = "/from/file"
http-addr = "127.0.0.1:1111"
node-name = "file-node"
log-level = "debug"
region = "file-region"
max-concurrent = 3
history-limit = 7
durability = "full"

[tags]
rack = "file"

[executor-limits]
shell = 2
"""


def test_config_file_overrides_defaults(tmp_path: Path) -> None:
    path = write(tmp_path, FILE)
    settings = resolve({"config": str(path)}, {})
    engine = settings.engine
    assert engine.server is True
    assert engine.data_dir == Path("/from/file")
    assert (settings.http_host, settings.http_port) == ("127.0.0.1", 1111)
    assert engine.node_name == "file-node"
    assert settings.log_level == "debug"
    assert engine.region == "file-region"
    assert engine.max_concurrent == 3
    assert engine.history_limit == 7
    assert engine.durability == "full"
    assert engine.tags == {"rack": "file"}
    assert engine.executor_limits == {"shell": 2}
    assert settings.sources["data-dir"] == f"config file {path}"
    assert settings.sources["datacenter"] == "default"


def test_environment_overrides_config_file(tmp_path: Path) -> None:
    path = write(tmp_path, FILE)
    environ = {
        "TRICKLE_DATA_DIR": "/from/env",
        "TRICKLE_HTTP_ADDR": ":2222",
        "TRICKLE_TAGS": "rack=env,zone=b",
        "TRICKLE_EXECUTOR_LIMITS": "http=5",
        "TRICKLE_LOG_LEVEL": "WARN",
        "TRICKLE_SERVER": "false",
        "TRICKLE_MAX_CONCURRENT": "9",
    }
    settings = resolve({"config": str(path)}, environ)
    assert settings.engine.data_dir == Path("/from/env")
    assert (settings.http_host, settings.http_port) == ("0.0.0.0", 2222)
    assert settings.engine.tags == {"rack": "env", "zone": "b"}  # replaced, not merged
    assert settings.engine.executor_limits == {"http": 5}
    assert settings.log_level == "warn"
    assert settings.engine.server is False
    assert settings.engine.max_concurrent == 9
    assert settings.engine.node_name == "file-node"  # not in the environment: the file's
    assert settings.sources["data-dir"] == "environment TRICKLE_DATA_DIR"


def test_flags_override_environment_and_config_file(tmp_path: Path) -> None:
    path = write(tmp_path, FILE)
    environ = {
        "TRICKLE_DATA_DIR": "/from/env",
        "TRICKLE_TAGS": "rack=env",
        "TRICKLE_NODE_NAME": "env-node",
    }
    flags = {
        "config": str(path),
        "data-dir": "/from/flag",
        "tags": ["rack=flag"],
        "http-addr": "127.0.0.1:0",
        "history-limit": 42,
        "server": True,
    }
    settings = resolve(flags, environ)
    assert settings.engine.data_dir == Path("/from/flag")
    assert settings.engine.tags == {"rack": "flag"}
    assert settings.http_port == 0
    assert settings.engine.history_limit == 42
    assert settings.engine.node_name == "env-node"
    assert settings.sources["tags"] == "flag --tag"
    assert settings.sources["node-name"] == "environment TRICKLE_NODE_NAME"


def test_flags_not_given_do_not_override(tmp_path: Path) -> None:
    path = write(tmp_path, FILE)
    settings = resolve({"config": str(path), "data-dir": None, "tags": ()}, {})
    assert settings.engine.data_dir == Path("/from/file")
    assert settings.engine.tags == {"rack": "file"}


def test_config_file_can_be_named_by_the_environment(tmp_path: Path) -> None:
    path = write(tmp_path, 'node-name = "via-env-config"\n')
    settings = resolve({}, {"TRICKLE_CONFIG": str(path)})
    assert settings.engine.node_name == "via-env-config"


def test_config_flag_wins_over_config_environment(tmp_path: Path) -> None:
    flag_file = write(tmp_path, 'node-name = "flag-file"\n', "a.toml")
    env_file = write(tmp_path, 'node-name = "env-file"\n', "b.toml")
    settings = resolve({"config": str(flag_file)}, {"TRICKLE_CONFIG": str(env_file)})
    assert settings.engine.node_name == "flag-file"


def test_empty_environment_variable_counts_as_unset() -> None:
    settings = resolve({}, {"TRICKLE_NODE_NAME": "", "TRICKLE_TAGS": " "})
    assert settings.engine.node_name == socket.gethostname()
    assert settings.sources["node-name"] == "default"


def test_server_tags_are_added_to_user_tags() -> None:
    settings = resolve({"server": True, "tags": ["rack=a"]}, {})
    tags = settings.engine.node_tags
    assert tags["rack"] == "a"
    assert tags["server"] == "true"
    assert tags["dkron_server"] == "true"


# --- bad values name their source -----------------------------------------------------------


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        ({"TRICKLE_SERVER": "maybe"}, "TRICKLE_SERVER: expected true or false, got 'maybe'"),
        ({"TRICKLE_HISTORY_LIMIT": "0"}, "TRICKLE_HISTORY_LIMIT: must be at least 1"),
        ({"TRICKLE_MAX_CONCURRENT": "lots"}, "TRICKLE_MAX_CONCURRENT: expected an integer"),
        ({"TRICKLE_LOG_LEVEL": "loud"}, "TRICKLE_LOG_LEVEL: expected one of debug, info"),
        ({"TRICKLE_DURABILITY": "maybe"}, "TRICKLE_DURABILITY: expected one of full, normal"),
        ({"TRICKLE_HTTP_ADDR": "8080"}, "TRICKLE_HTTP_ADDR: bad address '8080'"),
    ],
)
def test_bad_environment_value_names_the_variable(environ: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError) as info:
        resolve({}, environ)
    assert message in str(info.value)


def test_bad_flag_value_names_the_flag() -> None:
    with pytest.raises(ConfigError, match="^--log-level: expected one of"):
        resolve({"log-level": "chatty"}, {})


def test_bad_value_in_a_lower_layer_is_reported_even_when_overridden(tmp_path: Path) -> None:
    path = write(tmp_path, "history-limit = 0\n")
    with pytest.raises(ConfigError, match="history-limit in .*trickle.toml: must be at least 1"):
        resolve({"config": str(path), "history-limit": 5}, {})


# --- the config file --------------------------------------------------------------------------


def test_unknown_key_names_the_key_and_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, 'data_dir = "x"\n')
    with pytest.raises(ConfigError) as info:
        load_config_file(path)
    message = str(info.value)
    assert f"data_dir in {path}" in message
    assert "unknown setting 'data_dir'" in message
    assert "data-dir" in message  # the list of known settings helps spot the typo


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('server = "yes"\n', "server in {}: expected true or false, got a string"),
        ('history-limit = "10"\n', "history-limit in {}: expected an integer, got a string"),
        ("max-concurrent = true\n", "max-concurrent in {}: expected an integer, got a boolean"),
        ("node-name = 5\n", "node-name in {}: expected a string, got an integer"),
        ('tags = "a=b"\n', "tags in {}: expected a table, got a string"),
        ("[tags]\nrack = 1\n", "tags.rack in {}: expected a string, got an integer"),
        ('[tags]\nregion = "eu"\n', "tags.region in {}: tag 'region' is reserved"),
        (
            '[executor-limits]\nshell = "4"\n',
            "executor-limits.shell in {}: expected an integer, got a string",
        ),
        ("[executor-limits]\nshell = -1\n", "executor-limits.shell in {}: must be 0 or more"),
        ('http-addr = "8080"\n', "http-addr in {}: bad address '8080'"),
        ('log-level = "verbose"\n', "log-level in {}: expected one of"),
    ],
)
def test_wrong_type_in_config_file_names_the_key_and_the_file(
    tmp_path: Path, text: str, message: str
) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_config_file(path)
    assert message.format(path) in str(info.value)


def test_invalid_toml_names_the_file_and_the_line(tmp_path: Path) -> None:
    path = write(tmp_path, "server = true\ndata-dir = \n")
    with pytest.raises(ConfigError, match=r"is not valid TOML: .*line 2") as info:
        load_config_file(path)
    assert str(path) in str(info.value)


def test_missing_config_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        resolve({"config": str(tmp_path / "nope.toml")}, {})


def test_config_file_accepts_the_singular_flag_names_for_tables(tmp_path: Path) -> None:
    path = write(tmp_path, '[tag]\nrack = "a"\n[executor-limit]\nshell = 1\n')
    settings = resolve({"config": str(path)}, {})
    assert settings.engine.tags == {"rack": "a"}
    assert settings.engine.executor_limits == {"shell": 1}


def test_example_config_file_is_valid() -> None:
    example = Path(__file__).resolve().parents[2] / "examples" / "trickle.toml"
    settings = resolve({"config": str(example)}, {})
    assert settings.engine.server is True


def test_cluster_max_running_comes_from_the_environment_and_refuses_a_negative() -> None:
    settings = resolve({}, {"TRICKLE_CLUSTER_MAX_RUNNING": "12"})
    assert settings.engine.cluster_max_running == 12
    with pytest.raises(ConfigError, match="cluster-max-running"):
        resolve({"cluster-max-running": "-1"}, {})


# --- max-lateness -------------------------------------------------------------------------------


def test_max_lateness_is_off_by_default_and_takes_a_duration_from_any_source(
    tmp_path: Path,
) -> None:
    assert resolve({}, {}).engine.max_lateness is None
    assert resolve({"max-lateness": "1m30s"}, {}).engine.max_lateness == 90.0
    assert resolve({}, {"TRICKLE_MAX_LATENESS": "2.5"}).engine.max_lateness == 2.5
    path = write(tmp_path, 'max-lateness = "30s"\n')
    assert resolve({"config": str(path)}, {}).engine.max_lateness == 30.0
    assert resolve({"config": str(path), "max-lateness": "0"}, {}).engine.max_lateness is None


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("soon", "--max-lateness: expected a duration such as 30s, got 'soon'"),
        ("-5s", "--max-lateness: cannot be negative"),
    ],
)
def test_a_bad_max_lateness_names_the_flag(text: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        resolve({"max-lateness": text}, {})
    assert message in str(info.value)


# --- launch-spin --------------------------------------------------------------------------------


def test_launch_spin_is_300us_by_default_and_takes_a_duration_from_any_source(
    tmp_path: Path,
) -> None:
    assert resolve({}, {}).engine.launch_spin == 0.0003
    assert resolve({"launch-spin": "1ms"}, {}).engine.launch_spin == 0.001
    assert resolve({}, {"TRICKLE_LAUNCH_SPIN": "0.0005"}).engine.launch_spin == 0.0005
    path = write(tmp_path, 'launch-spin = "200us"\n')
    assert resolve({"config": str(path)}, {}).engine.launch_spin == 0.0002
    assert resolve({"config": str(path), "launch-spin": "0"}, {}).engine.launch_spin == 0


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("soon", "--launch-spin: expected a duration such as 300us, got 'soon'"),
        ("-5us", "--launch-spin: cannot be negative"),
        ("10ms", "--launch-spin: at most 5ms, got '10ms'"),
    ],
)
def test_a_bad_launch_spin_names_the_flag(text: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        resolve({"launch-spin": text}, {})
    assert message in str(info.value)


@pytest.mark.parametrize("bad", [-0.001, 0.006, float("nan")])
def test_an_engine_launch_spin_out_of_range_is_refused(bad: float) -> None:
    from trickle.engine.config import EngineConfig
    from trickle.errors import ValidationError

    with pytest.raises(ValidationError, match="launch_spin"):
        EngineConfig(data_dir=None, launch_spin=bad)
