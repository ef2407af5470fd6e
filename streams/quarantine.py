"""The record a refused message becomes on the quarantine topic — pure, no I/O.

A refused message is published again with its key, its bytes and a ``reason`` header naming
what is wrong, so a terminal vendor can be told. The broker takes raw messages of about
1 MiB; the same bytes with a header added no longer fit the producer's 1 MiB
``message.max.bytes`` (the publish raised, and the worker stopped on it at every restart)
or the broker's own limit (the record was refused after it had been logged as
quarantined). So a value over :data:`MAX_VALUE_BYTES` is cut, and the headers say so: the
original length and the SHA-256 of the original bytes, to match it with the terminal's log.
"""

from __future__ import annotations

import hashlib
from typing import Final, NamedTuple

from .ingest import RawRecord

#: Largest value published to the quarantine topic, bytes: half the producer's and the
#: broker's 1 MiB message limit, so key, headers and record overhead always fit beside it.
#: The contract refuses anything over 64 KiB, so only a message refused for its size is cut,
#: and 512 KiB of it is plenty to see what it is.
MAX_VALUE_BYTES: Final = 512 * 1024
#: Longest key published, bytes (a terminal's key is its 20-digit registration code).
MAX_KEY_BYTES: Final = 1024
#: Longest ``reason`` header, bytes (a reason quotes at most a field's value).
MAX_REASON_BYTES: Final = 1000


class QuarantineRecord(NamedTuple):
    """What :meth:`streams.producer.RawPublisher.publish` sends to the quarantine topic.

    Attributes
    ----------
    key
        The record's key (cut to :data:`MAX_KEY_BYTES`).
    value
        The original bytes, cut to :data:`MAX_VALUE_BYTES`.
    headers
        ``reason``: what is wrong, UTF-8, at most :data:`MAX_REASON_BYTES`. When the value
        was cut, also ``original-length`` (bytes, decimal) and ``sha256`` (hex digest of the
        whole original value); when the key was cut, ``original-key-length``.
    """

    key: bytes
    value: bytes
    headers: dict[str, str | bytes | None]


def quarantine_record(record: RawRecord, reason: str) -> QuarantineRecord:
    """The quarantine record for ``record``, refused for ``reason``.

    Its size is bounded whatever the record's: key, value and headers together stay under
    ``MAX_VALUE_BYTES + MAX_KEY_BYTES + MAX_REASON_BYTES + 200`` bytes.

    Examples
    --------
    >>> r = quarantine_record(RawRecord(b"k", b"x" * 600_000, 0, 7), "too large")
    >>> len(r.value), r.headers["original-length"], r.headers["reason"]
    (524288, b'600000', b'too large')
    """
    # A reason may quote a field's value: never fail to encode it, and cut it whole
    # characters at a time.
    text = reason.encode("utf-8", "backslashreplace")[:MAX_REASON_BYTES]
    headers: dict[str, str | bytes | None] = {"reason": text.decode("utf-8", "ignore").encode()}
    key = record.key or b""
    if len(key) > MAX_KEY_BYTES:
        headers["original-key-length"] = str(len(key)).encode()
        key = key[:MAX_KEY_BYTES]
    value = record.value
    if len(value) > MAX_VALUE_BYTES:
        headers["original-length"] = str(len(value)).encode()
        headers["sha256"] = hashlib.sha256(value).hexdigest().encode()
        value = value[:MAX_VALUE_BYTES]
    return QuarantineRecord(key, value, headers)
