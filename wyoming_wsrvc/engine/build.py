"""Build the `Pipeline` the server runs: resolve, load and warm up the models every profile needs."""

from __future__ import annotations

import logging
import time
from dataclasses import replace

import torch

from ..config.registry import PRESETS, ModelUnavailableError, Registry
from ..config.settings import Settings, resolve_device
from ..config.voices import UpstreamParams, VoiceProfile
from ..models.rvc.checkpoint import named_embedder
from ..models.rvc.content import ContentEncoder, ContentModels, load_hubert
from ..models.rvc.embedders import CONTENTVEC, EmbedderError, embedder_for
from ..models.rvc.pitch import PitchExtractor, RmvpePitch, YinPitch
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
from .pacing import VoiceSpeed
from .pipeline import EngineUnavailableError, Pipeline
from .precision import Precision, resolve_precision
from .speech import SpeechStage
from .threads import ThreadPlan, use
from .upstream import UpstreamError, UpstreamSpeech
from .utterance import PcmAudio
from .whisperspeech import WhisperSpeechStage

_LOGGER = logging.getLogger(__name__)

# Long enough for a first measure of the voice's speed (about 3 s of speech), short enough for
# start-up; the requests refine the figure.
WARMUP_TEXT = "Hello, this is how fast this voice speaks on this machine."
_LOAD_ERRORS = (
    ModelUnavailableError,
    CheckpointError,
    SpeakerError,
    VoiceLoadError,
    ValueError,
    UpstreamError,
)


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


def _build_converter(
    settings: Settings,
    registry: Registry,
    voices: dict[str, VoiceProfile],
    device: torch.device,
    precision: Precision,
) -> RvcConverter | None:
    """The shared content and pitch models, if any profile converts its voice."""
    rvc = [p.rvc for p in voices.values() if p.rvc is not None]
    if not rvc:
        return None

    def load_content(embedder: str) -> ContentEncoder:
        model = load_hubert(registry.embedder(embedder), device, precision.content)
        return ContentEncoder(model)

    content = ContentModels(load_content)
    try:
        pitch: dict[str, PitchExtractor] = {"yin": YinPitch()}
        if any(params.f0_method == "rmvpe" for params in rvc):
            started = time.perf_counter()
            rmvpe = Rmvpe(registry.shared_model("rmvpe"), device, precision.pitch)
            pitch["rmvpe"] = RmvpePitch(rmvpe)
            _LOGGER.info("Loaded RMVPE in %.1f s", time.perf_counter() - started)
    except (ModelUnavailableError, RmvpeError) as err:
        raise EngineUnavailableError(f"RVC: {err}") from err
    return RvcConverter(
        content,
        pitch,
        device,
        precision.rvc,
        max_loaded=settings.max_loaded_voices,
        decoder_dtypes={name: precision.synthesizer(name) for name in VOCODERS},
    )


def _warm_up(
    pipeline: Pipeline,
    converter: RvcConverter | None,
    voices: dict[str, VoiceProfile],
    precision: str,
    plan: ThreadPlan,
) -> None:
    """Speak a sentence with each distinct model combination (first-request latency, proof that
    it runs, and its speed): a combination whose audio is silent or non-finite refuses to
    start. The decode side and the audio side are timed apart, each on the threads the server
    gives it, so the voice's production speed (`pacing`) is known before the first request."""
    combos: dict[object, list[VoiceProfile]] = {}
    for profile in voices.values():
        combos.setdefault((profile.whisperspeech, profile.upstream, profile.rvc), []).append(
            profile
        )
    previous = torch.get_num_threads()
    try:
        for number, profiles in enumerate(combos.values(), 1):
            profile = profiles[0]
            started = time.perf_counter()
            before = converter.nonfinite_outputs if converter else 0
            pcm, speed = measure_speed(pipeline, profile, plan)
            after = converter.nonfinite_outputs if converter else 0
            if after > before or not any(pcm.data):
                raise EngineUnavailableError(
                    f"{profile.path}: the warm-up gave silent or non-finite audio with "
                    f"{precision}; try --dtype float32"
                )
            for each in profiles:
                pipeline.speeds.set(each.name, replace(speed))
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


def measure_speed(
    pipeline: Pipeline, profile: VoiceProfile, plan: ThreadPlan
) -> tuple[PcmAudio, VoiceSpeed]:
    """The warm-up sentence through the pipeline's own decode and audio sides (what the server
    runs), each timed on its threads; its PCM and the voice's speed."""
    utterance = pipeline.utterance([WARMUP_TEXT], profile)
    with torch.inference_mode(), synthesis_errors():
        use(plan.decode)
        started = time.perf_counter()
        pieces = [piece for turn in pipeline.decode(utterance) for piece in turn]
        decoded = time.perf_counter()
        use(plan.audio)
        data = b"".join(each.pcm.data for each in utterance.audio(pieces))
        finished = time.perf_counter()
    pcm = PcmAudio(data, pipeline.output_rate(profile))
    speed = VoiceSpeed.from_warmup(
        decoded - started, finished - decoded, pcm.seconds, len(WARMUP_TEXT), plan.overlap
    )
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
    """Load what every profile needs and warm it up; returns the pipeline and the usable voices.

    A profile whose models cannot be loaded stops start-up (`EngineUnavailableError` naming the
    profile and the reason), or with `skip_bad_voices` is left out.
    """
    start = time.perf_counter()
    device = resolve_device(settings.device)
    precision = resolve_precision(settings.dtype, device)
    registry = Registry(settings.data_dir, settings.offline)
    try:
        registry.ensure(needed_refs(registry, voices))
    except ModelUnavailableError as err:
        if not settings.skip_bad_voices:
            raise EngineUnavailableError(str(err)) from err
        _LOGGER.error("%s", err)  # the voices that need these files are skipped below
    _LOGGER.info("Loading the models of %d voice(s) on %s", len(voices), device)
    if precision.reason:
        _LOGGER.info("Precision (--dtype %s): %s", settings.dtype, precision.reason)
    stage = None
    if any(profile.upstream is None for profile in voices.values()):
        try:
            vocoder = Vocoder(*registry.vocoder_files(), device=device)
        except (ModelUnavailableError, VocoderError, OSError) as err:
            raise EngineUnavailableError(f"vocoder: {err}") from err
        _LOGGER.info("Loaded the Vocos vocoder in %.1f s", time.perf_counter() - start)
        stage = WhisperSpeechStage(vocoder, device, precision.models, int8=precision.decoder_int8)
    converter = _build_converter(settings, registry, voices, device, precision)
    usable: dict[str, VoiceProfile] = {}
    upstream: dict[str, SpeechStage] = {}
    for name, profile in voices.items():
        try:
            if profile.upstream is not None:
                upstream[name] = _upstream(profile.upstream)
            elif stage is not None:
                _bind(stage, registry, profile)
            if profile.rvc is not None and converter is not None:
                converter.voice(profile.rvc)  # validates the voice file and its index now
        except _LOAD_ERRORS as err:
            message = f"{profile.path}: {err}"
            if not settings.skip_bad_voices:
                raise EngineUnavailableError(message) from err
            _LOGGER.error("Skipping voice %s: %s", name, message)
            continue
        usable[name] = profile
    if not usable:
        raise EngineUnavailableError("no voice profile could be loaded")
    cache = PhraseCache[PcmAudio](settings.phrase_cache) if settings.phrase_cache else None
    pipeline = Pipeline(
        stage, converter=converter, normalize=Normalizer(), cache=cache, upstream=upstream
    )
    plan = plan or ThreadPlan.for_profiles(settings.threads, usable.values())
    _warm_up(pipeline, converter, usable, f"{precision.describe()} on {device}", plan)
    if cache is not None:
        cache.clear()
    _LOGGER.info(
        "Models ready on %s (%s) in %.1f s",
        device,
        precision.describe(),
        time.perf_counter() - start,
    )
    return pipeline, usable
