"""Developer commands.

``python -m wyoming_wsrvc.devtools random-models DIR [--size tiny|real]`` writes model files with
random weights in the real formats (WhisperSpeech `.model` T2S and S2A, Vocos `config.yaml` +
`pytorch_model.bin`) plus voice profiles under DIR, so that
``wyoming-wsrvc --data-dir DIR --offline --uri tcp://127.0.0.1:PORT`` serves them. `tiny` is for
tests; `real` uses the published architectures' sizes (for benchmarks).

``python -m wyoming_wsrvc.devtools clone-speaker REC.wav OUT.npy`` computes a speaker embedding
(needs the optional `clone` extra).
"""

from __future__ import annotations

import argparse
import logging
import re
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from .random_models import random_models

if TYPE_CHECKING:
    from ..config.settings import Settings
    from ..config.voices import VoiceProfile
    from .quality import ProfileResult

_LOGGER = logging.getLogger(__name__)


def _quality(args: argparse.Namespace) -> int:
    from ..config.registry import ModelUnavailableError, Registry
    from ..config.settings import Settings
    from ..config.voices import load_voices, voices_folder
    from .quality import read_sentences, report, to_json

    data_dir = args.data_dir.resolve()
    sentences = read_sentences(args.sentences)
    settings, voices = None, {}
    if not args.uri:  # the voices first: an unknown name is known before anything loads
        settings = Settings.local(
            data_dir,
            voices_dir=voices_folder(data_dir, args.voices),
            device="auto",
            offline=args.offline,
        )
        voices = load_voices(settings.voices_dir)
        missing = [name for name in args.voice or [] if name not in voices]
        if missing:
            _LOGGER.error(
                "Unknown voice(s) in %s: %s; voices: %s",
                settings.voices_dir,
                ", ".join(missing),
                ", ".join(voices),
            )
            return 2
    try:  # before the speech models: a missing Whisper model is known at once
        whisper = Registry(data_dir, args.offline).whisper_checkpoint(args.whisper)
    except ModelUnavailableError as err:
        _LOGGER.error("Cannot run the quality check: %s", err)
        return 2
    if settings is None:
        results = _quality_remote(args, sentences, whisper)
    else:
        names = args.voice or list(voices)
        results = _quality_local(settings, {n: voices[n] for n in names}, sentences, whisper)
    if results is None:
        return 2
    sys.stdout.write(report(results) + "\n")
    if args.json:
        args.json.write_text(to_json(results))
    return 0


def _quality_remote(
    args: argparse.Namespace, sentences: list[str], whisper: Path
) -> list[ProfileResult] | None:
    import asyncio

    from .quality import evaluate_remote, transcriber

    match = re.fullmatch(r"tcp://([^:/]+):(\d+)", args.uri)
    if match is None:
        _LOGGER.error("--uri must be tcp://HOST:PORT, not %r", args.uri)
        return None
    voices: list[str | None] = list(args.voice) if args.voice else [None]
    return asyncio.run(
        evaluate_remote(
            match.group(1),
            int(match.group(2)),
            voices,
            sentences,
            transcriber(whisper),
            streaming=args.streaming,
            language=args.language,
        )
    )


def _quality_local(
    settings: Settings, voices: dict[str, VoiceProfile], sentences: list[str], whisper: Path
) -> list[ProfileResult] | None:
    from ..engine.build import build_pipeline
    from ..engine.pipeline import EngineUnavailableError
    from .quality import evaluate, transcriber

    try:
        pipeline, usable = build_pipeline(settings, voices)
    except EngineUnavailableError as err:
        _LOGGER.error("Cannot run the quality check: %s", err)
        return None
    return evaluate(pipeline, list(usable.values()), sentences, transcriber(whisper))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m wyoming_wsrvc.devtools")
    sub = parser.add_subparsers(dest="command", required=True)
    rand = sub.add_parser("random-models", help="write a random-weight model set")
    rand.add_argument("dir", type=Path)
    rand.add_argument("--size", choices=("tiny", "real"), default="tiny")
    clone = sub.add_parser("clone-speaker", help="speaker embedding from a recording (SpeechBrain)")
    clone.add_argument("recording", type=Path)
    clone.add_argument("output", type=Path)
    clone.add_argument("--cache-dir", type=Path, default=Path("data"))
    quality = sub.add_parser("quality", help="CER of Whisper transcripts of a profile's speech")
    quality.add_argument(
        "--voice", action="append", help="profile name (repeat; default: every voice)"
    )
    quality.add_argument("--sentences", type=Path, help="text file, one sentence per line")
    quality.add_argument(
        "--whisper",
        default="base",
        help="openai-whisper model name or checkpoint file, or a CTranslate2 Whisper folder "
        "(faster-whisper)",
    )
    quality.add_argument(
        "--uri", help="ask a running Wyoming TTS server (tcp://HOST:PORT) instead of the profiles"
    )
    quality.add_argument(
        "--streaming", action="store_true", help="with --uri: stream each text word by word"
    )
    quality.add_argument("--language", default="en", help="with --uri: the language spoken")
    quality.add_argument("--data-dir", type=Path, default=Path("data"))
    quality.add_argument(
        "--voices",
        type=Path,
        help="voices folder (default, as the server: <data-dir>/voices if it exists, else the "
        "example profile shipped in the package)",
    )
    quality.add_argument("--offline", action="store_true")
    quality.add_argument("--json", type=Path, help="also write the results as JSON")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO)
    if args.command == "random-models":
        random_models(args.dir, args.size)
    elif args.command == "quality":
        return _quality(args)
    else:
        from ..models.whisperspeech.speaker import clone_speaker

        clone_speaker(args.recording, args.output, args.cache_dir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
