"""The public namespace: every exported name resolves, lazily."""

from __future__ import annotations

import subprocess
import sys

import trickle


def test_every_exported_name_resolves():
    for name in trickle.__all__:
        assert getattr(trickle, name) is not None, name


def test_unknown_attribute_is_an_attribute_error():
    try:
        trickle.NoSuchThing  # noqa: B018
    except AttributeError as exc:
        assert "NoSuchThing" in str(exc)
    else:
        raise AssertionError("expected AttributeError")


def test_importing_the_cli_does_not_load_the_engine_or_the_store():
    code = (
        "import sys, trickle.cli.main; "
        "print(any(m in sys.modules for m in "
        "('sqlalchemy', 'quart', 'trickle.engine._engine')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
