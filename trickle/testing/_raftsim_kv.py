"""The simulator's application: a key-value state machine applied from a Raft log.

Commands are msgpack behind a ``KV`` prefix (``encode_command``); any other entry (6.824
style opaque commands, no-ops, conf changes) is recorded but changes no key. Every applied
entry extends a hash chain over (index, term, kind, data), so two replicas that applied the
same prefix hold the same chain, and a snapshot carries the chain of the index it covers.
Writes are deduplicated per client by sequence number, so a client may retry an operation
that perhaps took effect without applying it twice.
"""

from __future__ import annotations

import hashlib

import attrs
import msgpack

from trickle.raft._fastinit import fast_frozen_init, frozen_factory
from trickle.raft.messages import Entry, EntryKind

KV_PREFIX = b"KV"  # first bytes of every key-value command
OPS = ("put", "append", "get", "delete")
GENESIS_CHAIN = b"\x00" * 8  # chain value before index 1
_NORMAL = EntryKind.NORMAL  # (a global: an enum member read through its class is slow)


MEMO_ENTRIES = 1024  # results kept by chain_next and decode_command (then forgotten)
MEMO_MAX_DATA = 4096  # bytes of entry data beyond which a result is not kept (memory)
_chains: dict[tuple[bytes, int, int, int, bytes], bytes] = {}
_commands: dict[bytes, KvCommand | None] = {}
_UNKNOWN = object()  # not in _commands


def chain_next(prev: bytes, entry: Entry) -> bytes:
    """The hash chain after ``entry``: equal chains mean equal prefixes (with overwhelming
    probability). Deterministic across processes (no Python ``hash``).

    A pure function, remembered for the last MEMO_ENTRIES inputs (entries of at most
    MEMO_MAX_DATA bytes): every replica of a simulation extends the same chain by the
    same entries (twice: its log and its state machine), so most calls are repeats."""
    index, term, kind, data = entry.index, entry.term, entry.kind, entry.data
    key = (prev, index, term, kind, data)
    chain = _chains.get(key)
    if chain is None:
        h = hashlib.blake2b(prev, digest_size=8)
        h.update(index.to_bytes(8, "little"))
        h.update(term.to_bytes(8, "little"))
        h.update(bytes((int(kind),)))
        h.update(data)
        chain = h.digest()
        if len(data) <= MEMO_MAX_DATA:
            if len(_chains) >= MEMO_ENTRIES:
                _chains.clear()
            _chains[key] = chain
    return chain


@fast_frozen_init
@attrs.frozen
class KvCommand:
    """One client operation as it travels in the log."""

    client: int
    seq: int  # per client, from 1; a retry repeats the seq
    op: str  # one of OPS
    key: str
    value: str | None = None


new_command = frozen_factory(KvCommand)  # KvCommand(...), built without type.__call__


_packer = msgpack.Packer()  # msgpack.packb's defaults, without a new Packer per call


def encode_command(cmd: KvCommand) -> bytes:
    body: bytes = _packer.pack([cmd.client, cmd.seq, cmd.op, cmd.key, cmd.value])
    return KV_PREFIX + body


def decode_command(data: bytes) -> KvCommand | None:
    """The command in an entry's data, or None when it is not a key-value command (a
    KvCommand is a frozen value: the last MEMO_ENTRIES decodings are shared)."""
    known = _commands.get(data, _UNKNOWN)
    if known is not _UNKNOWN:
        return known  # type: ignore[return-value]  # (a KvCommand or None)
    cmd = _decode_command(data)
    if len(data) <= MEMO_MAX_DATA:
        if len(_commands) >= MEMO_ENTRIES:
            _commands.clear()
        _commands[data] = cmd
    return cmd


def _decode_command(data: bytes) -> KvCommand | None:
    if not data.startswith(KV_PREFIX):
        return None
    try:
        client, seq, op, key, value = msgpack.unpackb(data[len(KV_PREFIX) :])
    except (ValueError, TypeError, msgpack.ExtraData, msgpack.FormatError):
        return None
    if op not in OPS:
        return None
    return new_command(client=client, seq=seq, op=op, key=key, value=value)


class KvApp:
    """One replica's state machine. ``applied`` is the last index applied, ``chain`` the hash
    chain up to it. ``apply`` returns the operation's output (the value for a get, None for
    writes and for entries that are not key-value commands)."""

    def __init__(self) -> None:
        self.data: dict[str, str] = {}
        self.dedup: dict[int, tuple[int, str | None]] = {}  # client -> (last seq, output)
        self.applied = 0
        self.chain = GENESIS_CHAIN

    def apply(self, entry: Entry) -> str | None:
        self.applied = entry.index
        self.chain = chain_next(self.chain, entry)
        if entry.kind is not _NORMAL or not entry.data:
            return None
        cmd = decode_command(entry.data)
        if cmd is None:
            return None
        return self.execute(cmd)

    def execute(self, cmd: KvCommand) -> str | None:
        """Apply one command (exactly once per client seq) and return its output."""
        last = self.dedup.get(cmd.client)
        if last is not None and cmd.seq <= last[0]:
            return last[1] if cmd.seq == last[0] else None
        output: str | None = None
        if cmd.op == "put":
            self.data[cmd.key] = cmd.value or ""
        elif cmd.op == "append":
            self.data[cmd.key] = self.data.get(cmd.key, "") + (cmd.value or "")
        elif cmd.op == "delete":
            self.data.pop(cmd.key, None)
        else:
            output = self.data.get(cmd.key)
        self.dedup[cmd.client] = (cmd.seq, output)
        return output

    def get(self, key: str) -> str | None:
        return self.data.get(key)

    def encode(self) -> bytes:
        """The snapshot image: applied index, chain, keys and the dedup table (sorted, so
        the same state gives the same bytes)."""
        image: bytes = msgpack.packb(
            [
                self.applied,
                self.chain,
                sorted(self.data.items()),
                sorted([c, s, o] for c, (s, o) in self.dedup.items()),
            ]
        )
        return image

    @classmethod
    def decode(cls, image: bytes) -> KvApp:
        applied, chain, items, dedup = msgpack.unpackb(image)
        app = cls()
        app.applied = applied
        app.chain = bytes(chain)
        app.data = {k: v for k, v in items}
        app.dedup = {c: (s, o) for c, s, o in dedup}
        return app
