"""ExecutorRegistry and the validation of executor_config for shell and http."""

from __future__ import annotations

import pytest

from trickle.engine.executors.base import ExecutorResult, parse_codes, parse_go_bool
from trickle.engine.executors.http import HttpExecutor, mask_url, parse_headers
from trickle.engine.executors.registry import ExecutorRegistry
from trickle.engine.executors.shell import ShellExecutor, parse_mem_limit
from trickle.errors import ValidationError


async def _noop(ctx):
    return None


def test_builtins_are_http_and_shell_sorted():
    registry = ExecutorRegistry()
    assert registry.names() == ["http", "shell"]
    assert isinstance(registry.get("shell"), ShellExecutor)
    assert isinstance(registry.get("http"), HttpExecutor)


def test_unknown_executor_names_the_field_and_lists_known_ones():
    registry = ExecutorRegistry()
    registry.register_python("noop", _noop)
    with pytest.raises(ValidationError) as info:
        registry.get("docker")
    assert info.value.field == "executor"
    assert str(info.value) == "unknown executor 'docker'; known executors: http, noop, shell"


def test_empty_executor_is_required():
    with pytest.raises(ValidationError, match="executor is required; known executors: http, shell"):
        ExecutorRegistry().get("")


def test_registered_python_executor_appears_in_names():
    registry = ExecutorRegistry()
    registry.register_python("my-job_2", _noop)
    assert registry.names() == ["http", "my-job_2", "shell"]
    assert registry.get("my-job_2").name == "my-job_2"
    assert "my-job_2" in registry


@pytest.mark.parametrize("name", ["shell", "http"])
def test_registering_over_a_builtin_is_refused(name):
    with pytest.raises(ValueError, match="already registered"):
        ExecutorRegistry().register_python(name, _noop)


def test_registering_a_name_twice_is_refused():
    registry = ExecutorRegistry()
    registry.register_python("noop", _noop)
    with pytest.raises(ValueError, match="'noop' is already registered"):
        registry.register_python("noop", _noop)


@pytest.mark.parametrize("name", ["", "Shell", "a b", "x.y", "é", None])
def test_bad_names_are_refused(name):
    with pytest.raises(ValueError, match="invalid executor name"):
        ExecutorRegistry().register_python(name, _noop)


def test_an_object_without_execute_is_not_an_executor():
    with pytest.raises(ValueError, match="validate\\(config\\) and async execute"):
        ExecutorRegistry().register("thing", object())  # type: ignore[arg-type]


def test_registry_without_builtins_is_empty():
    assert ExecutorRegistry(builtins=False).names() == []


def test_python_executor_validator_runs_at_validate():
    def needs_target(config):
        if "target" not in config:
            raise ValidationError("target is required", field="executor_config.target")

    registry = ExecutorRegistry()
    registry.register_python("deploy", _noop, validate=needs_target)
    registry.validate("deploy", {"target": "prod"})
    with pytest.raises(ValidationError) as info:
        registry.validate("deploy", {})
    assert info.value.field == "executor_config.target"


def test_non_string_config_values_are_refused():
    with pytest.raises(ValidationError) as info:
        ExecutorRegistry().validate("shell", {"command": "true", "timeout": 30})  # type: ignore[dict-item]
    assert info.value.field == "executor_config.timeout"
    assert "must be strings" in str(info.value)


# --- shell ---------------------------------------------------------------------------------


def test_shell_accepts_a_full_config():
    ExecutorRegistry().validate(
        "shell",
        {
            "command": "echo 'a b' \"c\"",
            "shell": "false",
            "env": "A=1, B=x=y,",
            "cwd": "/tmp",
            "su": "nobody:nogroup",
            "timeout": "1h30m",
            "mem_limit": "1.5GB",
            "payload": "aGVsbG8=",
            "success_codes": "0,1,10-20",
        },
    )


@pytest.mark.parametrize(
    ("config", "field", "message"),
    [
        ({}, "command", "Command missing"),
        ({"command": "   "}, "command", "Command missing"),
        ({"command": "echo 'unclosed"}, "command", "cannot parse command"),
        ({"command": "true", "shell": "yes"}, "shell", "invalid boolean 'yes'"),
        ({"command": "true", "timeout": "30"}, "timeout", 'missing unit in duration "30"'),
        ({"command": "true", "timeout": "1d"}, "timeout", 'unknown unit "d"'),
        ({"command": "true", "timeout": "-5s"}, "timeout", "negative"),
        ({"command": "true", "mem_limit": "lots"}, "mem_limit", "invalid memory limit"),
        ({"command": "true", "mem_limit": "5PB"}, "mem_limit", "unknown unit 'PB'"),
        ({"command": "true", "mem_limit": "0"}, "mem_limit", "at least 1 byte"),
        ({"command": "true", "success_codes": "0,x"}, "success_codes", "invalid exit code 'x'"),
        ({"command": "true", "success_codes": "9-3"}, "success_codes", "start is above end"),
        ({"command": "true", "env": "NOEQUALS"}, "env", "invalid env entry 'NOEQUALS'"),
        ({"command": "true", "env": "=1"}, "env", "invalid env entry"),
        ({"command": "true", "payload": "not base64!"}, "payload", "not valid base64"),
        ({"command": "true", "su": "a:b:c"}, "su", "use user or user:group"),
    ],
)
def test_shell_rejects_bad_config_naming_the_key(config, field, message):
    with pytest.raises(ValidationError, match=message) as info:
        ShellExecutor().validate(config)
    assert info.value.field == f"executor_config.{field}"


def test_shell_with_shell_true_does_not_split_the_command():
    ShellExecutor().validate({"command": "echo 'unclosed", "shell": "true"})


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1048576", 1048576),
        ("512", 512),
        ("10B", 10),
        ("1K", 1024),
        ("1kb", 1024),
        ("2M", 2 * 1024**2),
        ("2MB", 2 * 1024**2),
        ("1.5G", int(1.5 * 1024**3)),
        ("1 GB", 1024**3),
        ("1T", 1024**4),
        ("1TB", 1024**4),
        ("1MiB", 1024**2),
    ],
)
def test_mem_limit_units_are_1024_based(text, expected):
    assert parse_mem_limit(text) == expected


# --- http ----------------------------------------------------------------------------------


def test_http_accepts_a_full_config():
    HttpExecutor().validate(
        {
            "method": "POST",
            "url": "https://example.com/hook?x=1",
            "headers": '["Content-Type: application/json", "X-Time: 10:30"]',
            "body": '{"a": 1}',
            "timeout": "10",
            "expectCode": "200,206",
            "success_codes": "200-299",
            "expectBody": "ok|success",
            "debug": "true",
            "tlsNoVerifyPeer": "false",
            "tlsCertificateFile": "/etc/cert.pem",
            "tlsCertificateKeyFile": "/etc/key.pem",
            "tlsRootCAsFile": "/etc/ca.pem",
        }
    )


@pytest.mark.parametrize(
    ("config", "field", "message"),
    [
        ({"url": "http://x"}, "method", "method is empty"),
        ({"method": "GET"}, "url", "url is empty"),
        ({"method": "GET /", "url": "http://x"}, "method", "invalid method"),
        ({"method": "GET", "url": "ftp://x/file"}, "url", "invalid url"),
        ({"method": "GET", "url": "http://"}, "url", "invalid url"),
        (
            {"method": "GET", "url": "http://x", "headers": "Content-Type: a"},
            "headers",
            "JSON array",
        ),
        ({"method": "GET", "url": "http://x", "headers": '["NoColon"]'}, "headers", "no ':'"),
        ({"method": "GET", "url": "http://x", "headers": '{"A": 1}'}, "headers", "string value"),
        ({"method": "GET", "url": "http://x", "headers": '"A: b"'}, "headers", "JSON array"),
        (
            {"method": "GET", "url": "http://x", "headers": '["Bad Name: v"]'},
            "headers",
            "invalid header name",
        ),
        ({"method": "GET", "url": "http://x", "timeout": "1.5"}, "timeout", "whole number"),
        ({"method": "GET", "url": "http://x", "timeout": "30s"}, "timeout", "whole number"),
        (
            {"method": "GET", "url": "http://x", "expectCode": "2xx"},
            "expectCode",
            "invalid status code '2xx'",
        ),
        (
            {"method": "GET", "url": "http://x", "success_codes": "300-200"},
            "success_codes",
            "start is above end",
        ),
        (
            {"method": "GET", "url": "http://x", "expectBody": "(unclosed"},
            "expectBody",
            "not a valid regexp",
        ),
        (
            {"method": "GET", "url": "http://x", "tlsNoVerifyPeer": "sure"},
            "tlsNoVerifyPeer",
            "invalid boolean",
        ),
        (
            {"method": "GET", "url": "http://x", "tlsCertificateKeyFile": "/k.pem"},
            "tlsCertificateKeyFile",
            "needs tlsCertificateFile",
        ),
    ],
)
def test_http_rejects_bad_config_naming_the_key(config, field, message):
    with pytest.raises(ValidationError, match=message) as info:
        HttpExecutor().validate(config)
    assert info.value.field == f"executor_config.{field}"


def test_header_array_splits_on_the_first_colon_only():
    assert parse_headers('["Authorization: Basic a:b", " X-Url :  http://h:1/p ", ""]') == [
        ("Authorization", "Basic a:b"),
        ("X-Url", "http://h:1/p"),
    ]


def test_header_object_is_accepted():
    assert parse_headers('{"Content-Type": "text/plain", "X-A": "1:2"}') == [
        ("Content-Type", "text/plain"),
        ("X-A", "1:2"),
    ]


def test_a_repeated_header_keeps_the_last_value_as_dkron():
    assert parse_headers('["X-A: 1", "x-a: 2"]') == [("x-a", "2")]


def test_empty_headers_mean_none():
    assert parse_headers("") == []
    assert parse_headers("[]") == []


def test_mask_url_hides_password_and_secret_query_values():
    assert mask_url("https://bob:hunter2@h/p?token=abc&page=2") == (
        "https://bob:****@h/p?token=****&page=2"
    )
    assert mask_url("http://h/p?q=1") == "http://h/p?q=1"


# --- shared parsing ------------------------------------------------------------------------


def test_success_codes_accept_single_codes_and_ranges():
    codes = parse_codes(" 0, 3 ,10-20,")
    assert [c for c in range(25) if c in codes] == [0, 3, *range(10, 21)]
    assert -1 not in codes
    assert "0" not in codes


@pytest.mark.parametrize("text", ["", ",", "a", "-1", "1-", "1-2-3", "+1", "1_0"])
def test_bad_success_codes_are_refused(text):
    with pytest.raises(ValueError):
        parse_codes(text)


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("true", True),
        ("1", True),
        ("T", True),
        ("TRUE", True),
        ("False", False),
        ("0", False),
        ("f", False),
        ("", False),
    ],
)
def test_go_bool_strings(text, value):
    assert parse_go_bool(text) is value


def test_go_bool_refuses_other_words():
    with pytest.raises(ValueError, match="invalid boolean 'yes'"):
        parse_go_bool("yes")


def test_executor_result_defaults():
    assert ExecutorResult(success=True) == ExecutorResult(success=True, exit_code=None, error="")
