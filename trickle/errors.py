"""The exception tree of trickle; every error knows the HTTP status the API answers with.

TrickleError (500)
├── ValidationError (400)          bad input; ``field`` names what is wrong
│   └── ScheduleError (400)        a schedule that does not parse
├── NotFound (404)
│   ├── JobNotFound
│   ├── ParentNotFound             "specified parent job not found"
│   └── ExecutionNotFound
│       └── ExecutionNotRunning    a result for a run that is not running (any more)
├── Conflict (409)
│   ├── JobHasDependents           delete a parent before its children
│   ├── ConcurrencyForbidden       a forbid job is already running
│   └── JobDisabled                a disabled job cannot be run
│   └── ConfChangeRejected         a Raft membership change that cannot be made now
├── PayloadTooLarge (413)
├── SubmissionsPaused (503)
├── EngineClosed (503)             the engine is not running
├── NotLeader (503)                this server is not the Raft leader; ``leader`` hints who is
├── NotAServer (503)               this node is an agent: jobs and history live on servers
├── JoinFailed (503)               no gossip address answered within join_retry_max attempts
├── ProposalDropped (503)          the leader could not take a proposal (transfer, lost term)
└── StorageCorrupt (500)           durable Raft state that cannot be read back safely
"""

from __future__ import annotations

from typing import ClassVar


class TrickleError(Exception):
    """Root of trickle's errors."""

    http_status: ClassVar[int] = 500

    @property
    def message(self) -> str:
        return str(self.args[0]) if self.args else self.__class__.__name__


class ValidationError(TrickleError, ValueError):
    """Input that cannot be accepted. ``field`` is the offending field ('' if none)."""

    http_status = 400

    def __init__(self, message: str, *, field: str = "") -> None:
        super().__init__(message)
        self.field = field


class ScheduleError(ValidationError):
    """A schedule expression that does not parse; the message says why."""


class NotFound(TrickleError, LookupError):
    http_status = 404


class JobNotFound(NotFound):
    def __init__(self, name: str) -> None:
        super().__init__(f"job not found: {name}")
        self.name = name


class ParentNotFound(NotFound):
    def __init__(self, parent: str) -> None:
        super().__init__("specified parent job not found")
        self.parent = parent


class ExecutionNotFound(NotFound):
    def __init__(self, job: str, execution_id: str) -> None:
        super().__init__(f"execution not found: {job}/{execution_id}")


class ExecutionNotRunning(ExecutionNotFound):
    """A result for a run that is not running: it already finished (a duplicate report),
    was recorded failed meanwhile (its node declared failed), or never started."""

    def __init__(self, job: str, execution_id: str) -> None:
        NotFound.__init__(
            self,
            f"execution {job}/{execution_id} is not running: it already finished or was"
            " recorded failed (or never started), so this result is not recorded",
        )


class Conflict(TrickleError):
    http_status = 409


class JobHasDependents(Conflict):
    def __init__(self, name: str, dependents: list[str]) -> None:
        super().__init__(
            f"job {name} has dependent jobs {', '.join(dependents)}: delete children first"
        )


class ConcurrencyForbidden(Conflict):
    def __init__(self, name: str) -> None:
        super().__init__(f"job {name} has concurrency forbid and is already running")


class ConcurrencyLimitReached(Conflict):
    def __init__(self, name: str, limit: int) -> None:
        super().__init__(f"job {name} already has {limit} runs running, its concurrency_limit")


class ClusterAtCapacity(Conflict):
    def __init__(self, cap: int) -> None:
        super().__init__(f"the cluster already runs {cap} executions, its max_running")


class JobDisabled(Conflict):
    def __init__(self, name: str) -> None:
        super().__init__(f"job {name} is disabled")


class PayloadTooLarge(TrickleError):
    http_status = 413


class SubmissionsPaused(TrickleError):
    http_status = 503

    def __init__(self) -> None:
        super().__init__("New job submissions are currently paused")


class EngineClosed(TrickleError):
    http_status = 503

    def __init__(self) -> None:
        super().__init__("the engine is not running")


class NotAServer(TrickleError):
    """A job or history operation asked of an agent (it only runs what servers dispatch)."""

    http_status = 503

    def __init__(self, node: str) -> None:
        super().__init__(f"{node} is an agent: jobs and executions are kept by the servers")
        self.node = node


class JoinFailed(TrickleError):
    """The node could not join the cluster: no address answered (Dkron exits 1)."""

    http_status = 503


class ConfChangeRejected(Conflict):
    """A membership change that cannot be made now (one is pending, unknown node, ...)."""


class NotLeader(TrickleError):
    """This server is not the Raft leader. ``leader`` is the leader's id if known."""

    http_status = 503

    def __init__(self, leader: str | None) -> None:
        hint = f"; the leader is {leader}" if leader else "; no leader is known"
        super().__init__(f"this server is not the leader{hint}")
        self.leader = leader


class ProposalDropped(TrickleError):
    """The leader did not take a proposal (leadership transfer, term lost); retry later."""

    http_status = 503


class StorageCorrupt(TrickleError):
    """Durable Raft state that cannot be read back safely (not a torn tail: real damage)."""
