"""Property-based tests (hypothesis): sentence splitting, normalization and event parsing."""

from __future__ import annotations

import asyncio
import json
import re

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from wyoming.event import Event, async_write_event

from wyoming_wsrvc.server.protocol import Limits, ProtocolError, read_event
from wyoming_wsrvc.text.normalize import clean, normalize
from wyoming_wsrvc.text.sentences import SentenceStream, split_sentences

FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

sentence_text = st.text(
    alphabet=st.sampled_from(list("abcXYZ 0123.,!?;:…\n\"')-Mr.Dr.é你好。！？😀")), max_size=300
)


@FUZZ
@given(text=sentence_text, max_bytes=st.integers(min_value=8, max_value=120))
def test_splitting_loses_nothing_and_respects_the_limit(text: str, max_bytes: int) -> None:
    pieces = split_sentences(text, max_bytes)
    assert all(piece and len(piece.encode()) <= max_bytes for piece in pieces)
    assert re.sub(r"\s", "", "".join(pieces)) == re.sub(r"\s", "", text)


@FUZZ
@given(text=sentence_text, cuts=st.lists(st.integers(min_value=0, max_value=300), max_size=8))
def test_streaming_split_equals_batch_split(text: str, cuts: list[int]) -> None:
    stream, out, last = SentenceStream(10_000), [], 0
    for cut in sorted(set(cuts)):
        out += stream.add(text[last:cut])
        last = max(last, cut)
    out += stream.add(text[last:]) + stream.finish()
    assert out == split_sentences(text, 10_000)


@FUZZ
@given(
    text=st.text(max_size=200)
    | st.from_regex(r"[0-9.,:%°$€/ -]{1,40}( ?(km|kg|°C|%|€|Uhr))?", fullmatch=True),
    lang=st.sampled_from(["en", "pl", "de", "fr", "es", "it", "pt", "nl", "ja", "xx"]),
)
def test_normalization_is_stable_and_speakable(text: str, lang: str) -> None:
    """Normalized text is a fixed point (normalizing it again changes nothing: nothing is left
    half-expanded), has no control characters, and no digits where numbers are spoken."""
    out = normalize(clean(text), lang)
    assert normalize(clean(out), lang) == out, (text, out)
    assert not re.search(r"[\x00-\x08\x0b-\x1f\x7f]", out), (text, out)
    if lang in ("en", "pl", "de", "fr", "es", "it", "pt", "nl") and len(text) < 60:
        assert not re.search(r"[0-9]", out) or re.search(r"[0-9]{16,}", text), (text, out)


def _parse(raw: bytes) -> Event | None:
    async def run() -> Event | None:
        reader = asyncio.StreamReader(limit=64 * 1024)
        reader.feed_data(raw)
        reader.feed_eof()
        return await read_event(reader, Limits(data_bytes=4096, payload_bytes=4096))

    return asyncio.run(run())


@FUZZ
@given(raw=st.binary(max_size=400))
def test_garbage_never_escapes_as_another_error(raw: bytes) -> None:
    """Bytes are refused as a `ProtocolError` (any other exception fails the test), are a clean
    end of stream (nothing but whitespace, no line), or are an event whose header line really
    was a JSON object naming that type."""
    try:
        event = _parse(raw)
    except ProtocolError:
        return
    if event is None:
        assert b"\n" not in raw
        assert not raw.strip()
        return
    header = json.loads(raw.split(b"\n", 1)[0])
    assert header["type"] == event.type


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=10,
)


@FUZZ
@given(
    event_type=st.text(min_size=1, max_size=20),
    data=st.dictionaries(st.text(max_size=10), json_values, max_size=4),
    payload=st.binary(max_size=64),
)
def test_valid_events_round_trip(event_type: str, data: dict[str, object], payload: bytes) -> None:
    async def encode() -> bytes:
        class Sink:
            buffer = b""

            def writelines(self, parts: list[bytes]) -> None:
                self.buffer += b"".join(parts)

            def write(self, part: bytes) -> None:
                self.buffer += part

            async def drain(self) -> None:
                return None

        sink = Sink()
        await async_write_event(Event(event_type, data, payload or None), sink)  # type: ignore[arg-type]
        return sink.buffer

    raw = asyncio.run(encode())
    event = _parse(raw)
    assert event is not None
    assert event.type == event_type
    assert event.data == json.loads(json.dumps(data))
    assert (event.payload or b"") == payload


@FUZZ
@given(header=json_values)
def test_any_json_header_is_an_event_or_a_protocol_error(header: object) -> None:
    raw = json.dumps(header).encode() + b"\n"
    try:
        event = _parse(raw)
    except ProtocolError:
        return
    assert event is not None
    assert isinstance(header, dict)
    assert header.get("type") == event.type
