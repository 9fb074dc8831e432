"""The feed's pure parts: filters from the query string and from subscribe messages, events
rendered as frames, and `trickle watch`'s URL, lines and backoff."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from werkzeug.datastructures import MultiDict

from trickle.cli.watch import Backoff, HumanFormat, feed_url, format_duration
from trickle.engine.events import Event, EventKind
from trickle.engine.model import Execution, ExecutionStatus, Job, Trigger
from trickle.http import schemas
from trickle.http.feed import (
    FILTER_KINDS,
    FeedError,
    Filters,
    event_to_frame,
    filters_from_query,
    parse_client_message,
)

AT = datetime(2026, 11, 22, 12, 0, 1, 500000, tzinfo=UTC)


def _execution(**fields: object) -> Execution:
    base: dict[str, object] = {
        "id": "1-n1",
        "job_name": "backup",
        "node_name": "n1",
        "group": 1,
        "started_at": AT,
        "trigger": Trigger.MANUAL,
    }
    return Execution(**{**base, **fields})  # type: ignore[arg-type]


# -- filters ----------------------------------------------------------------------------------


def test_query_filters_are_comma_separated_and_absent_or_empty_means_all() -> None:
    assert filters_from_query(MultiDict()) == Filters(None, None)
    assert filters_from_query(MultiDict({"jobs": "", "kinds": " "})) == Filters(None, None)
    got = filters_from_query(MultiDict({"jobs": "a, b,,", "kinds": "paused,job_created"}))
    assert got == Filters(frozenset({"a", "b"}), frozenset({"paused", "job_created"}))


def test_query_with_an_unknown_kind_names_it_and_lists_the_valid_ones() -> None:
    with pytest.raises(FeedError) as caught:
        filters_from_query(MultiDict({"kinds": "paused,nope"}))
    assert "unknown event kind 'nope'" in str(caught.value)
    assert "execution_output" in str(caught.value)


def test_lagged_is_not_a_filter_kind() -> None:
    assert "lagged" not in FILTER_KINDS
    assert set(FILTER_KINDS) == {k.value for k in EventKind} - {"lagged"}


def test_subscribe_message_with_nulls_and_missing_keys_means_all() -> None:
    assert parse_client_message('{"type": "subscribe"}') == Filters(None, None)
    got = parse_client_message('{"type": "subscribe", "jobs": ["x"], "kinds": null}')
    assert got == Filters(frozenset({"x"}), None)
    assert got.to_json() == {"jobs": ["x"], "kinds": None}


@pytest.mark.parametrize(
    ("message", "error"),
    [
        (b"{}", "binary frame"),
        ("nope", "not JSON"),
        ('"subscribe"', "expected a JSON object, got str"),
        ('{"jobs": ["a"]}', "unknown message type None"),
        ('{"type": "subscribe", "kinds": [1]}', "kinds: expected a list of non-empty strings"),
        ('{"type": "subscribe", "jobs": [""]}', "jobs: expected a list of non-empty strings"),
        ('{"type": "subscribe", "kinds": []}', "kinds: an empty list matches nothing"),
        ('{"type": "subscribe", "kinds": ["lagged"]}', "unknown event kind 'lagged'"),
        ('{"type": "subscribe", "extra": 1}', "unknown field 'extra'"),
    ],
)
def test_bad_client_messages_say_what_is_wrong(message: str | bytes, error: str) -> None:
    with pytest.raises(FeedError) as caught:
        parse_client_message(message)
    assert error in str(caught.value)


# -- frames -----------------------------------------------------------------------------------


def test_output_frame_carries_the_chunk_and_its_execution() -> None:
    event = Event(
        kind=EventKind.EXECUTION_OUTPUT,
        at=AT,
        seq=7,
        job_name="backup",
        execution=_execution(),
        chunk="half a li",
    )
    assert event_to_frame(event) == {
        "type": "execution_output",
        "seq": 7,
        "at": "2026-11-22T12:00:01.5Z",
        "job_name": "backup",
        "execution_id": "1-n1",
        "node_name": "n1",
        "chunk": "half a li",
    }


def test_execution_frame_renders_times_in_the_jobs_zone_as_the_listing_does() -> None:
    ex = _execution(finished_at=AT, success=True, status=ExecutionStatus.SUCCESS, exit_code=0)
    event = Event(kind=EventKind.EXECUTION_FINISHED, at=AT, seq=3, job_name="backup", execution=ex)
    frame = event_to_frame(event, timezone="Europe/Paris")
    assert frame["execution"] == schemas.execution_to_json(
        ex, timezone="Europe/Paris", listing=True
    )
    assert frame["execution"]["started_at"] == "2026-11-22T13:00:01.5+01:00"
    assert frame["at"] == "2026-11-22T12:00:01.5Z"  # the event time is always UTC


def test_job_frame_carries_the_job_as_the_api_does() -> None:
    job = Job(name="backup", schedule="@every 1m", executor="shell")
    event = Event(
        kind=EventKind.JOB_DELETED,
        at=AT,
        seq=1,
        job_name="backup",
        job=job,
        data={"reason": "ephemeral"},
    )
    frame = event_to_frame(event)
    assert frame["job"] == schemas.job_to_json(job) and frame["reason"] == "ephemeral"


def test_member_frame_is_the_members_route_shape() -> None:
    data = {"member": "n2", "status": "failed", "addr": "10.0.0.2", "port": 8946, "tags": {}}
    frame = event_to_frame(Event(kind=EventKind.MEMBER_FAILED, at=AT, seq=9, data=data))
    assert frame["member"]["Name"] == "n2" and frame["member"]["statusText"] == "failed"
    assert frame["member"]["Port"] == 8946


def test_leader_lag_skip_and_pause_frames() -> None:
    leader = Event(kind=EventKind.LEADER_CHANGED, at=AT, seq=2, data={"leader": "n3"})
    assert event_to_frame(leader)["leader"] == "n3"
    lagged = Event(kind=EventKind.LAGGED, at=AT, seq=90, data={"dropped": 12})
    assert event_to_frame(lagged) == {
        "type": "lagged",
        "seq": 90,
        "at": "2026-11-22T12:00:01.5Z",
        "dropped": 12,
    }
    skipped = Event(
        kind=EventKind.FIRE_SKIPPED,
        at=AT,
        seq=4,
        job_name="backup",
        data={"scheduled_at": AT.isoformat(), "reason": "no alive node matches"},
    )
    frame = event_to_frame(skipped)
    assert frame["job_name"] == "backup" and frame["reason"] == "no alive node matches"
    assert set(event_to_frame(Event(kind=EventKind.PAUSED, at=AT, seq=5))) == {
        "type",
        "seq",
        "at",
    }


# -- trickle watch ----------------------------------------------------------------------------


def test_feed_url_from_the_http_address() -> None:
    assert feed_url("127.0.0.1:8080") == "ws://127.0.0.1:8080/v1/events"
    assert (
        feed_url("https://cron.example/", ["a b", "c"], ["paused", "unpaused"])
        == "wss://cron.example/v1/events?jobs=a+b,c&kinds=paused,unpaused"
    )


def _output(chunk: str, ex_id: str = "1-n1", node: str = "n1") -> dict[str, object]:
    return {
        "type": "execution_output",
        "seq": 1,
        "job_name": "backup",
        "execution_id": ex_id,
        "node_name": node,
        "chunk": chunk,
    }


def test_watch_prints_whole_lines_prefixed_by_job_and_the_rest_at_the_finish() -> None:
    human = HumanFormat()
    started = {
        "type": "execution_started",
        "seq": 1,
        "at": "2026-11-22T12:00:01Z",
        "job_name": "backup",
        "execution": {"id": "1-n1", "node_name": "n1", "trigger": "schedule", "attempt": 1},
    }
    assert human.frame(started) == [("12:00:01Z backup: started on n1 (schedule) [1-n1]", False)]
    assert human.frame(_output("one\ntw")) == [("backup | one", False)]
    assert human.frame(_output("o\r\n")) == [("backup | two", False)]
    assert human.frame(_output("tail")) == []
    finished = {
        "type": "execution_finished",
        "seq": 5,
        "at": "2026-11-22T12:00:04Z",
        "job_name": "backup",
        "execution": {
            "id": "1-n1",
            "node_name": "n1",
            "status": "failed",
            "success": False,
            "exit_code": 3,
            "started_at": "2026-11-22T12:00:01Z",
            "finished_at": "2026-11-22T12:00:03.5Z",
        },
    }
    assert human.frame(finished) == [
        ("backup | tail", False),
        ("12:00:04Z backup: failed on n1 in 2.50s (exit 3)", False),
    ]
    assert human.flush_all() == []


def test_watch_names_the_node_when_one_job_runs_on_several() -> None:
    human = HumanFormat()
    human.frame(_output("a\n", "1-n1", "n1"))
    assert human.frame(_output("b\n", "1-n2", "n2")) == [("backup@n2 | b", False)]


def test_watch_tells_lag_and_errors_on_stderr_and_ignores_unknown_types() -> None:
    human = HumanFormat()
    [(line, to_err)] = human.frame({"type": "lagged", "seq": 3, "dropped": 40})
    assert to_err and "40 events dropped" in line
    assert human.frame({"type": "error", "seq": 3, "message": "bad"})[0][1] is True
    assert human.frame({"type": "from_the_future", "seq": 4}) == []


def test_durations_and_backoff() -> None:
    assert [format_duration(s) for s in (0.4, 12.34, 245, 7380)] == [
        "0.40s",
        "12.3s",
        "4m05s",
        "2h03m",
    ]
    backoff = Backoff(first=0.5, cap=3)
    assert [backoff.next() for _ in range(5)] == [0.5, 1, 2, 3, 3]
    backoff.reset()
    assert backoff.next() == 0.5


def test_the_shared_frame_cache_is_bounded_in_frames_and_characters() -> None:
    from trickle.http.feed import FRAME_CACHE_CHARS, FRAME_CACHE_SIZE, _FeedState

    state = _FeedState()
    for seq in range(FRAME_CACHE_SIZE + 10):
        state.remember(seq, "x")
    assert len(state.frames) == FRAME_CACHE_SIZE and state.cached(0) is None
    big = "y" * (FRAME_CACHE_CHARS // 8)
    for seq in range(100_000, 100_020):
        state.remember(seq, big)
    assert state.chars <= FRAME_CACHE_CHARS and state.cached(100_019) == big
    state.remember(5, "z" * FRAME_CACHE_CHARS)  # larger than a quarter: never kept
    assert state.cached(5) is None
    state.clear()
    assert (len(state.frames), state.chars) == (0, 0)
