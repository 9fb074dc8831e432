"""``trickle watch [JOB...]``: a terminal client of the live feed (``GET /v1/events``).

Tails executions and their output as they happen, one line per event for a person
(``HumanFormat``), or every frame as one JSON line (``--json``). When the server goes away
it says so on stderr and reconnects with backoff; Ctrl-C exits 0.

The first connection must succeed (as every client command, a server that does not
answer, or refuses the filters, is an error: exit 1); after that the watch outlives the
server's restarts.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode, urlsplit, urlunsplit

import attrs
import click

from trickle.cli.client import ADDRESS_ENV, CliError, _reason, client_options
from trickle.cli.config import ConfigError, normalise_address

FEED_PATH = "/v1/events"
FIRST_BACKOFF = 0.5  # seconds before the first reconnection attempt
MAX_BACKOFF = 5.0  # seconds between reconnection attempts, at most
MAX_FRAME = 64 << 20  # bytes: the largest frame accepted (a finished execution's output)
CLOSE_TIMEOUT = 1.0  # seconds the client waits for the server's answer to its close

Echo = Callable[[str, bool], None]  # (line, to stderr?)


def feed_url(address: str, jobs: Sequence[str] = (), kinds: Sequence[str] = ()) -> str:
    """The feed's WebSocket URL on the server at ``address`` (``http://host:port``):
    ``ws://host:port/v1/events?jobs=...&kinds=...`` (``wss`` for ``https``)."""
    parts = urlsplit(normalise_address(address))
    scheme = "wss" if parts.scheme == "https" else "ws"
    query = {}
    if jobs:
        query["jobs"] = ",".join(jobs)
    if kinds:
        query["kinds"] = ",".join(kinds)
    path = parts.path.rstrip("/") + FEED_PATH
    return urlunsplit((scheme, parts.netloc, path, urlencode(query, safe=","), ""))


def _clock(value: Any) -> str:
    """An RFC 3339 time as ``HH:MM:SSZ`` (UTC), or ``--:--:--`` when absent."""
    moment = _parse_time(value)
    return moment.strftime("%H:%M:%SZ") if moment is not None else "--:--:--"


def _parse_time(value: Any) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        return None
    if moment.year <= 1:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


def format_duration(seconds: float) -> str:
    """``0.42s``, ``12.3s``, ``4m05s``, ``2h03m``."""
    if seconds < 10:
        return f"{seconds:.2f}s"
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(int(round(seconds)), 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


def _duration(execution: Mapping[str, Any]) -> str:
    start = _parse_time(execution.get("started_at"))
    end = _parse_time(execution.get("finished_at"))
    if start is None or end is None:
        return ""
    return f" in {format_duration(max(0.0, (end - start).total_seconds()))}"


@attrs.define
class HumanFormat:
    """Feed frames -> lines for a person. ``frame`` returns ``(line, to_stderr)`` pairs.

    Output chunks are cut into lines, each prefixed by its job (``job@node`` while more
    than one execution of the job runs); a line still incomplete when its execution
    finishes is printed before the finish line. Unknown frame types are ignored."""

    partial: dict[str, str] = attrs.field(factory=dict)  # execution id -> unfinished line
    running: dict[str, tuple[str, str]] = attrs.field(factory=dict)  # id -> (job, node)

    def _prefix(self, job: str, node: str) -> str:
        same_job = sum(1 for j, _ in self.running.values() if j == job)
        return f"{job}@{node}" if same_job > 1 and node else job

    def _output(self, frame: Mapping[str, Any]) -> list[tuple[str, bool]]:
        ex_id = str(frame.get("execution_id", ""))
        job, node = str(frame.get("job_name", "")), str(frame.get("node_name", ""))
        self.running.setdefault(ex_id, (job, node))
        text = self.partial.pop(ex_id, "") + str(frame.get("chunk", ""))
        *lines, rest = text.split("\n")
        if rest:
            self.partial[ex_id] = rest
        prefix = self._prefix(job, node)
        return [(f"{prefix} | {line.rstrip(chr(13))}", False) for line in lines]

    def _flush(self, ex_id: str) -> list[tuple[str, bool]]:
        rest = self.partial.pop(ex_id, "")
        if not rest:
            return []
        job, node = self.running.get(ex_id, ("", ""))
        return [(f"{self._prefix(job, node)} | {rest.rstrip(chr(13))}", False)]

    def flush_all(self) -> list[tuple[str, bool]]:
        """Every unfinished line (at exit)."""
        out: list[tuple[str, bool]] = []
        for ex_id in list(self.partial):
            out += self._flush(ex_id)
        return out

    def frame(self, frame: Mapping[str, Any]) -> list[tuple[str, bool]]:
        kind = frame.get("type")
        at = _clock(frame.get("at"))
        job = frame.get("job_name", "")
        if kind == "execution_output":
            return self._output(frame)
        if kind == "execution_started":
            ex = frame.get("execution") or {}
            ex_id = str(ex.get("id", ""))
            node = str(ex.get("node_name", ""))
            self.running[ex_id] = (job, node)
            trigger = ex.get("trigger") or ""
            attempt = ex.get("attempt") or 1
            extra = f", attempt {attempt}" if attempt > 1 else ""
            return [(f"{at} {job}: started on {node} ({trigger}{extra}) [{ex_id}]", False)]
        if kind == "execution_finished":
            ex = frame.get("execution") or {}
            ex_id = str(ex.get("id", ""))
            out = self._flush(ex_id)
            self.running.pop(ex_id, None)
            status = ex.get("status") or ("success" if ex.get("success") else "failed")
            word = "succeeded" if status == "success" else status
            code = ex.get("exit_code")
            exit_text = f" (exit {code})" if code is not None else ""
            node = ex.get("node_name", "")
            out.append((f"{at} {job}: {word} on {node}{_duration(ex)}{exit_text}", False))
            return out
        if kind in ("job_created", "job_updated", "job_deleted"):
            verb = str(kind).removeprefix("job_")
            return [(f"{at} job {job} {verb}", False)]
        if kind == "job_toggled":
            disabled = (frame.get("job") or {}).get("disabled")
            return [(f"{at} job {job} {'disabled' if disabled else 'enabled'}", False)]
        if kind == "fire_skipped":
            return [(f"{at} {job}: fire skipped: {frame.get('reason', '')}", False)]
        if kind == "fire_missed":
            count = frame.get("count", 1)
            what = "fire" if count == 1 else f"{count} fires"
            return [(f"{at} {job}: {what} missed: {frame.get('reason', '')}", False)]
        if isinstance(kind, str) and kind.startswith("member_"):
            member = frame.get("member") or {}
            verb = kind.removeprefix("member_")
            name, addr = member.get("Name", ""), member.get("Addr", "")
            return [(f"{at} member {name} {verb} ({member.get('statusText', '')}, {addr})", False)]
        if kind == "leader_changed":
            leader = frame.get("leader")
            return [(f"{at} leader: {leader}" if leader else f"{at} no leader", False)]
        if kind in ("paused", "unpaused"):
            return [(f"{at} job submissions {kind}", False)]
        if kind == "lagged":
            return [
                (
                    f"watch: {frame.get('dropped', 0)} events dropped: this terminal read "
                    "them too slowly",
                    True,
                )
            ]
        if kind == "error":
            return [(f"watch: the server says: {frame.get('message', '')}", True)]
        return []


@attrs.define
class Backoff:
    """Delays between reconnection attempts: doubling from ``first`` up to ``cap``."""

    first: float = FIRST_BACKOFF
    cap: float = MAX_BACKOFF
    current: float = 0.0

    def next(self) -> float:
        self.current = self.first if not self.current else min(self.cap, self.current * 2)
        return self.current

    def reset(self) -> None:
        self.current = 0.0


class _Rejected(Exception):
    """The server refused the upgrade for a reason retrying will not fix (4xx)."""


def _rejection(exc: Any) -> str:
    body = (exc.body or b"").decode("utf-8", errors="replace").strip()
    return f"{exc.status_code} {body}".strip()


async def watch_feed(
    address: str,
    *,
    jobs: Sequence[str],
    kinds: Sequence[str],
    as_json: bool,
    connect_timeout: float,
    echo: Echo,
    backoff: Backoff | None = None,
) -> None:
    """Print the feed of the server at ``address`` until cancelled. Raises ``CliError`` if
    the first connection fails or the server refuses the filters; later failures are told
    on stderr and retried with ``backoff``."""
    url = feed_url(address, jobs, kinds)
    base = normalise_address(address)
    backoff = backoff or Backoff()
    human = HumanFormat()
    try:
        await _watch(url, base, as_json, connect_timeout, echo, backoff, human)
    finally:
        for line, to_err in human.flush_all():  # lines cut short by Ctrl-C
            echo(line, to_err)


async def _watch(
    url: str,
    base: str,
    as_json: bool,
    connect_timeout: float,
    echo: Echo,
    backoff: Backoff,
    human: HumanFormat,
) -> None:
    import trio
    from trio_websocket import (
        ConnectionClosed,
        ConnectionRejected,
        HandshakeError,
        open_websocket_url,
    )

    connected_once = False
    while True:
        reason = ""
        try:
            async with open_websocket_url(
                url,
                connect_timeout=connect_timeout,
                disconnect_timeout=CLOSE_TIMEOUT,
                max_message_size=MAX_FRAME,
            ) as ws:
                try:
                    while True:
                        text = await ws.get_message()
                        frame = json.loads(text)
                        if not isinstance(frame, dict):
                            continue
                        if frame.get("type") == "hello":
                            backoff.reset()
                            leader = frame.get("leader") or "none"
                            verb = "reconnected to" if connected_once else "watching"
                            connected_once = True
                            echo(
                                f"watch: {verb} {frame.get('node')} at {base} "
                                f"(leader: {leader}; trickle {frame.get('version')})",
                                True,
                            )
                        if as_json:
                            echo(text if isinstance(text, str) else text.decode(), False)
                            continue
                        for line, to_err in human.frame(frame):
                            echo(line, to_err)
                finally:
                    # trio-websocket 0.12 leaves its socket open when the server closed
                    # first; a watch that reconnects for days must not pile them up.
                    stream = getattr(ws, "_stream", None)
                    if ws.closed is not None and stream is not None:
                        with trio.CancelScope(shield=True):
                            await stream.aclose()
        except ConnectionRejected as exc:
            if 400 <= exc.status_code < 500 and exc.status_code not in (408, 429):
                raise CliError(f"{_rejection(exc)} (GET {FEED_PATH} at {base})") from None
            reason = f"the server refused the feed: {_rejection(exc)}"
        except ConnectionClosed as exc:
            close = exc.reason
            if close is None:
                reason = "the connection was closed"
            else:
                why = f": {close.reason}" if close.reason else ""
                reason = f"the server closed the feed ({close.code} {close.name}{why})"
        except HandshakeError as exc:
            cause = exc.__cause__
            why = _reason(cause) if isinstance(cause, Exception) else type(exc).__name__
            reason = f"cannot connect: {why}"
        except (OSError, trio.BrokenResourceError) as exc:
            reason = f"the connection broke: {_reason(exc)}"
        except ValueError as exc:  # a frame that is not JSON
            reason = f"the server sent a malformed frame: {exc}"
        if not connected_once:
            raise CliError(
                f"cannot watch trickle at {base}: {reason} "
                f"(is 'trickle serve --server' running there? set --address or {ADDRESS_ENV})"
            )
        for line, to_err in human.flush_all():
            echo(line, to_err)
        delay = backoff.next()
        echo(f"watch: {reason}; reconnecting in {delay:g}s", True)
        await trio.sleep(delay)


def _split_kinds(ctx: click.Context, param: click.Parameter, value: tuple[str, ...]) -> list[str]:
    kinds: list[str] = []
    for item in value:
        kinds += [k.strip() for k in item.split(",") if k.strip()]
    return kinds


def _echo(line: str, to_err: bool) -> None:
    click.echo(line, err=to_err)


@click.command("watch")
@client_options
@click.option(
    "--json", "as_json", is_flag=True, help="Print every frame of the feed as one JSON line."
)
@click.option(
    "--kinds",
    multiple=True,
    callback=_split_kinds,
    metavar="KIND[,KIND...]",
    help="Only these event kinds (repeat or comma-separate), e.g. "
    "execution_started,execution_output,execution_finished. Default: all.",
)
@click.argument("jobs", nargs=-1, metavar="[JOB]...")
def watch(
    address: str, timeout: float, as_json: bool, kinds: list[str], jobs: tuple[str, ...]
) -> None:
    """Tail executions and their output live, from the server's feed.

    With JOB names, only the events of those jobs. Without --json, one line per execution
    start and finish (job, node, status, duration) and the output lines prefixed by their
    job; with --json, every frame of the feed (docs/feed.md) as one JSON line. Messages
    about the connection go to stderr. Reconnects when the server goes away; Ctrl-C stops.
    """
    import trio

    try:
        normalise_address(address)
    except ConfigError as exc:
        raise click.BadParameter(
            str(exc).removeprefix("--address: "), param_hint="'--address'"
        ) from None
    try:
        trio.run(
            lambda: watch_feed(
                address,
                jobs=jobs,
                kinds=kinds,
                as_json=as_json,
                connect_timeout=timeout,
                echo=_echo,
            )
        )
    except KeyboardInterrupt:
        pass
    except BrokenPipeError:  # stdout closed (piped to head): a normal end
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    raise SystemExit(0)
