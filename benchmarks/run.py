"""wyoming-wsrvc benchmark at real model sizes (random weights in the real formats).

    .venv/bin/python benchmarks/run.py [--upstream-python PY] [--models DIR] [--out DIR]

Writes `results.json`, `results.md` and `stages.png` into `--out/<isa>` (default
benchmarks/results/<isa>: `avx2`, `avx512`, `avx512_bf16`, the instruction set torch runs, so
results of each kind of CPU stay side by side; `ATEN_CPU_CAPABILITY=avx2` with
`ONEDNN_MAX_CPU_ISA=AVX2` makes an AVX2 run on an AVX-512 machine). Progress goes to stderr.
Measures, on the CPU (and on CUDA when present): per-stage real-time factors (T2S, S2A, vocoder,
content features, pitch, RVC synthesizer), end-to-end real-time factor, time to first audio
through the Wyoming socket for a three-sentence request (one-shot and streaming) played by a
real-time listener (the hold before its first audio, the underrun it heard), each RVC
synthesizer's GFLOP per second of audio and the GFLOP/s it reached, peak memory;
for the `fast` preset architecture (files) and the `quality` preset architecture (built in
memory: the medium S2A is 1.2 GB even in fp16). With --upstream-python (a Python that has
whisperspeech 0.8.9), upstream generates the same number of tokens from the same checkpoints and
the ratio is reported.

RTF = seconds of compute / seconds of audio (lower is better; "x real time" = 1 / RTF).
Random weights never emit EOS, so each sentence is given its expected length (what a trained model
produces at 13 characters per second) instead of the server's safety budget.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import platform
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
import yaml

from wyoming_wsrvc.config.settings import Settings
from wyoming_wsrvc.config.voices import load_voices
from wyoming_wsrvc.devtools.loopback import Heard, busy_core, holds, serving, speak
from wyoming_wsrvc.devtools.peers import PIPER_VOICE, Peers
from wyoming_wsrvc.devtools.peers import piper as peers_piper
from wyoming_wsrvc.devtools.random_models import random_models
from wyoming_wsrvc.engine.build import build_pipeline, measure_speed
from wyoming_wsrvc.engine.precision import CpuKind
from wyoming_wsrvc.engine.threads import ThreadPlan
from wyoming_wsrvc.engine.whisperspeech import NATURAL_LENGTH, WhisperSpeechStage
from wyoming_wsrvc.models.int8 import int8_supported
from wyoming_wsrvc.models.rvc.checkpoint import load_synthesizer, read_voice
from wyoming_wsrvc.models.rvc.content import ContentEncoder, load_hubert
from wyoming_wsrvc.models.rvc.pitch import YinPitch, coarse
from wyoming_wsrvc.models.rvc.rmvpe import Rmvpe
from wyoming_wsrvc.models.rvc.synthesizer import Synthesizer
from wyoming_wsrvc.models.whisperspeech.checkpoint import load_s2a, load_t2s
from wyoming_wsrvc.models.whisperspeech.decoding import generate_acoustic, generate_semantic
from wyoming_wsrvc.models.whisperspeech.s2a import S2A, S2AConfig
from wyoming_wsrvc.models.whisperspeech.speaker import default_speaker
from wyoming_wsrvc.models.whisperspeech.t2s import T2S, T2SConfig
from wyoming_wsrvc.server.handler import ServerContext

_LOGGER = logging.getLogger("benchmark")

TEXT = "This is a sentence of about fifty characters, or so."
REQUEST = "Turn on the kitchen lights in ten minutes. The weather is sunny today. Have a nice day."
T2S_TOKENS, S2A_FRAMES = 150, 300


def timed(fn: Any, repeat: int = 2) -> float:
    fn()  # warm-up (allocator, kernels)
    return min(_once(fn) for _ in range(repeat))


def _once(fn: Any) -> float:
    start = time.perf_counter()
    fn()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return time.perf_counter() - start


def t2s_rtf(model: T2S, tokens: int) -> float:
    forced = torch.randint(0, 512, (tokens,)).tolist()
    seconds = timed(lambda: generate_semantic(model, [TEXT], "en", 13.0, forced=forced), repeat=1)
    return seconds / (tokens / 25)


def s2a_rtf(model: S2A, frames: int, device: torch.device) -> float:
    stoks = torch.randint(0, 512, (frames // 3,)).tolist()
    speaker = default_speaker()[None].to(device)
    seconds = timed(lambda: generate_acoustic(model, [stoks], speaker, frames=frames), repeat=1)
    return seconds / (frames / 75)


def stage_rtfs(models: Path, device: torch.device, dtype: torch.dtype) -> dict[str, float]:
    out: dict[str, float] = {}
    for size in ("tiny", "base"):
        _LOGGER.info("stage t2s/s2a %s", size)
        out[f"t2s_{size}"] = t2s_rtf(
            load_t2s(models / "models" / f"t2s-{size}.model", device, dtype), T2S_TOKENS
        )
        out[f"s2a_{size}"] = s2a_rtf(
            load_s2a(models / "models" / f"s2a-{size}.model", device, dtype), S2A_FRAMES, device
        )
    if device.type == "cpu" and int8_supported():
        # what `--dtype auto` runs: int8 decoder weights, on the thread plan's decode threads
        previous = torch.get_num_threads()
        torch.set_num_threads(ThreadPlan.for_threads().decode)
        try:
            for size in ("tiny", "base"):
                t2s = load_t2s(models / "models" / f"t2s-{size}.model", device, dtype, int8=True)
                out[f"t2s_{size}/int8"] = t2s_rtf(t2s, T2S_TOKENS)
                s2a = load_s2a(models / "models" / f"s2a-{size}.model", device, dtype, int8=True)
                out[f"s2a_{size}/int8"] = s2a_rtf(s2a, S2A_FRAMES, device)
        finally:
            torch.set_num_threads(previous)
    # the audio side on the audio worker's threads while it shares the cores with decoding (one
    # on two cores): what an RVC voice costs per second in the server
    previous = torch.get_num_threads()
    torch.set_num_threads(ThreadPlan.for_threads().audio)
    try:
        out.update(_audio_stage_rtfs(models, device, dtype))
    finally:
        torch.set_num_threads(previous)
    return out


def _audio_stage_rtfs(models: Path, device: torch.device, dtype: torch.dtype) -> dict[str, float]:
    out: dict[str, float] = {}
    from wyoming_wsrvc.models.vocos import Vocoder

    _LOGGER.info("stage vocoder, content, pitch")
    vocoder = Vocoder(
        models / "vocos-encodec-24khz" / "config.yaml",
        models / "vocos-encodec-24khz" / "pytorch_model.bin",
        device,
    )
    codes = torch.randint(0, 1024, (4, 750))
    out["vocoder"] = timed(lambda: vocoder.decode(codes)) / 10.0
    audio = torch.from_numpy(np.random.default_rng(0).normal(0, 0.1, 16000 * 5).astype(np.float32))
    content = ContentEncoder(load_hubert(models / "hubert_base", device, dtype))
    out["content_v2"] = timed(lambda: content.features(audio, "v2")) / 5
    if bf16_used(device):
        half = ContentEncoder(load_hubert(models / "hubert_base", device, torch.bfloat16))
        out["content_v2/bfloat16"] = timed(lambda: half.features(audio, "v2")) / 5
    rmvpe = Rmvpe(models / "rmvpe.pt", device, dtype)
    out["pitch_rmvpe"] = timed(lambda: rmvpe.f0(audio)) / 5
    out["pitch_yin"] = timed(lambda: YinPitch().f0(audio)) / 5
    for name in RVC_VOICES:
        voice = read_voice(models / "models" / f"{name}.pth")
        # bfloat16 only where `--dtype auto` would run this synthesizer in it
        dtypes = [dtype] + ([torch.bfloat16] if bf16_used(device, voice.config.vocoder) else [])
        for synth_dtype in dtypes:
            key = f"rvc_synth_{name}" + ("" if synth_dtype == dtype else "/bfloat16")
            _LOGGER.info("stage %s", key)
            out[key] = rvc_synth_rtf(load_synthesizer(voice, device, synth_dtype), device)
    return out


def bf16_used(device: torch.device, vocoder: str = "HiFi-GAN") -> bool:
    """Whether the server's `--dtype auto` runs this in bfloat16 on `device` (CPU)."""
    from wyoming_wsrvc.engine.precision import resolve_precision

    precision = resolve_precision("auto", device)
    return device.type == "cpu" and precision.synthesizer(vocoder) == torch.bfloat16


def synth_gflop(models: Path, device: torch.device) -> dict[str, float]:
    """Each RVC synthesizer's GFLOP per second of audio (counted by torch's FlopCounterMode
    on 1 s of features: the arithmetic that sets the limit on a CPU)."""
    from torch.utils.flop_counter import FlopCounterMode

    out: dict[str, float] = {}
    for name in RVC_VOICES:
        synth = load_synthesizer(read_voice(models / "models" / f"{name}.pth"), device)
        frames = 100
        feats = torch.randn(1, frames, synth.cfg.feature_dim, device=device)
        f0 = torch.full((1, frames), 150.0, device=device)
        bins = torch.from_numpy(coarse(f0.cpu().numpy().astype(np.float64))).to(device)
        with FlopCounterMode(display=False) as counter:
            synth.infer(feats, bins, f0)
        out[name] = round(counter.get_total_flops() / 1e9, 2)
    return out


# Every RVC voice of the real random set: classic WebUI v2/v1, Applio MRF HiFi-GAN and RefineGAN.
RVC_VOICES = ("rvc-v2-40k", "rvc-v1-48k", "applio-mrf-32k", "applio-refinegan-32k")


def rvc_synth_rtf(synth: Synthesizer, device: torch.device, seconds: float = 5.0) -> float:
    """The synthesizer alone (text encoder, flow, decoder) on `seconds` of features."""
    frames = int(seconds * 100)
    feats = torch.randn(1, frames, synth.cfg.feature_dim, device=device)
    f0 = torch.full((1, frames), 150.0, device=device)
    bins = torch.from_numpy(coarse(f0.cpu().numpy().astype(np.float64))).to(device)
    return timed(lambda: synth.infer(feats, bins, f0), repeat=1) / seconds


def _random_module(
    module: torch.nn.Module, device: torch.device, dtype: torch.dtype
) -> torch.nn.Module:
    module = module.to_empty(device=device).to(dtype)
    with torch.no_grad():
        for param in module.parameters():
            param.normal_(0, 0.02)
    return module.eval()


def quality_rtfs(device: torch.device, dtype: torch.dtype) -> dict[str, float]:
    """The `quality` preset's architectures (T2S small, S2A medium), built in memory."""
    with torch.device("meta"):
        t2s = T2S(T2SConfig(depth=12, n_head=12, stoks_width=64))
        s2a = S2A(S2AConfig(depth=24, n_head=16, stoks_width=64, spk_width=192, conditioned=True))
    t2s_ready = _random_module(t2s, device, dtype)
    s2a_ready = _random_module(s2a, device, dtype)
    tokens, frames = (40, 45) if device.type == "cpu" else (T2S_TOKENS, S2A_FRAMES)
    return {
        "t2s_small": t2s_rtf(t2s_ready, tokens),  # type: ignore[arg-type]
        "s2a_medium": s2a_rtf(s2a_ready, frames, device),  # type: ignore[arg-type]
    }


def settings_for(models: Path, device: str) -> Settings:
    return Settings.local(models, device=device)


async def first_audio(port: int, voice: str, streaming: bool) -> Heard:
    """REQUEST over the socket as Home Assistant sends it (streamed word by word as an LLM
    does, with the compatibility `synthesize`, or at once), played at real time."""
    heard = await speak(port, REQUEST, voice, streaming)
    if heard.error is not None:
        raise RuntimeError(f"{voice}: {heard.error.text}")
    return heard


async def socket_measurements(models: Path, device: str) -> dict[str, Any]:
    settings = settings_for(models, device)
    # Greedy decoding: the same work in every run (random weights rarely sample EOS, but can).
    voices = {
        name: replace(profile, whisperspeech=replace(profile.whisperspeech, temperature=0.0))
        for name, profile in load_voices(settings.voices_dir).items()
    }
    pipeline, voices = build_pipeline(settings, voices)
    cast(WhisperSpeechStage, pipeline.speech).budget = NATURAL_LENGTH  # sentence-length audio
    # the warm-up's speed measurement again at natural lengths (what a trained model's warm-up
    # measures: random weights ran the warm-up sentence to its safety budget)
    plan = ThreadPlan.for_threads()
    for profile in voices.values():
        pipeline.speeds.set(profile.name, measure_speed(pipeline, profile, plan)[1])

    context = ServerContext.wire(pipeline, voices, "random-fast")
    async with serving(context) as port:
        return await _socket_rows(port, SOCKET_ROWS)


Rows = tuple[tuple[str, str, tuple[bool, ...]], ...]


async def _socket_rows(port: int, rows: Rows) -> dict[str, Any]:
    """Each row's request over the socket, idle and with one core busy: first audio, total,
    audio, RTF, the hold and what a real-time listener heard as underrun (median of 2, after one
    unmeasured request)."""
    out: dict[str, Any] = {}
    with holds() as log:
        for busy in (False, True):
            with busy_core() if busy else contextlib.nullcontext():
                for voice, label, modes in rows:
                    for streaming in modes:
                        key = f"{label}/{'streaming' if streaming else 'one-shot'}"
                        key += "/busy" if busy else ""
                        _LOGGER.info("socket %s", key)
                        # one request first, as a server in use has had: its speeds follow them
                        await first_audio(port, voice, streaming)
                        await asyncio.sleep(0.1)
                        log.holds.clear()
                        runs = [await first_audio(port, voice, streaming) for _ in range(2)]
                        await asyncio.sleep(0.1)  # the metrics line follows the last audio
                        total = statistics.median(r.total for r in runs)
                        audio = statistics.median(r.seconds for r in runs)
                        out[key] = {
                            "first_audio_s": round(
                                statistics.median(r.first_audio for r in runs), 3
                            ),
                            "total_s": round(total, 3),
                            "audio_s": round(audio, 2),
                            "rtf": round(total / audio, 3),
                            "hold_s": round(statistics.median(log.holds or [0.0]), 3),
                            "underrun_s": round(max(r.underrun for r in runs), 3),
                        }
                        _LOGGER.info("  %s", out[key])
    return out


# (profile, row label, streaming modes measured): every row is the same 3-sentence request.
SOCKET_ROWS: Rows = (
    ("random-tiny", "tiny", (False, True)),
    ("random-fast", "fast", (False, True)),
    ("rvc-v2", "fast+rvc_v2_40k_rmvpe", (False, True)),
    ("applio-refinegan-32k", "fast+applio_refinegan_32k", (False,)),
    ("applio-mrf-32k", "fast+applio_mrf_hifigan_32k", (False,)),
)


# Layer mode: a real wyoming-piper with the real en_US-joe-medium voice on this host as the
# upstream of three layer profiles (its speech alone, then converted by two RVC voices).
LAYER_ROWS: Rows = (
    ("joe", "piper", (False, True)),
    ("joe-rvc-v2", "piper+rvc_v2_40k_rmvpe", (False, True)),
    ("joe-refinegan-32k", "piper+applio_refinegan_32k", (False, True)),
)
LAYER_VOICES = {"joe": None, "joe-rvc-v2": "rvc-v2", "joe-refinegan-32k": "applio-refinegan-32k"}


@contextlib.contextmanager
def piper(venv: Path) -> Iterator[str]:
    """wyoming-piper from the real peers' venv (tests/peers/install.sh) serving the real Joe
    voice, offline, on a free loopback port; its URI."""
    with peers_piper(Peers(venv.resolve())) as running:
        yield running.uri


def layer_profiles(models: Path, uri: str) -> Path:
    """The layer profiles, beside the model set's voices (their RVC sections taken from those)."""
    folder = models / "voices-layer"
    folder.mkdir(exist_ok=True)
    for name, rvc_of in LAYER_VOICES.items():
        profile: dict[str, Any] = {
            "name": name,
            "languages": ["en", "en_US"],
            "sentence_pause": 0.1,
            "tail_silence": 0.1,
            "upstream": {"uri": uri, "voice": PIPER_VOICE},
        }
        if rvc_of is not None:
            source = yaml.safe_load((models / "voices" / f"{rvc_of}.yaml").read_text())
            profile["rvc"] = source["rvc"]
        (folder / f"{name}.yaml").write_text(yaml.safe_dump(profile))
    return folder


async def layer_measurements(models: Path, uri: str) -> dict[str, Any]:
    voices_dir = layer_profiles(models, uri)
    settings = Settings.local(models, voices_dir=voices_dir)
    pipeline, voices = build_pipeline(settings, load_voices(voices_dir))
    context = ServerContext.wire(pipeline, voices, "joe")
    async with serving(context) as port:
        rows = await _socket_rows(port, LAYER_ROWS)
    cpu = CpuKind.current()
    return {
        # the layer rows may be measured apart from the rest (`--layer-only`): their machine
        "machine": f"{_cpu_model()}, {cpu.aten} kernels, "
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}",
        "upstream": f"wyoming-piper, {PIPER_VOICE} (this host)",
        "threads": context.scheduler.plan.describe(),
        "socket": rows,
    }


def upstream(python: str, models: Path) -> dict[str, Any]:
    raw = subprocess.run(
        [
            python,
            str(Path(__file__).with_name("upstream.py")),
            str(models / "models"),
            str(T2S_TOKENS),
            str(S2A_FRAMES),
        ],
        capture_output=True,
        text=True,
        check=True,
        timeout=900,
    ).stdout
    data: dict[str, Any] = json.loads(raw)
    out: dict[str, Any] = {}
    for size in ("tiny", "base"):
        out[f"t2s_{size}"] = data[f"t2s_{size}"]["seconds"] / (data[f"t2s_{size}"]["tokens"] / 25)
        out[f"s2a_{size}"] = data[f"s2a_{size}"]["seconds"] / (S2A_FRAMES / 75)
    return out


def _socket(row: str, field: str) -> Callable[[dict[str, Any]], float]:
    return lambda r: float(r["cpu"]["socket"][row][field])


def _layer(row: str, field: str) -> Callable[[dict[str, Any]], float]:
    return lambda r: float(r["cpu"]["layer"]["socket"][row][field])


def _busy_ratio(row: str) -> Callable[[dict[str, Any]], float]:
    return lambda r: r["cpu"]["socket"][row + "/busy"]["rtf"] / r["cpu"]["socket"][row]["rtf"]


# The speed issue's targets (CPU, `--dtype auto`), and the Applio decoders'.
TARGETS: list[tuple[str, Callable[[dict[str, Any]], float], float, str]] = [
    (
        "fast, one-shot: first audio (s, ≤ 1.0)",
        _socket("fast/one-shot", "first_audio_s"),
        1.0,
        "<=",
    ),
    (
        "fast, streaming: first audio (s, ≤ 1.0)",
        _socket("fast/streaming", "first_audio_s"),
        1.0,
        "<=",
    ),
    ("fast, one-shot: RTF (≤ 0.5)", _socket("fast/one-shot", "rtf"), 0.5, "<="),
    ("fast, streaming: RTF (≤ 0.5)", _socket("fast/streaming", "rtf"), 0.5, "<="),
    *(
        target
        for row in (
            "fast+rvc_v2_40k_rmvpe/one-shot",
            "fast+rvc_v2_40k_rmvpe/streaming",
            "fast+applio_refinegan_32k/one-shot",
            "fast+applio_mrf_hifigan_32k/one-shot",
        )
        for target in (
            (f"{row}: first audio (s, ≤ 1.5)", _socket(row, "first_audio_s"), 1.5, "<="),
            (f"{row}: RTF (≤ 1.0)", _socket(row, "rtf"), 1.0, "<="),
        )
    ),
    *(
        (
            f"{row}: underrun a real-time listener hears (s, 0)",
            _socket(row, "underrun_s"),
            0.05,
            "<=",
        )
        for row in (
            "fast/one-shot",
            "fast/streaming",
            "fast+rvc_v2_40k_rmvpe/one-shot",
            "fast+rvc_v2_40k_rmvpe/streaming",
            "fast+applio_refinegan_32k/one-shot",
            "fast+applio_mrf_hifigan_32k/one-shot",
        )
    ),
    *(
        (f"{row}, one core busy: RTF / idle RTF (≤ 1.6)", _busy_ratio(row), 1.6, "<=")
        for row in ("fast/one-shot", "fast+rvc_v2_40k_rmvpe/one-shot")
    ),
    # the layer issue's (AVX2, 2 cores, a real Piper on the same host)
    *(
        (f"{row}/{mode}: {label}", _layer(f"{row}/{mode}", field), bound, "<=")
        for mode in ("one-shot", "streaming")
        for row, label, field, bound in (
            ("piper+rvc_v2_40k_rmvpe", "first audio (s, ≤ 1.0)", "first_audio_s", 1.0),
            ("piper+rvc_v2_40k_rmvpe", "RTF (≤ 1.0)", "rtf", 1.0),
            ("piper+rvc_v2_40k_rmvpe", "underrun (s, 0)", "underrun_s", 0.05),
            ("piper+applio_refinegan_32k", "RTF (≤ 1.0)", "rtf", 1.0),
        )
    ),
    (
        "S2A tiny, int8 (x real time, ≥ 3)",
        lambda r: 1 / r["cpu"]["stages"]["s2a_tiny/int8"],
        3.0,
        ">=",
    ),
    (
        "T2S base, int8 (x real time, ≥ 6)",
        lambda r: 1 / r["cpu"]["stages"]["t2s_base/int8"],
        6.0,
        ">=",
    ),
]


def markdown(results: dict[str, Any]) -> str:
    lines = [
        "# wyoming-wsrvc benchmark",
        "",
        f"Machine: {_machine(results['machine'])}; benchmark run time "
        f"{results.get('seconds', '?')} s",
        "",
    ]
    for dev, data in results.items():
        if not isinstance(data, dict) or dev == "machine":
            continue
        lines += [
            f"## {dev}",
            "",
            "| stage | RTF | x real time | upstream RTF | speed-up |",
            "|---|---|---|---|---|",
        ]
        up = data.get("upstream", {})
        for name, rtf in {**data["stages"], **data.get("quality", {})}.items():
            ratio = f"{up[name] / rtf:.2f}x" if name in up else ""
            lines.append(
                f"| {name} | {rtf:.3f} | {1 / rtf:.2f} | {up.get(name, float('nan')):.3f} | {ratio} |"
            )
        lines += [
            "",
            "| request (3 sentences) | first audio (s) | total (s) | audio (s) | RTF | "
            "hold (s) | underrun (s) |",
            "|---|---|---|---|---|---|---|",
        ]
        before = data.get("previous_socket", {})
        for name, row in data["socket"].items():
            lines.append(
                f"| {name} | {row['first_audio_s']} | {row['total_s']} | {row['audio_s']} | "
                f"{row['rtf']}{_was(before.get(name))} | {row.get('hold_s', '-')} | {row.get('underrun_s', '-')} |"
            )
        layer = data.get("layer")
        if layer:
            lines += [
                "",
                f"Layer mode: upstream {layer['upstream']}; threads: {layer['threads']}; "
                f"measured on {layer.get('machine', 'the machine above')}",
                "",
                "| layer request (3 sentences) | first audio (s) | total (s) | audio (s) | RTF | "
                "hold (s) | underrun (s) |",
                "|---|---|---|---|---|---|---|",
                *(
                    f"| {name} | {row['first_audio_s']} | {row['total_s']} | {row['audio_s']} | "
                    f"{row['rtf']}{_was(layer.get('previous', {}).get(name))} | {row['hold_s']} | "
                    f"{row['underrun_s']} |"
                    for name, row in layer["socket"].items()
                ),
            ]
        gflop = data.get("synth_gflop_per_audio_s", {})
        if gflop:
            reached = data.get("synth_gflops_reached", {})
            lines += [
                "",
                "| RVC synthesizer | GFLOP per audio second | GFLOP/s reached (audio worker threads) |",
                "|---|---|---|",
                *(
                    f"| {name} | {flop} | {reached.get(name, '-')} |"
                    for name, flop in gflop.items()
                ),
            ]
        lines += ["", f"Peak memory: {data['peak_memory_mb']:.0f} MB", ""]
    if "cpu" in results:
        lines += [
            "## Targets (CPU, --dtype auto)",
            "",
            "| target | measured | met |",
            "|---|---|---|",
        ]
        for label, get, bound, op in TARGETS:
            try:
                value = get(results)
            except KeyError:  # rows not measured (no --peers: no layer rows)
                continue
            met = value >= bound if op == ">=" else value <= bound
            lines.append(f"| {label} | {value:.2f} | {'yes' if met else 'no'} |")
    return "\n".join(lines) + "\n"


def _was(old: dict[str, Any] | None) -> str:
    return f" (was {old['first_audio_s']} s, RTF {old['rtf']})" if old is not None else ""


def _machine(machine: Any) -> str:
    if isinstance(machine, dict):
        return f"{machine['description']}; instruction set {machine['isa']}"
    return str(machine)


def chart(results: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    data = results["cpu"]
    names = list(data["stages"]) + list(data.get("quality", {}))
    values = [data["stages"].get(n, data.get("quality", {}).get(n)) for n in names]
    fig, ax = plt.subplots(figsize=(9, 4.5))
    ax.barh(names, values, color="#4c72b0", label="wyoming-wsrvc")
    up = data.get("upstream", {})
    if up:
        ax.barh(
            [n for n in names if n in up],
            [up[n] for n in names if n in up],
            color="#dd8452",
            alpha=0.5,
            label="upstream whisperspeech 0.8.9",
        )
    ax.axvline(1.0, color="grey", linestyle="--", linewidth=1)
    ax.set_xlabel("seconds of compute per second of audio (RTF), CPU float32")
    ax.set_xscale("log")
    ax.legend()
    ax.invert_yaxis()
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--models", type=Path, default=Path("benchmarks/.models"))
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    parser.add_argument("--upstream-python", help="a Python with whisperspeech==0.8.9")
    parser.add_argument(
        "--peers",
        type=Path,
        help="the real peers' venv (.venv-peers, made by tests/peers/install.sh): the layer rows",
    )
    parser.add_argument(
        "--layer-only",
        action="store_true",
        help="only the layer rows (needs --peers), into the existing results",
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    for noisy in ("wyoming_wsrvc", "faiss"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    logging.getLogger("wyoming_wsrvc.server.responses").setLevel(logging.INFO)  # the metrics lines
    models = args.models.resolve()
    if not (models / "voices" / "random-tiny.yaml").is_file():
        random_models(models, "real")
    started = time.perf_counter()
    cpu = CpuKind.current()
    out_dir = args.out / cpu.isa
    _LOGGER.info("CPU: %s (torch %s kernels); results into %s", cpu.isa, cpu.aten, out_dir)
    if args.layer_only:
        if not args.peers:
            parser.error("--layer-only needs --peers")
        kept: dict[str, Any] = json.loads((out_dir / "results.json").read_text())
        before = kept["cpu"].get("layer", {})
        with piper(args.peers) as uri:
            layer = asyncio.run(layer_measurements(models, uri))
        layer["previous"] = before.get("socket", {})
        kept["cpu"]["layer"] = layer
        _write(kept, out_dir)
        return 0
    results: dict[str, Any] = {
        "machine": {
            "description": f"{_cpu_model()}, {torch.get_num_threads()} threads, "
            f"torch {torch.__version__}",
            "isa": cpu.isa,
            "torch_kernels": cpu.aten,
            "onednn_limit": cpu.onednn_limit,
            "native_bf16": cpu.bf16_fast()[1],
            "cores": ThreadPlan.for_threads().total,
        }
    }
    devices = [torch.device("cpu")] + ([torch.device("cuda")] if torch.cuda.is_available() else [])
    for device in devices:
        dtype = torch.float32 if device.type == "cpu" else torch.float16
        entry: dict[str, Any] = {
            "stages": stage_rtfs(models, device, dtype),
            "quality": quality_rtfs(device, dtype),
            "socket": asyncio.run(socket_measurements(models, device.type)),
        }
        if device.type == "cpu":
            plan = ThreadPlan.for_threads()
            entry["stage_threads"] = {"decoders": plan.decode, "audio": plan.audio}
            gflop = synth_gflop(models, device)
            entry["synth_gflop_per_audio_s"] = gflop
            # what the server runs (bf16 where `auto` uses it): GFLOP/s reached on the audio
            # worker's threads
            entry["synth_gflops_reached"] = {
                name: round(flop / entry["stages"][key], 1)
                for name, flop in gflop.items()
                for key in [
                    f"rvc_synth_{name}/bfloat16"
                    if f"rvc_synth_{name}/bfloat16" in entry["stages"]
                    else f"rvc_synth_{name}"
                ]
            }
        if device.type == "cpu" and args.upstream_python:
            entry["upstream"] = upstream(args.upstream_python, models)
        if device.type == "cpu" and args.peers:
            with piper(args.peers) as uri:
                entry["layer"] = asyncio.run(layer_measurements(models, uri))
        entry["peak_memory_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        results[device.type] = entry
    results["seconds"] = round(time.perf_counter() - started, 1)
    previous_file = out_dir / "results.json"
    if previous_file.is_file() and "cpu" in results:
        previous = json.loads(previous_file.read_text()).get("cpu", {})
        results["cpu"]["previous_socket"] = previous.get("socket", {})
        results["cpu"]["vs_previous"] = {
            key: {
                "first_audio_ratio": round(row["first_audio_s"] / old["first_audio_s"], 3),
                "rtf_ratio": round(row["rtf"] / old["rtf"], 3),
            }
            for key, row in results["cpu"]["socket"].items()
            if (old := previous.get("socket", {}).get(key))
        }
    _write(results, out_dir)
    return 0


def _write(results: dict[str, Any], out_dir: Path) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "results.json").write_text(json.dumps(results, indent=1))
    (out_dir / "results.md").write_text(markdown(results))
    chart(results, out_dir / "stages.png")
    sys.stdout.write(markdown(results))


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


if __name__ == "__main__":
    sys.exit(main())
