"""OutputBuffer: keeps the last bytes of a run's output and forwards every chunk."""

from __future__ import annotations

from trickle.engine.executors.base import DEFAULT_OUTPUT_LIMIT, OutputBuffer


def test_keeps_everything_below_the_limit():
    buf = OutputBuffer(limit=10)
    buf.write(b"abc")
    buf.write("def")
    assert buf.getvalue() == b"abcdef"
    assert buf.text() == "abcdef"
    assert buf.total_bytes == 6
    assert not buf.truncated


def test_keeps_only_the_last_limit_bytes():
    buf = OutputBuffer(limit=5)
    buf.write(b"0123")
    buf.write(b"4567")
    buf.write(b"89")
    assert buf.getvalue() == b"56789"
    assert buf.total_bytes == 10
    assert buf.truncated


def test_a_single_chunk_larger_than_the_limit_keeps_its_tail():
    buf = OutputBuffer(limit=4)
    buf.write(b"abcdefgh")
    assert buf.getvalue() == b"efgh"


def test_every_chunk_reaches_on_chunk_in_order_even_past_the_limit():
    seen: list[bytes] = []
    buf = OutputBuffer(limit=3, on_chunk=seen.append)
    buf.write(b"hello")
    buf.write("wörld")
    assert seen == [b"hello", "wörld".encode()]
    assert buf.getvalue() == "wörld".encode()[-3:]


def test_empty_writes_are_not_forwarded():
    seen: list[bytes] = []
    buf = OutputBuffer(on_chunk=seen.append)
    buf.write(b"")
    buf.write("")
    assert seen == []
    assert buf.total_bytes == 0


def test_text_drops_a_multibyte_character_cut_by_truncation():
    buf = OutputBuffer(limit=4)
    buf.write("aé€".encode())  # 1 + 2 + 3 bytes: the tail starts inside 'é'
    assert buf.text() == "€"


def test_text_replaces_invalid_utf8_when_nothing_was_cut():
    buf = OutputBuffer(limit=10)
    buf.write(b"ok\xff")
    assert buf.text() == "ok\ufffd"


def test_default_limit_is_dkrons_256000_bytes():
    buf = OutputBuffer()
    buf.write(b"x" * (DEFAULT_OUTPUT_LIMIT + 10))
    assert len(buf.getvalue()) == 256_000
