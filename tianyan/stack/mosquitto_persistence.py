"""Shared subscriptions put back into Mosquitto's persistence file before the broker starts.

Mosquitto before 2.0.19 (Debian's is 2.0.11) saves a persistent session's ordinary
subscriptions across a restart but not its shared ones (``$share/{group}/…``): its
``persist__subs_save`` walks only a topic's ordinary subscribers. After a restart the
gateways' sessions, and the messages queued for them, come back, but until a gateway has
reconnected and subscribed again its shared subscription does not exist, and every
message a terminal publishes meanwhile is acknowledged to the terminal and delivered to
nobody. Terminals reconnect within a second or two, as fast as the gateways, so this lost
the messages a terminal re-sent after a restart in 4 runs of 7.

The file's loader, though, restores a subscription chunk naming a ``$share/…`` filter as the
shared subscription it is. So before the broker starts, :func:`restore_shared_subscriptions`
appends one subscription chunk for each remembered shared subscription of each session the
file holds, and the broker starts with the gateways' subscriptions in place: what terminals
publish before a gateway is back is queued in its session, as for an ordinary one.

The format (version 6, every Mosquitto 2.0): a 15-byte magic, a 4-byte CRC (unused, 0), the
version (big-endian uint32), then chunks of a big-endian ``(type, length)`` header and
``length`` bytes. A client chunk (type 6) starts with ``session_expiry_time`` (int64),
``session_expiry_interval`` (uint32), ``last_mid``, ``id_len``, ``listener_port``,
``username_len`` (uint16 each), 4 bytes of padding, then the client id and username. A
subscription chunk (type 5) is ``identifier`` (uint32), ``id_len``, ``topic_len`` (uint16),
``qos``, ``options`` (uint8), 2 bytes of padding, then the client id and the filter
(Mosquitto's ``src/persist.h``).
"""

from __future__ import annotations

import os
import struct
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Final

from .errors import StackError

MAGIC: Final = b"\x00\xb5\x00mosquitto db"
VERSION: Final = 6
CHUNK_SUB: Final = 5
CHUNK_CLIENT: Final = 6
_HEADER = struct.Struct(">II")
_CLIENT = struct.Struct(">qIHHHH4x")
_SUB = struct.Struct(">IHHBB2x")
_PREAMBLE_BYTES: Final = len(MAGIC) + 4 + 4


def _chunks(data: bytes, path: Path) -> Iterator[tuple[int, bytes]]:
    if data[: len(MAGIC)] != MAGIC or len(data) < _PREAMBLE_BYTES:
        raise StackError(f"{path} is not a Mosquitto persistence file (no magic number)")
    (version,) = struct.unpack_from(">I", data, len(MAGIC) + 4)
    if version != VERSION:
        raise StackError(
            f"{path}: Mosquitto persistence format {version}, not {VERSION} (Mosquitto 2.0): "
            "the gateways' shared subscriptions cannot be restored into it"
        )
    at = _PREAMBLE_BYTES
    while at < len(data):
        if at + _HEADER.size > len(data):
            raise StackError(f"{path}: truncated chunk header at byte {at}")
        kind, length = _HEADER.unpack_from(data, at)
        at += _HEADER.size
        if at + length > len(data):
            raise StackError(f"{path}: chunk at byte {at} runs past the end of the file")
        yield kind, data[at : at + length]
        at += length


def _client_id(chunk: bytes) -> str:
    _, _, _, id_len, _, _ = _CLIENT.unpack_from(chunk)
    return chunk[_CLIENT.size : _CLIENT.size + id_len].decode()


def _subscription(chunk: bytes) -> tuple[str, str]:
    _, id_len, topic_len, _, _ = _SUB.unpack_from(chunk)
    client_id = chunk[_SUB.size : _SUB.size + id_len]
    topic = chunk[_SUB.size + id_len : _SUB.size + id_len + topic_len]
    return client_id.decode(), topic.decode()


def subscription_chunk(client_id: str, topic_filter: str, qos: int) -> bytes:
    """One subscription chunk, as Mosquitto 2.0 writes it."""
    cid, topic = client_id.encode(), topic_filter.encode()
    body = _SUB.pack(0, len(cid), len(topic), qos, 0) + cid + topic
    return _HEADER.pack(CHUNK_SUB, len(body)) + body


def restore_shared_subscriptions(
    path: Path, sessions: Mapping[str, Sequence[str]], qos: int = 1
) -> list[tuple[str, str]]:
    """Append to the persistence file at ``path`` a subscription to each of ``sessions``'
    filters (client id → filters) for every session the file holds and that lacks it.

    Sessions the file does not hold (expired, never connected) are left out: a subscription
    would create a session that never expires. Returns the ``(client id, filter)`` pairs
    added. The file is replaced whole (written beside it, then renamed), keeping its mode.
    """
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return []
    held: set[str] = set()
    subscribed: set[tuple[str, str]] = set()
    for kind, chunk in _chunks(data, path):
        if kind == CHUNK_CLIENT:
            held.add(_client_id(chunk))
        elif kind == CHUNK_SUB:
            subscribed.add(_subscription(chunk))
    added = [
        (client_id, topic_filter)
        for client_id, filters in sessions.items()
        if client_id in held
        for topic_filter in dict.fromkeys(filters)
        if (client_id, topic_filter) not in subscribed
    ]
    if not added:
        return []
    extra = b"".join(subscription_chunk(c, f, qos) for c, f in added)
    tmp = path.with_name(path.name + ".tianyan")
    tmp.write_bytes(data + extra)
    st = path.stat()
    os.chmod(tmp, st.st_mode)
    if os.geteuid() == 0:
        os.chown(tmp, st.st_uid, st.st_gid)
    os.replace(tmp, path)
    return added
