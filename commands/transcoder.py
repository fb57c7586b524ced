"""The library's JSON transcoder, decoding and encoding with orjson.

Every read of an aggregate decodes its events' JSON, and the library decodes with the
standard `json` module and an object hook called for every object. orjson parses the
same bytes several times faster; the transcodings (datetime, UUID, …) are then revived
by the library's own hook, bottom-up as `json` would call it. A document orjson
did not read exactly as written is decoded by the library as before: one it refuses,
and one it reads differently (an integer beyond 64 bits becomes a float there), which
shows as orjson writing it back differently. The library's encoder writes compact,
unescaped UTF-8 as orjson does, so for our events the check is one cheap comparison.

Encoding writes the library's bytes exactly: a value of a registered type becomes the
library's typed object ({"_type_": name, "_data_": data}, in that order) before orjson
writes the whole. Only what both write alike goes that way: dicts with string keys,
lists, tuples, strings, integers within 64 bits, booleans and None, of exactly those
types. Anything else (a float, whose digits the two spell differently; a subclass; an
integer beyond 64 bits; a lone surrogate) is written by the library's encoder, as before.
tests/test_library_contract.py compares the two on awkward documents.
The library's hook and its typed-value layout are internals: commands/library_internals.py."""

from typing import Any

import orjson
from eventsourcing.persistence import JSONTranscoder

from commands.library_internals import (
    DATA_KEY,
    TYPE_KEY,
    TYPE_KEY_JSON,
    transcoding_of,
    typed_value_decoder,
)

# What `_plain` returns for a value orjson would not write as the library does.
NOT_PLAIN: Any = object()
# The exact types both write alike, left as they are.
PLAIN_SCALARS = frozenset({str, int, bool, type(None)})


class OrjsonTranscoder(JSONTranscoder):
    def __init__(self) -> None:
        super().__init__()
        self._decode_typed = typed_value_decoder(self)  # the library's object hook

    def encode(self, obj: Any) -> bytes:
        plain = self._plain(obj)
        if plain is not NOT_PLAIN:
            try:
                return orjson.dumps(plain)
            except orjson.JSONEncodeError:  # an integer beyond 64 bits, a lone surrogate
                pass
        return super().encode(obj)

    def _plain(self, value: Any) -> Any:
        """`value` with each registered type's value replaced by the library's typed
        object for it; NOT_PLAIN where orjson would write something else than `json`."""
        kind = type(value)
        if kind in PLAIN_SCALARS:
            return value
        if kind is dict:
            plain = {}
            for name, inner in value.items():
                if type(name) is not str:
                    return NOT_PLAIN
                if type(inner) not in PLAIN_SCALARS:
                    inner = self._plain(inner)
                    if inner is NOT_PLAIN:
                        return NOT_PLAIN
                plain[name] = inner
            return plain
        if kind is list or kind is tuple:
            items = [self._plain(inner) for inner in value]
            return NOT_PLAIN if any(item is NOT_PLAIN for item in items) else items
        transcoding = transcoding_of(self, kind)
        if transcoding is None:
            return NOT_PLAIN  # the library's encoder says why it cannot
        data = self._plain(transcoding.encode(value))
        return NOT_PLAIN if data is NOT_PLAIN else {TYPE_KEY: transcoding.name, DATA_KEY: data}

    def decode(self, data: bytes) -> Any:
        try:
            parsed = orjson.loads(data)
        except orjson.JSONDecodeError:
            return super().decode(data)
        if orjson.dumps(parsed) != data:  # not read back exactly as written: see above
            return super().decode(data)
        # Each typed value is an object with a "_type_" key; counting those keys in the
        # bytes (a string holding the text has its quotes escaped) says how many there
        # are. Nearly every event has one or two, at the top (its timestamp, an id):
        # reviving those in place is all the object hook would have done.
        typed = data.count(TYPE_KEY_JSON)
        if typed and type(parsed) is dict:
            typed -= self._revive_top(parsed)
        if typed:
            return self._revive(orjson.loads(data))  # nested ones: the whole document
        return parsed

    def _revive_top(self, state: dict[str, Any]) -> int:
        """Revive the typed values directly in `state` whose data is a string (so
        nothing inside them is typed); how many there were."""
        revived = 0
        for name, value in state.items():
            if (
                type(value) is dict
                and len(value) == 2
                and TYPE_KEY in value
                and type(value.get(DATA_KEY)) is str
            ):
                state[name] = self._decode_typed(value)
                revived += 1
        return revived

    def _revive(self, value: Any) -> Any:
        """What `json`'s object hook would have made of `value`: inner objects first."""
        if isinstance(value, dict):
            for name, inner in value.items():
                if isinstance(inner, dict | list):
                    value[name] = self._revive(inner)
            return self._decode_typed(value)
        if isinstance(value, list):
            return [
                self._revive(inner) if isinstance(inner, dict | list) else inner for inner in value
            ]
        return value
