"""One codec for every detector's state: MessagePack of the state Struct itself (msgspec).

Every detector keeps its state in a :class:`msgspec.Struct` whose fields are the state,
so checkpointing needs no ``to_dict`` / ``from_dict`` of its own. MessagePack rather than
JSON because states hold NaN (a chart still warming up) and JSON has none. Every state is
plain data: the online models too (:mod:`detectors.online`), whose river pickles were
costlier than the rest of a state together.

>>> from detectors.rules import RuleState
>>> st = RuleState.new("32070620200000000001")
>>> decode_state(encode_state(st), RuleState) == st
True
"""

from __future__ import annotations

from typing import Any, TypeVar

import msgspec

S = TypeVar("S")


_encoder = msgspec.msgpack.Encoder()


def encode_state(state: Any) -> bytes:
    """MessagePack bytes of a detector state (any msgspec Struct, or one holding them)."""
    return _encoder.encode(state)


def decode_state(data: bytes | msgspec.Raw, type_: type[S]) -> S:
    """The state :func:`encode_state` wrote, as ``type_``.

    Raises
    ------
    msgspec.ValidationError
        ``data`` does not hold a ``type_`` (e.g. written by an incompatible version).
    """
    return msgspec.msgpack.decode(data, type=type_)
