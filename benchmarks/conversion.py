"""Conversion benchmark: what RVC costs per second of speech, alone (no server, no upstream).

    .venv/bin/python benchmarks/conversion.py [--models DIR] [--voices rvc-v2,...] [--threads N]

Three sentences of the benchmark request's lengths (Piper speaks them in 2.17, 1.64 and 1.08 s)
are fed to `ConversionStream` in Piper's 1024-sample chunks at 22.05 kHz, as layer mode feeds a
voice, with three start policies: every sentence from a full segment (as one window: the
sentence's own cost), the server's policy (a short first segment for the request's first
sentence only), and a short first segment for every sentence. Prints, per voice and policy,
compute seconds per second of speech and when the first sentence's first audio was ready (the
best of `--repeat` runs after one unmeasured). The speech is a voiced synthetic tone with noise:
the models' cost does not depend on what is said. Real-size random models (`random_models`).

Run it on an idle machine; torch limited to AVX2 with `ATEN_CPU_CAPABILITY=avx2
ONEDNN_MAX_CPU_ISA=AVX2`.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

import numpy as np
import torch

from wyoming_wsrvc.audio import Audio
from wyoming_wsrvc.config.settings import Settings
from wyoming_wsrvc.config.voices import RvcParams, load_voices
from wyoming_wsrvc.devtools.random_models import random_models
from wyoming_wsrvc.engine.build import build_pipeline
from wyoming_wsrvc.engine.conversion import RvcConverter
from wyoming_wsrvc.engine.conversion_stream import ConversionStream
from wyoming_wsrvc.engine.precision import CpuKind
from wyoming_wsrvc.engine.threads import use

_LOGGER = logging.getLogger("benchmark.conversion")

SENTENCES = (2.17, 1.64, 1.08)  # seconds: Piper's en_US-joe-medium speaking the request
RATE = 22050  # Piper's rate
CHUNK = 1024  # samples per Piper audio chunk
POLICIES = {
    "whole sentences": (False, False, False),
    "server (short start, first sentence)": (True, False, False),
    "short start, every sentence": (True, True, True),
}


def speech(seconds: float, rng: np.random.Generator) -> np.ndarray:
    """A voiced tone (140 Hz, slowly modulated) with a little noise, at Piper's rate."""
    t = np.arange(int(seconds * RATE)) / RATE
    tone = 0.3 * np.sin(2 * np.pi * 140 * t) * (1 + 0.5 * np.sin(2 * np.pi * 3 * t))
    return (tone + 0.02 * rng.standard_normal(len(t))).astype(np.float32)


def run(
    converter: RvcConverter,
    params: RvcParams,
    sentences: list[np.ndarray],
    starts: tuple[bool, ...],
) -> tuple[float, float]:
    """(compute seconds, seconds to the first audio) for the sentences in turn."""
    first: float | None = None
    began = time.perf_counter()
    for samples, short in zip(sentences, starts, strict=True):
        stream = ConversionStream(converter, params, RATE, short_start=short)
        for a in range(0, len(samples), CHUNK):
            out = stream.feed(Audio(samples[a : a + CHUNK], RATE), final=a + CHUNK >= len(samples))
            if first is None and len(out.samples):
                first = time.perf_counter()
    end = time.perf_counter()
    return end - began, (first or end) - began


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--models", type=Path, default=Path("benchmarks/.models"))
    parser.add_argument("--voices", default="rvc-v2,applio-refinegan-32k")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=2)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    logging.getLogger("wyoming_wsrvc").setLevel(logging.WARNING)
    models = args.models.resolve()
    if not (models / "voices" / "rvc-v2.yaml").is_file():
        random_models(models, "real")
    settings = Settings.local(models, voices_dir=models / "voices")
    pipeline, voices = build_pipeline(settings, load_voices(models / "voices"))
    converter = pipeline.converter
    if converter is None:
        _LOGGER.error("no RVC engine")
        return 1
    use(args.threads)
    rng = np.random.default_rng(0)
    sentences = [speech(seconds, rng) for seconds in SENTENCES]
    audio = sum(SENTENCES)
    _LOGGER.info("torch %s kernels, %d threads", CpuKind.current().aten, args.threads)
    with torch.inference_mode():
        for name in args.voices.split(","):
            params = voices[name].rvc
            if params is None:
                continue
            run(converter, params, sentences, POLICIES["whole sentences"])  # loads, warms up
            for policy, starts in POLICIES.items():
                best = min(
                    (run(converter, params, sentences, starts) for _ in range(args.repeat)),
                    key=lambda r: r[0],
                )
                _LOGGER.info(
                    "%s, %s: %.3f s per speech second, first audio %.2f s",
                    name,
                    policy,
                    best[0] / audio,
                    best[1],
                )
    return 0


if __name__ == "__main__":
    sys.exit(main())
