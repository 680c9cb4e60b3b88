"""Bounded reading of Wyoming events.

`wyoming.event.async_read_event` trusts the client: it reads whatever `data_length` and
`payload_length` claim and turns every malformed header into a silent disconnect. A TTS server
receives only small events, so here both lengths are bounded and a bad header is an error the
handler can report before it closes the connection.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from typing import Any

from wyoming.event import Event

MAX_HEADER_BYTES = 64 * 1024
MAX_DATA_BYTES = 1024 * 1024
MAX_PAYLOAD_BYTES = 1024 * 1024


class ProtocolError(ValueError):
    """The client sent something that is not a valid, reasonably sized Wyoming event."""


@dataclass(frozen=True)
class Limits:
    data_bytes: int = MAX_DATA_BYTES
    payload_bytes: int = MAX_PAYLOAD_BYTES


def _length(header: dict[str, Any], key: str, limit: int) -> int:
    value = header.get(key)
    if value is None:
        return 0
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ProtocolError(f"{key} must be a non-negative integer")
    if value > limit:
        raise ProtocolError(f"{key} {value} is over the limit of {limit} bytes")
    return value


async def read_event(reader: asyncio.StreamReader, limits: Limits = Limits()) -> Event | None:
    """Read one event; None at a clean end of stream. Raises `ProtocolError`."""
    try:
        line = await reader.readuntil(b"\n")
    except asyncio.IncompleteReadError as err:
        if not err.partial.strip():
            return None
        raise ProtocolError("connection closed in the middle of an event header") from err
    except asyncio.LimitOverrunError as err:
        raise ProtocolError(f"event header is over {MAX_HEADER_BYTES} bytes") from err
    except ValueError as err:  # the stream's own line limit
        raise ProtocolError(f"event header is over {MAX_HEADER_BYTES} bytes") from err
    try:
        header = json.loads(line)
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ProtocolError(f"event header is not valid JSON: {err}") from err
    if not isinstance(header, dict):
        raise ProtocolError("event header must be a JSON object")
    event_type = header.get("type")
    if not isinstance(event_type, str) or not event_type:
        raise ProtocolError("event header has no type")
    data = header.get("data") or {}
    if not isinstance(data, dict):
        raise ProtocolError("event data must be a JSON object")
    data_length = _length(header, "data_length", limits.data_bytes)
    payload_length = _length(header, "payload_length", limits.payload_bytes)
    try:
        if data_length:
            extra = json.loads(await reader.readexactly(data_length))
            if not isinstance(extra, dict):
                raise ProtocolError("event data must be a JSON object")
            data = {**data, **extra}
        payload = await reader.readexactly(payload_length) if payload_length else None
    except asyncio.IncompleteReadError as err:
        raise ProtocolError("connection closed in the middle of an event") from err
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ProtocolError(f"event data is not valid JSON: {err}") from err
    return Event(type=event_type, data=data, payload=payload)


def event_field(event: Event, key: str, kind: type, required: bool = False) -> Any:
    """One field of an event's data, type-checked (clients may send anything); a missing
    required field or a wrong type is a `ClientError` (`invalid-event`)."""
    from ..errors import ClientError

    data = event.data or {}
    value = data.get(key)
    if value is None:
        if required:
            raise ClientError("invalid-event", f"{event.type} needs a {key!r} field")
        return None
    if not isinstance(value, kind):
        raise ClientError("invalid-event", f"{event.type}: {key!r} must be a {kind.__name__}")
    return value


def text_format(event: Event) -> str:
    """`text_format` of a synthesize event ("text" unless it says otherwise)."""
    value = (event.data or {}).get("text_format")
    return value if isinstance(value, str) else "text"
