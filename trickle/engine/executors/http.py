"""The ``http`` executor: one HTTP request per run through httpx on Trio, Dkron-compatible.

``executor_config`` keys (all strings, as in Dkron; see docs/executors.md):

    method                 required, sent verbatim (``GET``, ``POST``...)
    url                    required, http:// or https://
    headers                ``["Name: value", ...]`` (Dkron's JSON-array string; split on the
                           first ``:`` only) or ``{"Name": "value"}`` (a JSON object string)
    body                   request body
    timeout                whole seconds for the whole request, default 30; "0": none
    expectCode             comma list of status codes/ranges that count as success
    success_codes          trickle's: the same (``"200-299"``); expectCode wins if both set
                           (neither set: every status is a success, as Dkron)
    expectBody             regular expression searched (unanchored) in the response body
    debug                  prepend the request (secrets masked) and the status to the output
    tlsNoVerifyPeer        Go bool; true skips certificate verification
    tlsCertificateFile     client certificate (PEM); tlsCertificateKeyFile its key
    tlsRootCAsFile         CA bundle (PEM) used instead of the default trust store

The output is the response body (its last bytes, through the OutputBuffer); the recorded
exit code is the HTTP status. Redirects are followed (up to 10), as Go's client does.
"""

from __future__ import annotations

import json
import logging
import re
import ssl
from collections.abc import Mapping
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import attrs
import httpx
import trio

from trickle.engine.executors.base import (
    CodeSet,
    ExecutionContext,
    ExecutorResult,
    parse_codes,
    parse_go_bool,
)
from trickle.errors import ValidationError

logger = logging.getLogger(__name__)

DEFAULT_TIMEOUT = 30  # seconds for the whole request, as Dkron
MAX_REDIRECTS = 10  # as Go's http.Client
MAX_MATCH_BODY = 16 * 1024 * 1024  # bytes of the body kept for matching expectBody
MASK = "****"

_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")  # RFC 9110 token (methods, header names)
_SECRET_WORDS = (
    "auth",
    "token",
    "secret",
    "password",
    "passwd",
    "key",
    "cookie",
    "session",
    "credential",
    "signature",
)


class _ConfigError(Exception):
    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


def parse_headers(text: str) -> list[tuple[str, str]]:
    """``headers`` -> (name, value) pairs, later duplicates replacing earlier ones.

    Accepts Dkron's JSON array of ``"Name: value"`` strings (split on the first ``:``
    only, both sides trimmed; empty entries skipped) and a JSON object
    ``{"Name": "value"}``. '' means no headers. Raises ``ValueError`` naming the problem.
    """
    if not text.strip():
        return []
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(
            'headers must be a JSON array of "Name: value" strings or a JSON object of '
            f"strings: {exc}"
        ) from None
    pairs: list[tuple[str, str]] = []
    if isinstance(data, list):
        for item in data:
            if not isinstance(item, str):
                raise ValueError(f'header entry {item!r} must be a string "Name: value"')
            if not item.strip():
                continue
            name, sep, value = item.partition(":")
            if not sep:
                raise ValueError(f"header entry {item!r} has no ':' between name and value")
            pairs.append((name.strip(), value.strip()))
    elif isinstance(data, dict):
        for name, value in data.items():
            if not isinstance(value, str):
                raise ValueError(f"header {name!r} must have a string value, not {value!r}")
            pairs.append((name.strip(), value.strip()))
    else:
        raise ValueError(
            'headers must be a JSON array of "Name: value" strings or a JSON object of strings'
        )
    merged: dict[str, tuple[str, str]] = {}
    for name, value in pairs:
        if not _TOKEN.fullmatch(name):
            raise ValueError(f"invalid header name {name!r}")
        if any(c in value for c in "\r\n\0"):
            raise ValueError(f"header {name!r} has a line break or NUL in its value")
        merged[name.lower()] = (name, value)
    return list(merged.values())


def _is_secret(name: str) -> bool:
    lowered = name.lower()
    return any(word in lowered for word in _SECRET_WORDS)


def mask_url(url: str) -> str:
    """``url`` with a userinfo password and secret-looking query values masked."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return url
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, _, hostport = netloc.rpartition("@")
        user, sep, _password = userinfo.partition(":")
        netloc = f"{user}{':' + MASK if sep else ''}@{hostport}"
    query = parts.query
    if query:
        pairs = parse_qsl(query, keep_blank_values=True)
        if any(_is_secret(k) for k, _ in pairs):
            query = urlencode([(k, MASK if _is_secret(k) else v) for k, v in pairs], safe="*")
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


@attrs.frozen
class _Plan:
    method: str
    url: str
    headers: list[tuple[str, str]]
    body: bytes
    timeout: float  # 0: none
    codes: CodeSet | None  # None: any status is a success
    codes_key: str  # "expectCode" or "success_codes"
    expect_body: re.Pattern[str] | None
    debug: bool
    no_verify: bool
    cert_file: str
    key_file: str
    roots_file: str


def _plan(config: Mapping[str, str]) -> _Plan:
    def get(key: str) -> str:
        value = config.get(key, "")
        if not isinstance(value, str):
            raise _ConfigError(key, f"{key} must be a string, not {type(value).__name__}")
        return value

    method = get("method").strip()
    if not method:
        raise _ConfigError("method", "method is empty")
    if not _TOKEN.fullmatch(method):
        raise _ConfigError("method", f"invalid method {method!r}")
    url = get("url").strip()
    if not url:
        raise _ConfigError("url", "url is empty")
    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, ValueError) as exc:
        raise _ConfigError("url", f"invalid url {url!r}: {exc}") from None
    if parsed.scheme not in ("http", "https") or not parsed.host:
        raise _ConfigError("url", f"invalid url {url!r}: use http://host/... or https://host/...")
    try:
        headers = parse_headers(get("headers"))
    except ValueError as exc:
        raise _ConfigError("headers", str(exc)) from None

    timeout_text = get("timeout").strip()
    timeout = DEFAULT_TIMEOUT
    if timeout_text:
        if not re.fullmatch(r"[0-9]+", timeout_text):
            raise _ConfigError(
                "timeout", f"timeout {timeout_text!r} must be a whole number of seconds"
            )
        timeout = int(timeout_text)

    codes: CodeSet | None = None
    codes_key = ""
    for key in ("expectCode", "success_codes"):  # expectCode wins when both are set
        text = get(key)
        if text.strip():
            try:
                parsed_codes = parse_codes(text, what="status code")
            except ValueError as exc:
                raise _ConfigError(key, str(exc)) from None
            if codes is None:
                codes, codes_key = parsed_codes, key

    expect_body = None
    if get("expectBody"):
        try:
            expect_body = re.compile(get("expectBody"))
        except re.error as exc:
            raise _ConfigError(
                "expectBody", f"expectBody {get('expectBody')!r} is not a valid regexp: {exc}"
            ) from None

    debug_text = get("debug").strip()
    try:
        debug = parse_go_bool(debug_text)
    except ValueError:
        debug = bool(debug_text)  # Dkron: any non-empty value turns debug on
    try:
        no_verify = parse_go_bool(get("tlsNoVerifyPeer"))
    except ValueError as exc:
        raise _ConfigError("tlsNoVerifyPeer", f"tlsNoVerifyPeer: {exc}") from None
    cert_file = get("tlsCertificateFile").strip()
    key_file = get("tlsCertificateKeyFile").strip()
    if key_file and not cert_file:
        raise _ConfigError(
            "tlsCertificateKeyFile", "tlsCertificateKeyFile needs tlsCertificateFile"
        )

    return _Plan(
        method=method,
        url=url,
        headers=headers,
        body=get("body").encode("utf-8"),
        timeout=float(timeout),
        codes=codes,
        codes_key=codes_key,
        expect_body=expect_body,
        debug=debug,
        no_verify=no_verify,
        cert_file=cert_file,
        key_file=key_file,
        roots_file=get("tlsRootCAsFile").strip(),
    )


_default_ssl_context: ssl.SSLContext | None = None


def _ssl_context(plan: _Plan) -> ssl.SSLContext:
    """The TLS settings of a plan (blocking: reads files; run in a thread).

    Raises ``ValueError`` naming the file that could not be loaded.
    """
    global _default_ssl_context
    if not (plan.no_verify or plan.cert_file or plan.roots_file):
        if _default_ssl_context is None:
            _default_ssl_context = httpx.create_ssl_context()
        return _default_ssl_context
    if plan.roots_file:
        try:
            context = ssl.create_default_context(cafile=plan.roots_file)
        except (OSError, ssl.SSLError) as exc:
            raise ValueError(
                f"http: cannot load tlsRootCAsFile {plan.roots_file!r}: {exc}"
            ) from None
    else:
        context = httpx.create_ssl_context()
    if plan.no_verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    if plan.cert_file:
        try:
            context.load_cert_chain(plan.cert_file, plan.key_file or None)
        except (OSError, ssl.SSLError) as exc:
            raise ValueError(
                f"http: cannot load client certificate {plan.cert_file!r}"
                f"{f' with key {plan.key_file!r}' if plan.key_file else ''}: {exc}"
            ) from None
    return context


def describe_error(exc: BaseException) -> str:
    """An exception and its causes as one line: the innermost reasons are what a user needs
    (``all attempts to connect to h:1 failed: Connection refused``)."""
    parts: list[str] = []
    seen: set[int] = set()
    pending: list[BaseException] = [exc]
    while pending and len(parts) < 6:
        current = pending.pop(0)
        if id(current) in seen:
            continue
        seen.add(id(current))
        if isinstance(current, BaseExceptionGroup):
            pending[:0] = list(current.exceptions)
        else:
            if isinstance(current, ssl.SSLCertVerificationError):
                text = f"certificate verify failed: {current.verify_message}"
            elif isinstance(current, OSError) and current.strerror:
                text = current.strerror
            else:
                text = str(current)
            if text and not any(text in part for part in parts):
                parts.append(text)
        # follow the context even when suppressed: httpcore hides the OS error that way
        cause = current.__cause__ or current.__context__
        if cause is not None:
            pending.append(cause)
    return ": ".join(parts) or type(exc).__name__


def _debug_config(config: Mapping[str, str], plan: _Plan) -> str:
    shown: dict[str, object] = {}
    for key, value in sorted(config.items()):
        if key == "headers":
            shown[key] = {n: MASK if _is_secret(n) else v for n, v in plan.headers}
        elif key == "url":
            shown[key] = mask_url(plan.url)
        elif _is_secret(key) and not key.endswith("File"):
            shown[key] = MASK
        else:
            shown[key] = value
    return "Config: " + json.dumps(shown, ensure_ascii=False) + "\n"


class HttpExecutor:
    """Sends one request per run. See the module docstring."""

    name = "http"

    def validate(self, config: Mapping[str, str]) -> None:
        """Raise ``ValidationError(field="executor_config.<key>")`` for a bad config."""
        try:
            _plan(config)
        except _ConfigError as exc:
            raise ValidationError(str(exc), field=f"executor_config.{exc.field}") from None

    async def execute(self, ctx: ExecutionContext) -> ExecutorResult:
        try:
            plan = _plan(ctx.config)
        except _ConfigError as exc:
            return ExecutorResult(success=False, error=f"http: {exc}")
        try:
            context = await trio.to_thread.run_sync(_ssl_context, plan)
        except ValueError as exc:
            return ExecutorResult(success=False, error=str(exc))

        if plan.debug:
            ctx.output.write(_debug_config(ctx.config, plan))
            logger.debug("job %s: %s %s", ctx.job.name, plan.method, mask_url(plan.url))

        headers = [("Connection", "close"), *plan.headers]
        match_body = bytearray() if plan.expect_body is not None else None
        status: int | None = None
        with trio.move_on_after(plan.timeout if plan.timeout > 0 else float("inf")) as scope:
            try:
                async with httpx.AsyncClient(
                    verify=context,
                    timeout=None,
                    follow_redirects=True,
                    max_redirects=MAX_REDIRECTS,
                ) as client:
                    async with client.stream(
                        plan.method, plan.url, headers=headers, content=plan.body or None
                    ) as response:
                        status = response.status_code
                        if plan.debug:
                            ctx.output.write(
                                f"Response: {response.http_version} {status} "
                                f"{response.reason_phrase}\n"
                            )
                        async for chunk in response.aiter_bytes():
                            ctx.output.write(chunk)
                            if match_body is not None and len(match_body) < MAX_MATCH_BODY:
                                match_body += chunk[: MAX_MATCH_BODY - len(match_body)]
            except (httpx.HTTPError, httpx.InvalidURL) as exc:
                detail = describe_error(exc)
                return ExecutorResult(
                    success=False,
                    exit_code=status,
                    error=f"http: {plan.method} {mask_url(plan.url)} failed: {detail}",
                )
        if scope.cancelled_caught:
            return ExecutorResult(
                success=False,
                exit_code=status,
                error=f"http: {plan.method} {mask_url(plan.url)} timed out after "
                f"{int(plan.timeout)}s",
            )
        assert status is not None
        if plan.debug:
            logger.debug("job %s: response status %d", ctx.job.name, status)

        if plan.codes is not None and status not in plan.codes:
            if plan.codes_key == "expectCode":
                error = (
                    "received response code does not match the expected code "
                    f"(got {status}, expected {plan.codes.text})"
                )
            else:
                error = f"http: status {status} is not in success_codes {plan.codes.text}"
            return ExecutorResult(success=False, exit_code=status, error=error)
        if plan.expect_body is not None and match_body is not None:
            text = bytes(match_body).decode("utf-8", errors="replace")
            if plan.expect_body.search(text) is None:
                return ExecutorResult(
                    success=False,
                    exit_code=status,
                    error="received response body did not match the expected body",
                )
        return ExecutorResult(success=True, exit_code=status)
