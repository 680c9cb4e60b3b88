"""Build the `Pipeline` the server runs: resolve, load and warm up the models every profile needs,
at start-up and for each voice added or changed while the server runs (`Engine.add`: the same
checks, the same warm-up)."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import replace

import torch

from ..config.registry import PRESETS, ModelUnavailableError, Registry
from ..config.settings import Settings, resolve_device
from ..config.voices import UpstreamParams, VoiceProfile
from ..models.rvc.checkpoint import named_embedder
from ..models.rvc.content import ContentEncoder, ContentModels, load_hubert
from ..models.rvc.embedders import CONTENTVEC, EmbedderError, embedder_for
from ..models.rvc.pitch import RmvpePitch, YinPitch
from ..models.rvc.rmvpe import Rmvpe, RmvpeError
from ..models.rvc.synthesizer import VOCODERS
from ..models.vocos import Vocoder, VocoderError
from ..models.whisperspeech.checkpoint import CheckpointError
from ..models.whisperspeech.languages import to_id
from ..models.whisperspeech.speaker import SpeakerError
from ..text.normalize import Normalizer
from .cache import PhraseCache
from .conversion import RvcConverter, VoiceLoadError
from .failures import synthesis_errors
from .pacing import Timeline, VoiceSpeed
from .pipeline import EngineUnavailableError, Pipeline
from .precision import resolve_precision
from .threads import ThreadPlan, use
from .upstream import UpstreamError, UpstreamSpeech
from .utterance import PcmAudio
from .whisperspeech import WhisperSpeechStage

_LOGGER = logging.getLogger(__name__)

# Long enough for a first measure of the voice's speed (about 3 s of speech), short enough for
# start-up; the requests refine the figure.
WARMUP_TEXT = "Hello, this is how fast this voice speaks on this machine."
# The warm-up samples with its own generator, seeded (the same draws at every start-up). A draw
# may end its speech at once (sampling the end of text first: about 1 in 300 draws of the tiny
# random test models); that is sampling, not a broken voice, so the next seed is tried, this many
# in all. Silence or non-finite samples in speech that was made is a broken voice at once.
WARMUP_DRAWS = 3
_LOAD_ERRORS = (
    ModelUnavailableError,
    CheckpointError,
    SpeakerError,
    VoiceLoadError,
    ValueError,
    UpstreamError,
)


class Engine:
    """The loaded models behind one `Pipeline`, and the one way to load more."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.device = resolve_device(settings.device)
        self.precision = resolve_precision(settings.dtype, self.device)
        self.registry = Registry(settings.data_dir, settings.offline)
        cache = PhraseCache[PcmAudio](settings.phrase_cache) if settings.phrase_cache else None
        self.pipeline = Pipeline(None, normalize=Normalizer(), cache=cache)
        self._lock = threading.Lock()  # one voice loads at a time

    @property
    def described(self) -> str:
        return f"{self.precision.describe()} on {self.device}"

    def start(
        self, voices: dict[str, VoiceProfile], plan: ThreadPlan | None = None
    ) -> dict[str, VoiceProfile]:
        """Start-up: fetch, load and warm up every profile; returns the usable ones.

        A profile whose models cannot be loaded stops start-up (`EngineUnavailableError` naming
        the profile and the reason), or with `skip_bad_voices` is left out."""
        start = time.perf_counter()
        skip = self.settings.skip_bad_voices
        try:
            self.registry.ensure(needed_refs(self.registry, voices))
        except ModelUnavailableError as err:
            if not skip:
                raise EngineUnavailableError(str(err)) from err
            _LOGGER.error("%s", err)  # the voices that need these files are skipped below
        _LOGGER.info("Loading the models of %d voice(s) on %s", len(voices), self.device)
        if self.precision.reason:
            _LOGGER.info("Precision (--dtype %s): %s", self.settings.dtype, self.precision.reason)
        usable: dict[str, VoiceProfile] = {}
        for name, profile in voices.items():
            try:
                self.load(profile)
            except EngineUnavailableError as err:
                if not skip or _shared(err):
                    raise
                _LOGGER.error("Skipping voice %s: %s", name, err)
                continue
            usable[name] = profile
        if not usable:
            raise EngineUnavailableError("no voice profile could be loaded")
        plan = plan or ThreadPlan.for_profiles(self.settings.threads, usable.values())
        self._warm_up(usable, plan)
        _LOGGER.info(
            "Models ready on %s (%s) in %.1f s",
            self.device,
            self.precision.describe(),
            time.perf_counter() - start,
        )
        return usable

    def load(self, profile: VoiceProfile) -> None:
        """Load what `profile` needs (shared models on first need), checked as at start-up;
        `EngineUnavailableError` names the profile's file and the reason."""
        with self._lock:
            try:
                if profile.upstream is not None:
                    if profile.upstream not in self.pipeline.upstream:
                        self.pipeline.upstream[profile.upstream] = _upstream(profile.upstream)
                else:
                    _bind(self._speech(), self.registry, profile)
                if profile.rvc is not None:
                    self._converter(profile.rvc.f0_method).voice(profile.rvc)
            except _LOAD_ERRORS as err:
                raise EngineUnavailableError(f"{profile.path}: {err}") from err

    def add(
        self,
        profile: VoiceProfile,
        plan: ThreadPlan,
        progress: Callable[[str], None] = lambda step: None,
    ) -> VoiceSpeed:
        """A voice added or changed while the server runs: fetch and load its models, speak the
        warm-up sentence (silent or non-finite audio refuses it) and measure its speed. Call
        off the event loop; requests go on meanwhile."""
        progress("fetching its models")
        try:
            self.registry.ensure(needed_refs(self.registry, {profile.name: profile}))
        except ModelUnavailableError as err:
            raise EngineUnavailableError(f"{profile.path}: {err}") from err
        progress("loading its models")
        self.load(profile)
        progress("speaking the warm-up sentence")
        previous = torch.get_num_threads()
        try:
            speed = self._check(profile, plan)
        finally:
            torch.set_num_threads(previous)
        self.pipeline.speeds.set(profile.name, replace(speed))
        return speed

    def _speech(self) -> WhisperSpeechStage:
        if self.pipeline.speech is None:
            started = time.perf_counter()
            try:
                vocoder = Vocoder(*self.registry.vocoder_files(), device=self.device)
            except (ModelUnavailableError, VocoderError, OSError) as err:
                raise EngineUnavailableError(f"vocoder: {err}") from err
            _LOGGER.info("Loaded the Vocos vocoder in %.1f s", time.perf_counter() - started)
            self.pipeline.speech = WhisperSpeechStage(
                vocoder, self.device, self.precision.models, int8=self.precision.decoder_int8
            )
        stage = self.pipeline.speech
        if not isinstance(stage, WhisperSpeechStage):
            raise TypeError("the pipeline's speech stage is not WhisperSpeech")
        return stage

    def _converter(self, f0_method: str) -> RvcConverter:
        """The shared content and pitch models (RMVPE once a voice asks for it)."""
        converter = self.pipeline.converter
        if converter is None:

            def load_content(embedder: str) -> ContentEncoder:
                model = load_hubert(
                    self.registry.embedder(embedder), self.device, self.precision.content
                )
                return ContentEncoder(model)

            converter = RvcConverter(
                ContentModels(load_content),
                {"yin": YinPitch()},
                self.device,
                self.precision.rvc,
                max_loaded=self.settings.max_loaded_voices,
                decoder_dtypes={name: self.precision.synthesizer(name) for name in VOCODERS},
            )
            self.pipeline.converter = converter
        if f0_method == "rmvpe" and "rmvpe" not in converter.pitch:
            started = time.perf_counter()
            try:
                rmvpe = Rmvpe(
                    self.registry.shared_model("rmvpe"), self.device, self.precision.pitch
                )
            except (ModelUnavailableError, RmvpeError) as err:
                raise _SharedModelError(f"RVC: {err}") from err
            converter.pitch["rmvpe"] = RmvpePitch(rmvpe)
            _LOGGER.info("Loaded RMVPE in %.1f s", time.perf_counter() - started)
        return converter

    def _check(self, profile: VoiceProfile, plan: ThreadPlan) -> VoiceSpeed:
        """Speak the warm-up sentence with `profile`; its speed. Silent or non-finite audio is
        an `EngineUnavailableError`; a draw that speaks nothing is drawn again with the next
        seed, `WARMUP_DRAWS` in all, then refused too."""
        converter = self.pipeline.converter
        for seed in range(WARMUP_DRAWS):
            before = converter.nonfinite_outputs if converter else 0
            generator = torch.Generator(self.device).manual_seed(seed)
            pcm, speed = measure_speed(self.pipeline, profile, plan, generator)
            after = converter.nonfinite_outputs if converter else 0
            if after > before or (pcm.data and not any(pcm.data)):
                raise EngineUnavailableError(
                    f"{profile.path}: the warm-up gave silent or non-finite audio with "
                    f"{self.described}; try --dtype float32"
                )
            if pcm.data:
                return speed
            _LOGGER.info("%s: warm-up draw %d spoke nothing; drawing again", profile.name, seed)
        raise EngineUnavailableError(
            f"{profile.path}: the warm-up spoke nothing in {WARMUP_DRAWS} draws with "
            f"{self.described}; its speech models end every sentence at once"
        )

    def _warm_up(self, voices: dict[str, VoiceProfile], plan: ThreadPlan) -> None:
        """Speak a sentence with each distinct model combination (first-request latency, proof
        that it runs, and its speed): a combination whose audio is silent or non-finite refuses
        to start. The decode side and the audio side are timed apart, each on the threads the
        server gives it, so the voice's production speed (`pacing`) is known before the first
        request."""
        combos: dict[object, list[VoiceProfile]] = {}
        for profile in voices.values():
            combos.setdefault((profile.whisperspeech, profile.upstream, profile.rvc), []).append(
                profile
            )
        previous = torch.get_num_threads()
        try:
            for number, profiles in enumerate(combos.values(), 1):
                started = time.perf_counter()
                speed = self._check(profiles[0], plan)
                for each in profiles:
                    self.pipeline.speeds.set(each.name, replace(speed))
                _LOGGER.info(
                    "Warmed up %s (%d/%d) in %.1f s; %s",
                    ",".join(p.name for p in profiles),
                    number,
                    len(combos),
                    time.perf_counter() - started,
                    speed.describe(),
                )
        finally:
            torch.set_num_threads(previous)


class _SharedModelError(EngineUnavailableError):
    """A model every RVC voice shares cannot be loaded: no voice can be skipped past it."""


def _shared(err: EngineUnavailableError) -> bool:
    return isinstance(err, _SharedModelError) or str(err).startswith("vocoder:")


def _bind(stage: WhisperSpeechStage, registry: Registry, profile: VoiceProfile) -> None:
    params = profile.whisperspeech
    preset = PRESETS[params.preset]
    if params.t2s is None and params.s2a is None and profile.language not in preset.languages:
        raise ValueError(
            f"language: {profile.language!r} is not spoken by preset {preset.name!r} "
            f"({', '.join(preset.languages)})"
        )
    to_id(profile.language)  # ValueError for a language the models have no id for
    t2s = registry.resolve(params.t2s or preset.t2s)
    s2a = registry.resolve(params.s2a or preset.s2a)
    stage.bind(params, t2s, s2a)


def measure_speed(
    pipeline: Pipeline,
    profile: VoiceProfile,
    plan: ThreadPlan,
    generator: torch.Generator | None = None,
) -> tuple[PcmAudio, VoiceSpeed]:
    """The warm-up sentence through the pipeline's own decode and audio sides (what the server
    runs), each timed on its threads, its sampling drawn from `generator` (on the models'
    device; None: torch's global generator); its PCM and the voice's speed. The phrase cache
    is neither asked nor filled: the models speak, even when the voice is reloaded with new
    files under the same settings.

    The audio side's pieces are timed one by one, so the speed also has the lag of the voice's
    bursts (an RVC voice's first window after its short first segment): without it the first
    answer after start-up was paced as if the audio came evenly, and a listener ran dry."""
    utterance = pipeline.utterance([WARMUP_TEXT], profile, generator=generator, use_cache=False)
    rate = pipeline.output_rate(profile)
    timeline = Timeline()
    with torch.inference_mode(), synthesis_errors():
        use(plan.decode)
        started = time.perf_counter()
        pieces = [piece for turn in pipeline.decode(utterance) for piece in turn]
        decoded = time.perf_counter()
        # the threads the scheduler gives the audio side while this voice's decode side works
        stage = pipeline.speech_for(profile)
        use(plan.audio_now(True, isinstance(stage, UpstreamSpeech) and stage.occupies_core))
        chunks = []
        for piece in pieces:
            for each in utterance.audio([piece]):
                if each.pcm.data:
                    chunks.append(each.pcm.data)
                    timeline.add(each.pcm.seconds, time.perf_counter())
        finished = time.perf_counter()
    pcm = PcmAudio(b"".join(chunks), rate)
    speed = VoiceSpeed.from_warmup(
        decoded - started, finished - decoded, pcm.seconds, len(WARMUP_TEXT), plan.overlap
    )
    speed.lag = timeline.lag(speed.rtf)
    return pcm, speed


def _upstream(params: UpstreamParams) -> UpstreamSpeech:
    """Layer mode's speech stage, once the upstream has answered `describe` as it should."""
    speech = UpstreamSpeech(params)
    speech.check()
    return speech


def needed_refs(registry: Registry, voices: dict[str, VoiceProfile]) -> list[str]:
    """Every model file the profiles will load that the registry may have to download (no
    WhisperSpeech models when every voice takes its speech from an upstream)."""
    refs = []
    if any(profile.upstream is None for profile in voices.values()):
        refs += registry.vocoder_refs()
    for profile in voices.values():
        params = profile.whisperspeech
        preset = PRESETS[params.preset]
        if profile.upstream is None:
            refs += [params.t2s or preset.t2s, params.s2a or preset.s2a]
        if profile.rvc is not None:
            try:
                embedder = embedder_for(
                    profile.rvc.embedder, named_embedder(profile.rvc.model), profile.rvc.model
                )
            except EmbedderError:
                embedder = CONTENTVEC  # loading the voice reports it
            refs += registry.embedder_refs(embedder)
            if profile.rvc.f0_method == "rmvpe":
                refs += registry.shared_refs("rmvpe")
    return refs


def build_pipeline(
    settings: Settings, voices: dict[str, VoiceProfile], plan: ThreadPlan | None = None
) -> tuple[Pipeline, dict[str, VoiceProfile]]:
    """Start an `Engine` for `voices` (see `Engine.start`); its pipeline and the usable voices."""
    engine = Engine(settings)
    usable = engine.start(voices, plan)
    return engine.pipeline, usable
