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
import sys
from collections.abc import Sequence
from pathlib import Path

from .random_models import random_models

_LOGGER = logging.getLogger(__name__)


def _quality(args: argparse.Namespace) -> int:
    import whisper

    from ..config.registry import ModelUnavailableError, Registry
    from ..config.settings import Settings
    from ..config.voices import load_voices, voices_folder
    from ..engine.build import build_pipeline
    from ..engine.pipeline import EngineUnavailableError
    from .quality import evaluate, read_sentences, report, to_json

    data_dir = args.data_dir.resolve()
    settings = Settings.local(
        data_dir,
        voices_dir=voices_folder(data_dir, args.voices),
        device="auto",
        offline=args.offline,
    )
    voices = load_voices(settings.voices_dir)
    names = args.voice or list(voices)
    missing = [name for name in names if name not in voices]
    if missing:
        _LOGGER.error(
            "Unknown voice(s) in %s: %s; voices: %s",
            settings.voices_dir,
            ", ".join(missing),
            ", ".join(voices),
        )
        return 2
    try:  # before the speech models: a missing Whisper checkpoint is known at once
        checkpoint = Registry(data_dir, args.offline).whisper_checkpoint(args.whisper)
        pipeline, usable = build_pipeline(settings, {name: voices[name] for name in names})
    except (ModelUnavailableError, EngineUnavailableError) as err:
        _LOGGER.error("Cannot run the quality check: %s", err)
        return 2
    model = whisper.load_model(str(checkpoint), device="cpu")
    results = evaluate(pipeline, list(usable.values()), read_sentences(args.sentences), model)
    sys.stdout.write(report(results) + "\n")
    if args.json:
        args.json.write_text(to_json(results))
    return 0


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
    quality.add_argument("--whisper", default="base", help="Whisper model name or checkpoint path")
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
