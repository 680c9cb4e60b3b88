"""Load benchmark: many satellites at once, at real model sizes (random weights, real formats).

    .venv/bin/python benchmarks/load.py [--models DIR] [--out DIR] [--seconds S] [--clients 1,4,8,20]
        [--voices random-fast,rvc-v2] [--max-batch N] [--no-busy]

N concurrent clients (1, 4, 8, 20) each send requests back to back for --seconds, over the
Wyoming socket of an in-process server (`--dtype auto`, default batch cap and queue): one-shot
and streaming alternate, and so do the plain `fast` voice and the RVC v2 40 kHz + RMVPE voice;
the texts are short Home Assistant answers of one to three sentences, spoken at their natural
length (random weights never emit EOS). Each run is repeated with one core kept busy by another
process (`"8/busy"`). Also measured: the cost of one shared decode step by the number of rows
in it (the batch cap is chosen from it).

Writes `load.json` into --out (default benchmarks/results): per client count
`first_audio_p50_s`, `first_audio_p95_s`, `total_p50_s`, `total_p95_s`, `requests_per_minute`,
`peak_rss_mb` (the server process, sampled), `requests`, `errors`, `busy_share` (CPU seconds per
second of the decode and audio threads and of the whole process); and `step_ms_by_rows`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import statistics
import sys
import threading
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, cast

import torch

from wyoming_wsrvc.config.settings import MAX_BATCH, Settings
from wyoming_wsrvc.config.voices import VoiceProfile, load_voices
from wyoming_wsrvc.devtools.loopback import busy_core, serving, speak
from wyoming_wsrvc.devtools.random_models import random_models
from wyoming_wsrvc.engine.build import build_pipeline
from wyoming_wsrvc.engine.pipeline import Pipeline
from wyoming_wsrvc.engine.threads import ThreadPlan, use
from wyoming_wsrvc.engine.whisperspeech import NATURAL_LENGTH, WhisperSpeechStage
from wyoming_wsrvc.models.whisperspeech.decoding import DecodeBatches
from wyoming_wsrvc.models.whisperspeech.sampling import Sampling
from wyoming_wsrvc.scheduling.scheduler import Scheduler
from wyoming_wsrvc.server.handler import ServerContext

VOICES = ("random-fast", "rvc-v2")  # plain fast preset; fast + RVC v2 40 kHz + RMVPE
TEXTS = (
    "The kitchen light is on.",
    "It is twenty one degrees inside. The front door is locked.",
    "Timer set for ten minutes.",
    "Good morning! It is sunny and eighteen degrees. You have two meetings today.",
    "The washing machine has finished.",
    "Turned off three lights in the living room.",
)
CLIENTS = (1, 4, 8, 20)
STEP_ROWS = (1, 2, 4, 8, 12, 16, 24)


@dataclass
class Run:
    first_audio: list[float] = field(default_factory=list)
    total: list[float] = field(default_factory=list)
    errors: int = 0


async def request(port: int, index: int, run: Run, voices: tuple[str, ...]) -> None:
    """One request; its first-audio and total time go into `run`."""
    voice = voices[index % len(voices)]
    text = TEXTS[index % len(TEXTS)]
    streaming = (index // len(voices)) % 2 == 1
    heard = await speak(port, text, voice, streaming)
    if heard.error is not None:
        run.errors += 1
        return
    if heard.audio:
        run.first_audio.append(heard.first_audio)
    run.total.append(heard.total)


def _rss_mb() -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def _thread_cpu() -> dict[str, float]:
    """CPU seconds used so far by the server's worker threads (decode, audio), from /proc."""
    out: dict[str, float] = {}
    tick = os.sysconf("SC_CLK_TCK")
    for thread in threading.enumerate():
        kind = thread.name.removeprefix("wsrvc-").split("_")[0]
        if kind not in ("decode", "audio") or thread.native_id is None:
            continue
        with contextlib.suppress(OSError):
            stat = Path(f"/proc/self/task/{thread.native_id}/stat").read_text()
            fields = stat.rsplit(")", 1)[1].split()
            out[kind] = out.get(kind, 0.0) + (int(fields[11]) + int(fields[12])) / tick
    return out


def _process_cpu() -> float:
    times = os.times()
    return times.user + times.system


def _p(values: list[float], q: int) -> float:
    if len(values) < 2:
        return round(values[0], 3) if values else float("nan")
    return round(statistics.quantiles(values, n=100, method="inclusive")[q - 1], 3)


async def load_run(
    port: int, clients: int, seconds: float, voices: tuple[str, ...] = VOICES
) -> dict[str, Any]:
    run = Run()
    deadline = time.perf_counter() + seconds
    counter = iter(range(10**9))
    peak = _rss_mb()

    async def client_loop(offset: int) -> None:
        while time.perf_counter() < deadline:
            await request(port, next(counter) + offset, run, voices)

    async def sample_rss() -> None:
        nonlocal peak
        while True:
            peak = max(peak, _rss_mb())
            await asyncio.sleep(0.2)

    sampler = asyncio.create_task(sample_rss())
    started, cpu_before, process_before = time.perf_counter(), _thread_cpu(), _process_cpu()
    await asyncio.gather(*(client_loop(c) for c in range(clients)))
    elapsed = time.perf_counter() - started
    cpu, process = _thread_cpu(), _process_cpu() - process_before
    sampler.cancel()
    return {
        "first_audio_p50_s": _p(run.first_audio, 50),
        "first_audio_p95_s": _p(run.first_audio, 95),
        "total_p50_s": _p(run.total, 50),
        "total_p95_s": _p(run.total, 95),
        "requests_per_minute": round(60 * len(run.total) / elapsed, 1),
        "peak_rss_mb": round(peak, 1),
        "requests": len(run.total),
        "errors": run.errors,
        # the share of the run each worker thread was on a CPU: which side limits throughput
        "busy_share": {
            **{k: round((v - cpu_before.get(k, 0.0)) / elapsed, 2) for k, v in cpu.items()},
            "process": round(process / elapsed, 2),  # all threads (of 2 cores: at most 2)
        },
    }


def step_costs(pipeline: Pipeline, profile: VoiceProfile) -> dict[str, dict[str, float]]:
    """Milliseconds of one shared decode step (T2S, S2A) with this many rows, one thread."""
    stage = cast(WhisperSpeechStage, pipeline.speech)
    out: dict[str, dict[str, float]] = {"t2s": {}, "s2a": {}}
    use(ThreadPlan.for_threads().decode)
    with torch.inference_mode():
        for rows in STEP_ROWS:
            batches = DecodeBatches()
            stage.begin(batches, [TEXTS[1]] * rows, "en", profile.whisperspeech, 24)
            pair = stage.pair(profile.whisperspeech)
            for _ in range(5):
                batches.step()
            start = time.perf_counter()
            for _ in range(20):
                batches.step()
            out["t2s"][str(rows)] = round((time.perf_counter() - start) / 20 * 1000, 2)
            s2a = batches.s2a(pair.s2a)
            speaker = stage.speaker(None)[None].expand(rows, -1)
            s2a.add([[1] * 100] * rows, speaker, Sampling(0.0, 1))
            for _ in range(5):
                s2a.accept(s2a.forward().argmax(-1))
            start = time.perf_counter()
            for _ in range(20):
                s2a.accept(s2a.forward().argmax(-1))
            out["s2a"][str(rows)] = round((time.perf_counter() - start) / 20 * 1000, 2)
    return out


async def measure(
    models: Path,
    clients: list[int],
    seconds: float,
    max_batch: int,
    busy_runs: bool,
    mix: tuple[str, ...] = VOICES,
) -> dict[str, Any]:
    settings = Settings.local(models)
    voices = {  # greedy: the same work in every run
        name: replace(profile, whisperspeech=replace(profile.whisperspeech, temperature=0.0))
        for name, profile in load_voices(settings.voices_dir).items()
        if name in mix
    }
    pipeline, voices = build_pipeline(settings, voices)
    cast(WhisperSpeechStage, pipeline.speech).budget = NATURAL_LENGTH  # sentence-length audio
    results: dict[str, Any] = {"step_ms_by_rows": step_costs(pipeline, voices["random-fast"])}
    scheduler = Scheduler(pipeline, max_rows=max_batch)
    context = ServerContext.wire(pipeline, voices, "random-fast", scheduler=scheduler)
    results["max_batch"] = max_batch
    async with serving(context) as port:
        await load_run(port, 2, 10, mix)  # warm-up: kernels, RVC voice loaded
        for busy in (False, True) if busy_runs else (False,):
            with busy_core() if busy else contextlib.nullcontext():
                for n in clients:
                    key = f"{n}/busy" if busy else str(n)
                    results[key] = await load_run(port, n, seconds, mix)
                    sys.stderr.write(f"{key}: {json.dumps(results[key])}\n")
    return results


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--models", type=Path, default=Path("benchmarks/.models"))
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    parser.add_argument("--seconds", type=float, default=45.0, help="per client count")
    parser.add_argument("--clients", default=",".join(map(str, CLIENTS)))
    parser.add_argument("--max-batch", type=int, default=MAX_BATCH, help="the server's batch cap")
    parser.add_argument("--no-busy", action="store_true", help="skip the runs with a busy core")
    parser.add_argument(
        "--voices", default=",".join(VOICES), help="the voices requests use, in turn"
    )
    args = parser.parse_args()
    models = args.models.resolve()
    if not (models / "voices" / "random-fast.yaml").is_file():
        random_models(models, "real")
    started = time.perf_counter()
    clients = [int(n) for n in args.clients.split(",")]
    results = asyncio.run(measure(models, clients, args.seconds, args.max_batch, not args.no_busy))
    results["seconds"] = round(time.perf_counter() - started, 1)
    results["texts"] = list(TEXTS)
    results["voices"] = args.voices.split(",")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "load.json").write_text(json.dumps(results, indent=1))
    sys.stdout.write(json.dumps(results, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
