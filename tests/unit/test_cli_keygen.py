"""`trickle keygen`: one new base64 gossip key per run, of the size asked."""

from __future__ import annotations

import base64

import pytest
from click.testing import CliRunner, Result

from trickle.cli.main import cli
from trickle.gossip.keyring import Keyring, decode_key


def keygen(*args: str) -> Result:
    return CliRunner().invoke(cli, ["keygen", *args], catch_exceptions=False)


def test_keygen_prints_one_base64_32_byte_key_and_exits_0() -> None:
    result = keygen()
    assert result.exit_code == 0
    lines = result.stdout.splitlines()
    assert len(lines) == 1
    assert len(base64.b64decode(lines[0], validate=True)) == 32
    assert Keyring.from_base64(lines[0]).enabled


@pytest.mark.parametrize("size", [16, 24, 32])
def test_keygen_size_chooses_the_key_length(size: int) -> None:
    result = keygen("--size", str(size))
    assert result.exit_code == 0
    assert len(decode_key(result.stdout)) == size


def test_each_run_prints_a_different_key() -> None:
    assert keygen().stdout != keygen().stdout


def test_keygen_refuses_another_size_naming_the_choices() -> None:
    result = keygen("--size", "20")
    assert result.exit_code == 2
    assert "'20' is not one of '16', '24', '32'" in result.stderr


def test_keygen_is_listed_in_the_help() -> None:
    result = CliRunner().invoke(cli, ["--help"])
    assert "keygen" in result.stdout
