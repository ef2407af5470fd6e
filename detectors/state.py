"""One codec for every detector's state: MessagePack of the state Struct itself (msgspec).

Every detector keeps its state in a :class:`msgspec.Struct` whose fields are the state,
so checkpointing needs no ``to_dict`` / ``from_dict`` of its own. MessagePack rather than
JSON because states hold NaN (a chart still warming up) and JSON has none. The one thing
that is not plain data, a river model, is a :class:`PickledModel` field: the codec stores
its pickle.

>>> from detectors.rules import RuleState
>>> st = RuleState.new("32070620200000000001")
>>> decode_state(encode_state(st), RuleState) == st
True
"""

from __future__ import annotations

import pickle
from typing import Any, TypeVar

import msgspec

S = TypeVar("S")


class PickledModel:
    """A live river model inside a state Struct; checkpointed as its pickle."""

    __slots__ = ("model",)

    def __init__(self, model: Any) -> None:
        self.model = model

    def __eq__(self, other: object) -> bool:
        return isinstance(other, PickledModel) and _pickle(self) == _pickle(other)

    __hash__ = None  # type: ignore[assignment]


def _pickle(m: PickledModel) -> bytes:
    return pickle.dumps(m.model, protocol=pickle.HIGHEST_PROTOCOL)


def _enc_hook(obj: Any) -> Any:
    if isinstance(obj, PickledModel):
        return _pickle(obj)
    raise NotImplementedError(f"{type(obj).__name__}: not a detector state type")


def _dec_hook(type_: type, obj: Any) -> Any:
    if type_ is PickledModel:
        return PickledModel(pickle.loads(obj))
    raise NotImplementedError(f"{type_.__name__}: not a detector state type")


_encoder = msgspec.msgpack.Encoder(enc_hook=_enc_hook)


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
    return msgspec.msgpack.decode(data, type=type_, dec_hook=_dec_hook)
