"""The http executor against a small local HTTP server (h11 on Trio, port 0)."""

from __future__ import annotations

import json
import shutil
import ssl
from datetime import UTC, datetime
from http import HTTPStatus
from pathlib import Path

import h11
import pytest
import trio

from trickle.engine.executors.base import ExecutionContext, ExecutorResult, OutputBuffer
from trickle.engine.executors.http import HttpExecutor
from trickle.engine.model import Execution, ExecutionId, Job

BIG_BODY = b"start-" + b"x" * 100_000 + b"-end"


async def _respond(request: h11.Request, body: bytes) -> tuple[int, list[tuple[str, str]], bytes]:
    target = request.target.decode().partition("?")[0]
    if target == "/hello":
        return 200, [], b"hello world"
    if target.startswith("/status/"):
        code = int(target.removeprefix("/status/"))
        return code, [], f"status {code}".encode()
    if target == "/echo":
        echoed = {
            "method": request.method.decode(),
            "headers": {k.decode(): v.decode() for k, v in request.headers},
            "body": body.decode(),
        }
        return 200, [("Content-Type", "application/json")], json.dumps(echoed).encode()
    if target == "/redirect":
        return 302, [("Location", "/hello")], b""
    if target == "/big":
        return 200, [], BIG_BODY
    if target == "/slow":
        await trio.sleep_forever()
    return 404, [], b"not found"


async def _handle(stream: trio.abc.Stream) -> None:
    conn = h11.Connection(h11.SERVER)
    request: h11.Request | None = None
    body = b""
    try:
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                conn.receive_data(await stream.receive_some(65536))
            elif isinstance(event, h11.Request):
                request = event
            elif isinstance(event, h11.Data):
                body += event.data
            elif isinstance(event, h11.EndOfMessage | h11.ConnectionClosed):
                break
        if request is None:
            return  # closed before a request (a client that refused our certificate)
        status, headers, payload = await _respond(request, body)
        headers = [*headers, ("Content-Length", str(len(payload))), ("Connection", "close")]
        response = h11.Response(
            status_code=status, headers=headers, reason=HTTPStatus(status).phrase
        )
        await stream.send_all(conn.send(response))
        await stream.send_all(conn.send(h11.Data(data=payload)))
        await stream.send_all(conn.send(h11.EndOfMessage()))
    except (trio.BrokenResourceError, trio.ClosedResourceError, h11.ProtocolError):
        pass  # the client went away (timeouts, refused certificates): not the server's problem
    finally:
        await stream.aclose()


async def _start_server(nursery: trio.Nursery, ssl_context: ssl.SSLContext | None = None) -> str:
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    port = listeners[0].socket.getsockname()[1]
    if ssl_context is not None:
        listeners = [trio.SSLListener(lst, ssl_context, https_compatible=True) for lst in listeners]
    nursery.start_soon(trio.serve_listeners, _handle, listeners)
    return f"{'https' if ssl_context else 'http'}://127.0.0.1:{port}"


@pytest.fixture
async def base_url(nursery):
    return await _start_server(nursery)


def _ctx(config: dict[str, str], *, limit: int = 256_000) -> ExecutionContext:
    job = Job(name="ping", executor="http", executor_config=config)
    execution = Execution(
        id=ExecutionId("1-node"),
        job_name=job.name,
        node_name="node",
        group=1,
        started_at=datetime.now(UTC),
    )
    return ExecutionContext(job=job, execution=execution, output=OutputBuffer(limit))


async def _run(config: dict[str, str], **kwargs) -> tuple[ExecutorResult, str]:
    ctx = _ctx(config, **kwargs)
    result = await HttpExecutor().execute(ctx)
    return result, ctx.output.text()


async def test_get_with_expect_code_and_expect_body_succeeds(base_url):
    result, output = await _run(
        {
            "method": "GET",
            "url": f"{base_url}/hello",
            "expectCode": "200",
            "expectBody": "hello \\w+",
        }
    )
    assert result == ExecutorResult(success=True, exit_code=200)
    assert output == "hello world"


async def test_an_unexpected_status_fails_with_dkrons_message(base_url):
    result, output = await _run(
        {"method": "GET", "url": f"{base_url}/status/503", "expectCode": "200,206"}
    )
    assert result == ExecutorResult(
        success=False,
        exit_code=503,
        error="received response code does not match the expected code (got 503, expected 200,206)",
    )
    assert output == "status 503"


async def test_a_body_that_does_not_match_fails(base_url):
    result, _ = await _run({"method": "GET", "url": f"{base_url}/hello", "expectBody": "^goodbye"})
    assert result == ExecutorResult(
        success=False,
        exit_code=200,
        error="received response body did not match the expected body",
    )


async def test_without_expected_codes_any_status_is_a_success_as_dkron(base_url):
    result, _ = await _run({"method": "GET", "url": f"{base_url}/status/500"})
    assert result == ExecutorResult(success=True, exit_code=500)


async def test_success_codes_take_ranges(base_url):
    config = {"method": "GET", "success_codes": "200-299"}
    result, _ = await _run({**config, "url": f"{base_url}/status/204"})
    assert result == ExecutorResult(success=True, exit_code=204)
    result, _ = await _run({**config, "url": f"{base_url}/status/404"})
    assert result == ExecutorResult(
        success=False, exit_code=404, error="http: status 404 is not in success_codes 200-299"
    )


async def test_expect_code_wins_over_success_codes(base_url):
    result, _ = await _run(
        {
            "method": "GET",
            "url": f"{base_url}/status/404",
            "expectCode": "404",
            "success_codes": "200-299",
        }
    )
    assert result == ExecutorResult(success=True, exit_code=404)


async def test_headers_as_dkrons_json_array_keep_values_with_colons(base_url):
    result, output = await _run(
        {
            "method": "POST",
            "url": f"{base_url}/echo",
            "body": '{"a": 1}',
            "headers": '["Content-Type: application/json", "X-When: 2024-01-01T10:30:00"]',
        }
    )
    assert result.success
    echoed = json.loads(output)
    assert echoed["method"] == "POST"
    assert echoed["body"] == '{"a": 1}'
    assert echoed["headers"]["content-type"] == "application/json"
    assert echoed["headers"]["x-when"] == "2024-01-01T10:30:00"


async def test_headers_as_a_json_object(base_url):
    result, output = await _run(
        {
            "method": "GET",
            "url": f"{base_url}/echo",
            "headers": '{"X-Token": "a:b:c", "Accept": "text/plain"}',
        }
    )
    assert result.success
    headers = json.loads(output)["headers"]
    assert headers["x-token"] == "a:b:c"
    assert headers["accept"] == "text/plain"


async def test_a_post_without_body_sends_content_length_zero(base_url):
    result, output = await _run({"method": "POST", "url": f"{base_url}/echo"})
    assert result.success
    assert json.loads(output)["headers"]["content-length"] == "0"


async def test_redirects_are_followed(base_url):
    result, output = await _run({"method": "GET", "url": f"{base_url}/redirect"})
    assert result == ExecutorResult(success=True, exit_code=200)
    assert output == "hello world"


async def test_a_slow_server_times_out_as_a_failure(base_url):
    result, output = await _run({"method": "GET", "url": f"{base_url}/slow", "timeout": "1"})
    assert result == ExecutorResult(
        success=False, error=f"http: GET {base_url}/slow timed out after 1s"
    )
    assert output == ""


async def test_connection_refused_is_a_failure_with_the_error():
    sock = trio.socket.socket()
    with sock:
        await sock.bind(("127.0.0.1", 0))  # bound but not listening: connections are refused
        url = f"http://127.0.0.1:{sock.getsockname()[1]}/"
        result, _ = await _run({"method": "GET", "url": url})
    assert not result.success
    assert result.exit_code is None
    assert result.error.startswith(f"http: GET {url} failed: ")
    assert result.error.endswith("Connection refused")


async def test_a_large_body_keeps_its_tail_and_expect_body_sees_all_of_it(base_url):
    result, output = await _run(
        {"method": "GET", "url": f"{base_url}/big", "expectBody": "^start-x"}, limit=100
    )
    assert result == ExecutorResult(success=True, exit_code=200)
    assert output == BIG_BODY[-100:].decode()


async def test_debug_prepends_the_request_with_secrets_masked(base_url):
    result, output = await _run(
        {
            "method": "GET",
            "url": f"{base_url}/echo?api_key=k3y&page=2",
            "debug": "true",
            "headers": '["Authorization: Bearer s3cret", "X-Plain: visible"]',
        }
    )
    assert result.success
    config_line, response_line, body = output.split("\n", 2)
    assert config_line.startswith("Config: ")
    shown = json.loads(config_line.removeprefix("Config: "))
    assert shown["headers"] == {"Authorization": "****", "X-Plain": "visible"}
    assert shown["url"] == f"{base_url}/echo?api_key=****&page=2"
    assert "s3cret" not in config_line and "k3y" not in config_line
    assert response_line == "Response: HTTP/1.1 200 OK"
    assert json.loads(body)["headers"]["authorization"] == "Bearer s3cret"  # the real one is sent


async def test_debug_false_adds_nothing(base_url):
    _, output = await _run({"method": "GET", "url": f"{base_url}/hello", "debug": "false"})
    assert output == "hello world"


async def test_a_missing_client_certificate_file_is_a_clear_failure(base_url, tmp_path):
    missing = tmp_path / "client.pem"
    result, _ = await _run(
        {"method": "GET", "url": f"{base_url}/hello", "tlsCertificateFile": str(missing)}
    )
    assert not result.success
    assert result.error.startswith(f"http: cannot load client certificate '{missing}'")


async def _self_signed_cert(directory: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1: with `cryptography` if installed, else the
    `openssl` command; skips the test when neither is there."""
    cert, key = directory / "cert.pem", directory / "key.pem"
    try:
        import cryptography  # noqa: F401
    except ImportError:
        openssl = shutil.which("openssl")
        if openssl is None:
            pytest.skip("needs the cryptography package or the openssl command to make a cert")
        await trio.run_process(
            [
                openssl,
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:prime256v1",
                "-nodes",
                "-days",
                "1",
                "-subj",
                "/CN=127.0.0.1",
                "-addext",
                "subjectAltName=IP:127.0.0.1",
                "-keyout",
                str(key),
                "-out",
                str(cert),
            ],
            capture_stdout=True,
            capture_stderr=True,
        )
        return cert, key
    return await trio.to_thread.run_sync(_cryptography_cert, cert, key)


def _cryptography_cert(cert: Path, key: Path) -> tuple[Path, Path]:
    import datetime as dt
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    private = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = dt.datetime.now(dt.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(private.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=1))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .sign(private, hashes.SHA256())
    )
    cert.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key.write_bytes(
        private.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert, key


async def test_tls_with_a_self_signed_certificate(nursery, tmp_path):
    cert, key = await _self_signed_cert(tmp_path)
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_context.load_cert_chain(cert, key)
    url = await _start_server(nursery, server_context) + "/hello"

    refused, _ = await _run({"method": "GET", "url": url})
    assert not refused.success
    assert "certificate verify failed" in refused.error

    no_verify, output = await _run({"method": "GET", "url": url, "tlsNoVerifyPeer": "true"})
    assert no_verify == ExecutorResult(success=True, exit_code=200)
    assert output == "hello world"

    trusted, _ = await _run({"method": "GET", "url": url, "tlsRootCAsFile": str(cert)})
    assert trusted == ExecutorResult(success=True, exit_code=200)
