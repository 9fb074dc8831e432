"""Go duration strings (``time.ParseDuration`` / ``Duration.String``) for Dkron compatibility.

Dkron's job fields and executor settings (``@every 1h30m``, shell ``timeout``) use Go's
syntax, so trickle reads and writes exactly that: a sequence of decimal numbers, each with an
optional fraction and a unit (``ns``, ``us``/``µs``/``μs``, ``ms``, ``s``, ``m``, ``h``),
with an optional leading sign. ``"0"`` alone needs no unit. Days are not a unit in Go.

Values are ``float`` seconds; internally everything is counted in integer nanoseconds as
Go does, so that ``format_duration(parse_go_duration(s))`` is Go's canonical spelling.
"""

from __future__ import annotations

# Nanoseconds per unit, as Go's time package.
_UNITS: dict[str, int] = {
    "ns": 1,
    "us": 1_000,
    "\u00b5s": 1_000,  # micro sign
    "\u03bcs": 1_000,  # Greek small letter mu
    "ms": 1_000_000,
    "s": 1_000_000_000,
    "m": 60 * 1_000_000_000,
    "h": 3600 * 1_000_000_000,
}
_MAX_NANOS = (1 << 63) - 1  # Go's Duration is an int64 of nanoseconds (about 292 years)
_DIGITS = "0123456789"


def _quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def parse_go_duration_nanos(text: str) -> int:
    """Go's ``time.ParseDuration``: ``text`` -> integer nanoseconds.

    Raises ``ValueError`` with Go's messages (``invalid duration "x"``,
    ``missing unit in duration "1"``, ``unknown unit "d" in duration "1d"``).
    """
    if not isinstance(text, str):
        raise ValueError(f"invalid duration {text!r}: expected a string")
    orig = text
    s = text
    neg = False
    if s and s[0] in "+-":
        neg = s[0] == "-"
        s = s[1:]
    if s == "0":
        return 0
    if not s:
        raise ValueError(f"invalid duration {_quote(orig)}")
    total = 0
    while s:
        # the integer part
        i = 0
        while i < len(s) and s[i] in _DIGITS:
            i += 1
        int_part = s[:i]
        s = s[i:]
        frac_part = ""
        if s.startswith("."):
            s = s[1:]
            i = 0
            while i < len(s) and s[i] in _DIGITS:
                i += 1
            frac_part = s[:i]
            s = s[i:]
        if not int_part and not frac_part:
            raise ValueError(f"invalid duration {_quote(orig)}")
        # the unit: everything up to the next digit or dot
        i = 0
        while i < len(s) and s[i] != "." and s[i] not in _DIGITS:
            i += 1
        unit = s[:i]
        s = s[i:]
        if not unit:
            raise ValueError(f"missing unit in duration {_quote(orig)}")
        scale = _UNITS.get(unit)
        if scale is None:
            raise ValueError(f"unknown unit {_quote(unit)} in duration {_quote(orig)}")
        nanos = int(int_part or "0") * scale
        if frac_part:
            # exact: round the fraction down to whole nanoseconds, as Go does
            nanos += int(frac_part) * scale // (10 ** len(frac_part))
        total += nanos
        if total > _MAX_NANOS + (1 if neg else 0):
            raise ValueError(f"invalid duration {_quote(orig)}: out of range")
    return -total if neg else total


def parse_go_duration(text: str) -> float:
    """Go's ``time.ParseDuration`` syntax (``300ms``, ``1h30m``, ``-1.5h``) -> seconds.

    Raises ``ValueError`` with a message naming what is wrong.
    """
    return parse_go_duration_nanos(text) / 1e9


def _fmt_frac(value: int, prec: int) -> tuple[str, int]:
    """Go's fmtFrac: the fraction of ``value / 10**prec`` without trailing zeros."""
    digits: list[str] = []
    printed = False
    for _ in range(prec):
        digit = value % 10
        printed = printed or digit != 0
        if printed:
            digits.append(str(digit))
        value //= 10
    if not printed:
        return "", value
    return "." + "".join(reversed(digits)), value


def format_duration_nanos(nanos: int) -> str:
    """Go's ``Duration.String()`` for integer nanoseconds (``1h30m0s``, ``1.5s``, ``300ms``)."""
    neg = nanos < 0
    u = -nanos if neg else nanos
    if u == 0:
        return "0s"
    if u < 1_000_000_000:
        if u < 1_000:
            frac, u, unit = "", u, "ns"
        elif u < 1_000_000:
            frac, u = _fmt_frac(u, 3)
            unit = "\u00b5s"
        else:
            frac, u = _fmt_frac(u, 6)
            unit = "ms"
        text = f"{u}{frac}{unit}"
    else:
        frac, u = _fmt_frac(u, 9)
        text = f"{u % 60}{frac}s"
        u //= 60
        if u > 0:
            text = f"{u % 60}m{text}"
            u //= 60
            if u > 0:
                text = f"{u}h{text}"
    return f"-{text}" if neg else text


def format_duration(seconds: float) -> str:
    """Seconds -> the Go duration string (``1h30m0s``) that ``parse_go_duration`` reads.

    The value is rounded to whole nanoseconds first.
    """
    return format_duration_nanos(round(seconds * 1e9))
