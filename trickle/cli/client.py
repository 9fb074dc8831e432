"""Client commands of the CLI: ``trickle jobs ...``, ``trickle executions``, ``trickle members``,
``trickle leave``, ``trickle raft ...``, ``trickle version``.

``trickle raft recover`` is the exception: it works offline on a stopped server's data dir.

They talk to a running server over its REST API (``--address``, env ``TRICKLE_ADDRESS``,
default ``http://127.0.0.1:8080``). ``--json`` prints the API's body unchanged, so scripts
can pipe it; without it the output is a table or a readable listing.

Failures print one line on stderr and exit 1:
    error: <status> <message>                         the server refused the request
    error: cannot connect to trickle at <address>: ... nothing answered there
Usage errors (a bad flag) exit 2, as click does.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any, TypeVar
from urllib.parse import quote

import click
import httpx

from trickle._version import __version__
from trickle.cli import output
from trickle.cli.config import DEFAULT_ADDRESS, ConfigError, normalise_address

DEFAULT_TIMEOUT = 30.0  # seconds to wait for the server's answer
STOP_POLL_INTERVAL = 0.1  # seconds between two checks that a leaving node has stopped
ADDRESS_ENV = "TRICKLE_ADDRESS"
CREATED_HEADER = "X-Trickle-Created"  # "true"/"false" on a job put, when the server sends it
JOB_STATUSES = ("success", "failed", "partially_failed", "untriggered")
JOB_SORTS = (
    "name",
    "displayname",
    "schedule",
    "success_count",
    "error_count",
    "last_success",
    "last_error",
    "next",
)

F = TypeVar("F", bound=Callable[..., Any])


class CliError(click.ClickException):
    """A failure shown as ``error: <message>`` on stderr, exit code 1."""

    exit_code = 1

    def show(self, file: IO[Any] | None = None) -> None:
        click.echo(f"error: {self.format_message()}", err=True)


class ApiError(CliError):
    """The server answered with an error status."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"{status} {message}".rstrip())
        self.status = status


def _error_message(response: httpx.Response) -> str:
    """The server's explanation: ``{"error": ...}`` / ``{"message": ...}``, plain text, or
    the reason phrase when the body is empty."""
    text = response.text.strip()
    if text:
        try:
            body = json.loads(text)
        except ValueError:
            return text
        if isinstance(body, dict):
            for key in ("error", "message", "detail"):
                if isinstance(body.get(key), str) and body[key]:
                    return str(body[key])
        if isinstance(body, str) and body:
            return body
        return text
    return response.reason_phrase or ""


class ApiClient:
    """A thin synchronous client of trickle's REST API that raises ``CliError``s."""

    def __init__(self, address: str, *, timeout: float = DEFAULT_TIMEOUT) -> None:
        try:
            self.address = normalise_address(address)
        except ConfigError as exc:
            raise click.BadParameter(
                str(exc).removeprefix("--address: "), param_hint="'--address'"
            ) from None
        self._timeout = timeout
        self._http = httpx.Client(
            base_url=self.address,
            timeout=timeout,
            headers={"User-Agent": f"trickle-cli/{__version__}"},
        )

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> ApiClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def request(
        self, method: str, path: str, *, params: Any = None, json_body: Any = None
    ) -> httpx.Response:
        """Send one request; return a 2xx response or raise ``ApiError`` / ``CliError``."""
        try:
            response = self._http.request(method, path, params=params, json=json_body)
        except httpx.ConnectError as exc:
            raise CliError(
                f"cannot connect to trickle at {self.address}: {_reason(exc)} "
                f"(is 'trickle serve --server' running there? set --address or {ADDRESS_ENV})"
            ) from None
        except httpx.TimeoutException:
            raise CliError(
                f"no answer from trickle at {self.address} within {self._timeout:g}s"
            ) from None
        except httpx.HTTPError as exc:
            raise CliError(f"request to {self.address}{path} failed: {_reason(exc)}") from None
        if response.is_error:
            raise ApiError(response.status_code, _error_message(response))
        return response

    def wait_until_stopped(self, timeout: float) -> bool:
        """Ask ``/health`` until nothing answers at the address any more (the node has
        closed its API); False if it still answers after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            try:
                self._http.get("/health", timeout=max(min(left, 2.0), 0.1))
            except httpx.ConnectError:
                return True
            except httpx.HTTPError:
                pass  # a connection closed under the request, a slow answer: ask again
            if time.monotonic() >= deadline:
                return False
            time.sleep(STOP_POLL_INTERVAL)

    def decode(self, response: httpx.Response) -> Any:
        try:
            return response.json()
        except ValueError:
            raise CliError(
                f"the server at {self.address} answered {response.request.url.path} with "
                "something that is not JSON: is it a trickle server?"
            ) from None


def _reason(exc: Exception) -> str:
    text = str(exc) or type(exc).__name__
    # "[Errno 111] Connection refused" -> "connection refused"
    if text.startswith("[Errno"):
        text = text.split("]", 1)[-1].strip()
    return text[:1].lower() + text[1:]


def job_path(name: str, *rest: str) -> str:
    """``/v1/jobs/<name>[/rest...]`` with the name percent-encoded."""
    return "/".join(["/v1/jobs", quote(name, safe=""), *rest])


def emit_json(response: httpx.Response) -> None:
    """Print the body exactly as the server sent it (plus a final newline)."""
    click.echo(response.text.rstrip("\n"))


def client_options(fn: F) -> F:
    """``--address`` and ``--timeout``, shared by every client command."""
    fn = click.option(
        "--timeout",
        type=click.FloatRange(min=0, min_open=True),
        default=DEFAULT_TIMEOUT,
        show_default=True,
        help="Seconds to wait for the server's answer.",
    )(fn)
    fn = click.option(
        "--address",
        envvar=ADDRESS_ENV,
        default=DEFAULT_ADDRESS,
        show_default=True,
        show_envvar=True,
        metavar="URL",
        help="Base URL of a trickle server's HTTP API.",
    )(fn)
    return fn


json_option = click.option(
    "--json", "as_json", is_flag=True, help="Print the API's JSON body unchanged."
)


@contextmanager
def api(address: str, timeout: float) -> Iterator[ApiClient]:
    with ApiClient(address, timeout=timeout) as client:
        yield client


# --- jobs ---------------------------------------------------------------------------------


@click.group()
def jobs() -> None:
    """List, show, create, delete, run and toggle jobs on a server."""


@jobs.command("list")
@client_options
@json_option
@click.option("-q", "--query", help="Only jobs whose name or displayname contains this text.")
@click.option("--status", type=click.Choice(JOB_STATUSES), help="Only jobs with this status.")
@click.option(
    "--metadata",
    "metadata",
    multiple=True,
    metavar="KEY=VALUE",
    help="Only jobs with this metadata pair (repeatable; all must match).",
)
@click.option(
    "--sort",
    type=click.Choice(JOB_SORTS),
    default="name",
    show_default=True,
    help="Sort by this field.",
)
@click.option("--desc", is_flag=True, help="Sort in descending order.")
def jobs_list(
    address: str,
    timeout: float,
    as_json: bool,
    query: str | None,
    status: str | None,
    metadata: Sequence[str],
    sort: str,
    desc: bool,
) -> None:
    """List jobs: name, schedule, status, disabled, last success, last error, next run."""
    params: list[tuple[str, str]] = [("_sort", sort), ("_order", "DESC" if desc else "ASC")]
    if query:
        params.append(("q", query))
    if status:
        params.append(("status", status))
    for pair in metadata:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"expected KEY=VALUE, got {pair!r}", param_hint="'--metadata'")
        params.append((f"metadata[{key}]", value))
    with api(address, timeout) as client:
        response = client.request("GET", "/v1/jobs", params=params)
        if as_json:
            emit_json(response)
            return
        body = client.decode(response)
    if not body:
        click.echo("no jobs")
        return
    click.echo(output.jobs_table(body))


@jobs.command("get")
@client_options
@json_option
@click.argument("name")
def jobs_get(address: str, timeout: float, as_json: bool, name: str) -> None:
    """Show one job, every field."""
    with api(address, timeout) as client:
        response = client.request("GET", job_path(name))
        if as_json:
            emit_json(response)
            return
        click.echo(output.job_details(client.decode(response)))


def read_jobs_file(stream: IO[str]) -> list[dict[str, Any]]:
    """The jobs of a JSON file: one job object or an array of them.

    Raises ``CliError`` naming the file for bad JSON, another shape, or no jobs."""
    label = "standard input" if stream.name == "<stdin>" else str(stream.name)
    text = stream.read()
    try:
        body = json.loads(text)
    except json.JSONDecodeError as exc:
        raise CliError(
            f"{label} is not valid JSON: line {exc.lineno} column {exc.colno}: {exc.msg}"
        ) from None
    items = body if isinstance(body, list) else [body]
    for index, item in enumerate(items):
        if not isinstance(item, dict):
            where = f"item {index} of {label}" if isinstance(body, list) else label
            raise CliError(f"{where} is not a job object (got {type(item).__name__})")
    if not items:
        raise CliError(f"{label} holds no jobs (an empty array)")
    return items


@jobs.command("put")
@client_options
@json_option
@click.option(
    "--run",
    "run_on_create",
    is_flag=True,
    help="Run each job once as soon as it is stored (Dkron's runoncreate).",
)
@click.argument("file", type=click.File("r", encoding="utf-8"))
def jobs_put(
    address: str, timeout: float, as_json: bool, run_on_create: bool, file: IO[str]
) -> None:
    """Create or replace the jobs of FILE: a JSON job object or an array of them
    (``-`` reads standard input). Each job is sent on its own; a job that fails is
    reported and the others are still sent (exit code 1 if any failed)."""
    items = read_jobs_file(file)
    params = {"runoncreate": "true"} if run_on_create else None
    bodies: list[str] = []
    failures = 0
    with api(address, timeout) as client:
        for index, item in enumerate(items):
            label = item.get("name") if isinstance(item.get("name"), str) else f"#{index}"
            try:
                response = client.request("POST", "/v1/jobs", params=params, json_body=item)
            except ApiError as exc:
                failures += 1
                click.echo(f"error: job {label}: {exc.format_message()}", err=True)
                continue
            if as_json:
                bodies.append(response.text.strip())
                continue
            stored = client.decode(response)
            name = stored.get("name", label) if isinstance(stored, dict) else label
            click.echo(f"{_put_verb(response)} job {name}")
    if as_json and bodies:
        click.echo(bodies[0] if len(items) == 1 else "[" + ",".join(bodies) + "]")
    if failures:
        raise click.exceptions.Exit(1)


def _put_verb(response: httpx.Response) -> str:
    """created/updated when the server says which (``X-Trickle-Created``); Dkron answers
    201 to both, so otherwise just "saved"."""
    created = response.headers.get(CREATED_HEADER, "").lower()
    return {"true": "created", "false": "updated"}.get(created, "saved")


@jobs.command("delete")
@client_options
@json_option
@click.argument("name")
def jobs_delete(address: str, timeout: float, as_json: bool, name: str) -> None:
    """Delete a job and its executions."""
    with api(address, timeout) as client:
        response = client.request("DELETE", job_path(name))
    if as_json:
        emit_json(response)
    else:
        click.echo(f"deleted job {name}")


@jobs.command("run")
@client_options
@json_option
@click.argument("name")
def jobs_run(address: str, timeout: float, as_json: bool, name: str) -> None:
    """Run a job now, outside its schedule."""
    with api(address, timeout) as client:
        response = client.request("POST", job_path(name, "run"))
    if as_json:
        emit_json(response)
    else:
        click.echo(f"job {name} started; see: trickle executions {name}")


@jobs.command("toggle")
@client_options
@json_option
@click.argument("name")
def jobs_toggle(address: str, timeout: float, as_json: bool, name: str) -> None:
    """Disable an enabled job, or enable a disabled one."""
    with api(address, timeout) as client:
        response = client.request("POST", job_path(name, "toggle"))
        if as_json:
            emit_json(response)
            return
        body = client.decode(response)
    state = "disabled" if isinstance(body, Mapping) and body.get("disabled") else "enabled"
    click.echo(f"job {name} is now {state}")


# --- executions ---------------------------------------------------------------------------


@click.command("executions")
@client_options
@json_option
@click.option(
    "--limit",
    type=click.IntRange(min=1),
    default=None,
    help="Show at most N executions (the newest).  [default: all kept]",
)
@click.argument("job")
def executions(address: str, timeout: float, as_json: bool, limit: int | None, job: str) -> None:
    """List the executions of JOB, newest first: id, times, status, node, attempt, exit
    code and the first line of output."""
    params: dict[str, str] = {}  # the API's default order: newest first
    if limit is not None:
        params.update({"_start": "0", "_end": str(limit)})
    with api(address, timeout) as client:
        response = client.request("GET", job_path(job, "executions"), params=params)
        if as_json:
            emit_json(response)
            return
        body = client.decode(response)
    if limit is not None:
        body = body[:limit]  # a server that ignores _start/_end (as Dkron) still obeys
    if not body:
        click.echo(f"no executions of job {job}")
        return
    click.echo(output.executions_table(body))


# --- cluster ------------------------------------------------------------------------------


@click.command("members")
@client_options
@json_option
def members(address: str, timeout: float, as_json: bool) -> None:
    """List the members of the cluster as the node at --address sees them: name, gossip
    address, status (alive, leaving, left, failed) and tags."""
    with api(address, timeout) as client:
        response = client.request("GET", "/v1/members")
        if as_json:
            emit_json(response)
            return
        body = client.decode(response)
    if not body:
        click.echo("no members")
        return
    click.echo(output.members_table(body))


@click.command("leave")
@client_options
@json_option
@click.option(
    "--wait",
    is_flag=True,
    help="Return once the node has stopped (its API no longer answers), waiting at most "
    "--timeout seconds.",
)
def leave(address: str, timeout: float, as_json: bool, wait: bool) -> None:
    """Make the server at --address leave the cluster and stop (Dkron's 'dkron leave').

    It tells the other nodes it leaves (they show it as left, not failed), gives its running
    executions its --shutdown-grace to finish, and exits with code 0, as at SIGTERM. An
    agent serves no API: stop it with SIGTERM. --json prints the members as the node saw
    them."""
    with api(address, timeout) as client:
        try:
            response = client.request("POST", "/v1/leave")
        except ApiError as exc:
            if exc.status in (404, 405):
                raise CliError(
                    f"{exc.format_message()} (POST /v1/leave is served by servers; stop an "
                    "agent with SIGTERM)"
                ) from None
            raise
        node = response.headers.get("X-Whom") or client.address
        if as_json:
            emit_json(response)
        elif not wait:
            click.echo(f"node {node} is leaving the cluster and stopping")
        if wait:
            if not client.wait_until_stopped(timeout):
                raise CliError(
                    f"node {node} still answers at {client.address} after {timeout:g}s: it "
                    "is still stopping (running executions get its --shutdown-grace to "
                    "finish); wait longer with --timeout"
                )
            if not as_json:
                click.echo(f"node {node} left the cluster and stopped")


@click.group("raft")
def raft() -> None:
    """Show or change the servers of the Raft configuration (Dkron's 'dkron raft')."""


@raft.command("list-peers")
@client_options
@json_option
def raft_list_peers(address: str, timeout: float, as_json: bool) -> None:
    """List the servers of the Raft configuration, as Dkron does: node, id, Raft address,
    state (leader or follower) and whether it votes (a learner catching up does not)."""
    with api(address, timeout) as client:
        response = client.request("GET", "/v1/raft/peers")
        if as_json:
            emit_json(response)
            return
        body = client.decode(response)
    click.echo(output.raft_peers_table(body))


def _peer_id(ctx: click.Context, param: click.Parameter, value: str) -> str:
    if not value.strip():
        raise click.BadParameter("give the node name of a server", ctx=ctx, param=param)
    return value


@raft.command("remove-peer")
@client_options
@json_option
@click.option(
    "--peer-id",
    required=True,
    metavar="NAME",
    callback=_peer_id,
    help="The node name of the server to remove (as 'trickle raft list-peers' shows it).",
)
def raft_remove_peer(address: str, timeout: float, as_json: bool, peer_id: str) -> None:
    """Remove a server from the Raft configuration: one that is gone for good, so that the
    others stop counting it in their majority. Any server can be asked; the leader makes
    the change. --json prints the servers left."""
    path = "/v1/raft/peers/" + quote(peer_id, safe="")
    with api(address, timeout) as client:
        response = client.request("DELETE", path)
        if as_json:
            emit_json(response)
            return
        body = client.decode(response)
    left = ", ".join(str(p.get("id", "")) for p in body if isinstance(p, Mapping)) or "none"
    click.echo(f"removed {peer_id} from the Raft configuration; servers: {left}")


def _voters(
    ctx: click.Context, param: click.Parameter, value: str | None
) -> tuple[str, ...] | None:
    if value is None:
        return None
    names = [name.strip() for name in value.split(",")]
    if not all(names):
        raise click.BadParameter(
            f"expected node names separated by commas, got {value!r}", ctx=ctx, param=param
        )
    return tuple(dict.fromkeys(names))


def _nonempty_name(ctx: click.Context, param: click.Parameter, value: str) -> str:
    if not value.strip():
        raise click.BadParameter("give the node name the server runs with", ctx=ctx, param=param)
    return value.strip()


@raft.command("recover")
@click.option(
    "--data-dir",
    required=True,
    metavar="DIR",
    type=click.Path(file_okay=False, path_type=Path),
    help="The stopped server's data dir (the one holding raft.db).",
)
@click.option(
    "--node-name",
    required=True,
    metavar="NAME",
    callback=_nonempty_name,
    help="The node name this server runs with.",
)
@click.option(
    "--voters",
    metavar="NAME[,NAME...]",
    callback=_voters,
    help="The voters after recovery, this server among them.  [default: this server alone]",
)
@click.option("--dry-run", is_flag=True, help="Print what would change; change nothing.")
def raft_recover(
    data_dir: Path, node_name: str, voters: tuple[str, ...] | None, dry_run: bool
) -> None:
    """Offline recovery of a cluster that lost its majority for good: rewrite the Raft
    configuration stored in DIR so that this server makes a cluster of its own (or of
    --voters), keeping every job and execution. Run it on a stopped server; it prints the
    end of the log (to choose the most recent survivor) and what changed. See
    docs/cluster.md before using it.

    Exit codes: 0 recovered (or nothing to recover), 1 refused or failed (the server
    runs, no Raft state in DIR, a damaged file, a wrong --node-name or --voters),
    2 bad usage."""
    from trickle.engine._engine import RAFT_DB
    from trickle.engine.membership import recover_storage
    from trickle.errors import TrickleError
    from trickle.raft.sqlstore import SqliteRaftStorage
    from trickle.raft.storage import RaftStorageError

    path = data_dir.expanduser() / RAFT_DB
    if not data_dir.expanduser().is_dir():
        raise CliError(f"data dir {data_dir} does not exist")
    if not path.is_file():
        raise CliError(
            f"{path} does not exist: {data_dir} holds no Raft state (is it a server's data dir?)"
        )
    try:
        storage = SqliteRaftStorage(path)
    except RaftStorageError as exc:
        if "in use" in exc.message:
            raise CliError(
                f"{path} is in use: the server is running; stop it first "
                "(recovery rewrites the stored configuration of a stopped server)"
            ) from None
        raise CliError(exc.message) from None
    except TrickleError as exc:
        raise CliError(exc.message) from None
    except OSError as exc:
        raise CliError(f"{path}: {exc.strerror or exc}") from None
    try:
        plan = recover_storage(storage, node=node_name, voters=voters, dry_run=dry_run)
    except TrickleError as exc:
        raise CliError(exc.message) from None
    finally:
        storage.close()
    click.echo(plan.describe())
    if dry_run and plan.changed:
        click.echo("dry run: nothing was changed")


# --- version ------------------------------------------------------------------------------


@click.command("version")
@json_option
def version(as_json: bool) -> None:
    """Print trickle's version."""
    if as_json:
        click.echo(json.dumps({"name": "trickle", "version": __version__}))
    else:
        click.echo(f"trickle {__version__}")
