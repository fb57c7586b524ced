"""The library's JSON transcoder, decoding with orjson.

Every read of an aggregate decodes its events' JSON, and the library decodes with the
standard `json` module and an object hook called for every object. orjson parses the
same bytes several times faster; the transcodings (datetime, UUID, …) are then revived
by the library's own hook, bottom-up as `json` would call it. Encoding is unchanged,
so what is written stays byte-for-byte what the library writes. Anything orjson
refuses (JSON the library's encoder can write but orjson will not read, such as an
integer beyond 64 bits) is decoded by the library as before."""

from typing import Any

import orjson
from eventsourcing.persistence import JSONTranscoder


class OrjsonDecodingTranscoder(JSONTranscoder):
    def decode(self, data: bytes) -> Any:
        try:
            parsed = orjson.loads(data)
        except orjson.JSONDecodeError:
            return super().decode(data)
        return self._revive(parsed)

    def _revive(self, value: Any) -> Any:
        """What `json`'s object hook would have made of `value`: inner objects first."""
        if isinstance(value, dict):
            for name, inner in value.items():
                if isinstance(inner, dict | list):
                    value[name] = self._revive(inner)
            return self._decode_obj(value)
        if isinstance(value, list):
            return [
                self._revive(inner) if isinstance(inner, dict | list) else inner for inner in value
            ]
        return value


def writes_library_json(transcoder: object) -> bool:
    """Whether stored states are exactly what the library's JSONTranscoder writes (so a
    reader may parse them itself): the library's own, or this one."""
    return type(transcoder) in (JSONTranscoder, OrjsonDecodingTranscoder)
