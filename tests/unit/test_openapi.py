"""The OpenAPI document describes exactly the routes the app serves."""

from __future__ import annotations

import json
import re

from trickle.engine._engine import Engine
from trickle.engine.config import EngineConfig
from trickle.http.app import create_app
from trickle.http.openapi import openapi_document

_IMPLICIT = {"HEAD", "OPTIONS"}  # added by the framework to every route
_HTTP_METHODS = {"get", "put", "post", "delete", "patch", "options", "head", "trace"}


def _served() -> set[tuple[str, str]]:
    app = create_app(Engine(EngineConfig(data_dir=None, node_name="doc-node")))
    served = set()
    for rule in app.url_map.iter_rules():
        path = re.sub(r"<(?:[^:>]+:)?([^>]+)>", r"{\1}", rule.rule)
        for method in (rule.methods or set()) - _IMPLICIT:
            served.add((path, method.lower()))
    return served


def _described() -> set[tuple[str, str]]:
    doc = openapi_document()
    return {
        (path, method)
        for path, item in doc["paths"].items()
        for method in item
        if method in _HTTP_METHODS
    }


def test_every_served_route_is_described() -> None:
    missing = _served() - _described()
    assert not missing, f"routes without an OpenAPI description: {sorted(missing)}"


def test_every_described_route_is_served() -> None:
    extra = _described() - _served()
    assert not extra, f"described but not served: {sorted(extra)}"


def test_document_is_openapi_31_json() -> None:
    doc = openapi_document()
    assert doc["openapi"] == "3.1.0"
    json.dumps(doc)  # serialisable as served


def test_every_reference_resolves() -> None:
    doc = openapi_document()
    refs = re.findall(r'"\$ref": "#/([^"]+)"', json.dumps(doc))
    assert refs
    for ref in refs:
        node = doc
        for part in ref.split("/"):
            assert part in node, f"dangling $ref #/{ref}"
            node = node[part]


def test_path_parameters_are_declared() -> None:
    doc = openapi_document()
    params = doc["components"]["parameters"]
    for path, item in doc["paths"].items():
        names = set(re.findall(r"{([^}]+)}", path))
        for method, op in item.items():
            declared = set()
            for p in op.get("parameters", []):
                p = params[p["$ref"].rsplit("/", 1)[1]] if "$ref" in p else p
                if p["in"] == "path":
                    declared.add(p["name"])
            assert declared == names, f"{method.upper()} {path}: {declared} != {names}"


def test_every_operation_has_a_unique_id_and_responses() -> None:
    doc = openapi_document()
    ids = [op["operationId"] for item in doc["paths"].values() for op in item.values()]
    assert len(ids) == len(set(ids))
    for item in doc["paths"].values():
        for op in item.values():
            assert op["responses"]
