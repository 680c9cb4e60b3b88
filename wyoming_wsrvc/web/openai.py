"""OpenAI's speech API, as apps that speak it (Open WebUI, …) call it:
`POST /v1/audio/speech` `{model, input, voice, response_format, speed}` → the audio, streamed as
it is made; `GET /v1/voices` and `GET /v1/models` to list what can be asked for.

`model` is accepted whatever it names (`tts-1`, `wsrvc`, …): the voice decides. OpenAI's own voice
names (`alloy`, …), which such apps send by default, are spoken by the default voice; any other
unknown name is an `unknown-voice` error. `speed` scales a WhisperSpeech voice's speaking rate
(within the profile's limits); a layer-mode voice speaks at its upstream's speed only.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from ..config.profile_document import tuned
from ..config.voices import VoiceConfigError, VoiceProfile
from ..engine.pipeline import EngineUnavailableError
from ..server.handler import ServerContext
from .answer import HttpAnswer
from .encoders import FORMATS, encoder
from .errors import HttpError, json_body

OPENAI_VOICES = frozenset(
    {"alloy", "ash", "ballad", "coral", "echo", "fable", "nova", "onyx", "sage", "shimmer", "verse"}
)
MODELS = ("wsrvc", "tts-1", "tts-1-hd", "gpt-4o-mini-tts")
MIN_SPEED, MAX_SPEED = 0.25, 4.0
RATE_LIMITS = (5.0, 20.0)  # `whisperspeech.speaking_rate`'s range (characters per second)


class OpenAiSpeech:
    def __init__(self, context: ServerContext, presets: frozenset[str]) -> None:
        self.ctx = context
        self.presets = presets

    def routes(self) -> list[web.RouteDef]:
        return [
            web.post("/v1/audio/speech", self.speech),
            web.get("/v1/voices", self.voices),
            web.get("/v1/audio/voices", self.voices),
            web.get("/v1/models", self.models),
        ]

    async def voices(self, request: web.Request) -> web.Response:
        current = self.ctx.catalog.current
        return web.json_response(
            {
                "object": "list",
                "data": [
                    {
                        "id": profile.name,
                        "object": "voice",
                        "name": profile.description,
                        "languages": list(profile.languages),
                        "default": profile.name == current.default,
                    }
                    for profile in current.voices.values()
                ],
                "voices": list(current.voices),
            }
        )

    async def models(self, request: web.Request) -> web.Response:
        return web.json_response(
            {
                "object": "list",
                "data": [
                    {"id": name, "object": "model", "owned_by": "wyoming-wsrvc"} for name in MODELS
                ],
            }
        )

    def _profile(self, voice: object) -> VoiceProfile:
        current = self.ctx.catalog.current
        if voice is None:
            return current.voices[current.default]
        if not isinstance(voice, str):
            raise HttpError("invalid-request", "voice: must be a string", param="voice")
        if voice in current.voices:
            return current.voices[voice]
        if voice.lower() in OPENAI_VOICES:
            return current.voices[current.default]
        raise HttpError(
            "unknown-voice",
            f"unknown voice {voice!r}; voices: {', '.join(current.voices)}",
            param="voice",
        )

    async def _at_speed(self, profile: VoiceProfile, speed: float) -> VoiceProfile:
        if speed == 1.0:
            return profile
        if profile.upstream is not None:
            raise HttpError(
                "invalid-request",
                f"speed: voice {profile.name!r} takes its speech from an upstream server, "
                "which sets its own speed",
                param="speed",
            )
        low, high = RATE_LIMITS
        rate = min(high, max(low, profile.whisperspeech.speaking_rate * speed))
        catalog = self.ctx.catalog
        try:
            draft = tuned(profile, {"whisperspeech": {"speaking_rate": rate}}, self.presets)
            await catalog.prepare(draft)
        except VoiceConfigError as err:
            raise HttpError("invalid-request", str(err), param="speed") from None
        except EngineUnavailableError as err:
            raise HttpError("voice-unavailable", str(err)) from None
        return draft

    async def speech(self, request: web.Request) -> web.StreamResponse:
        body = await json_body(request)
        text = body.get("input")
        if not isinstance(text, str) or not text.strip():
            raise HttpError("invalid-request", "input: must be a non-empty string", param="input")
        model = body.get("model")
        if model is not None and not isinstance(model, str):
            raise HttpError("invalid-request", "model: must be a string", param="model")
        name = body.get("response_format", "mp3")
        if name not in FORMATS:
            raise HttpError(
                "unsupported-format",
                f"response_format {name!r}: one of {', '.join(FORMATS)}",
                param="response_format",
            )
        if body.get("stream_format", "audio") != "audio":
            raise HttpError(
                "unsupported-format", "stream_format: only 'audio'", param="stream_format"
            )
        speed = _speed(body.get("speed", 1.0))
        profile = await self._at_speed(self._profile(body.get("voice")), speed)
        answer = HttpAnswer(self.ctx, request, encoder(name))
        return await answer.speak(text, profile, {"X-Voice": profile.name})


def _speed(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise HttpError("invalid-request", "speed: must be a number", param="speed")
    if not MIN_SPEED <= value <= MAX_SPEED:
        raise HttpError(
            "invalid-request", f"speed: from {MIN_SPEED} to {MAX_SPEED}, got {value}", param="speed"
        )
    return float(value)
