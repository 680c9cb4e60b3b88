"""Command line: flags → Settings → voices → pipeline → server (+ zeroconf)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import shlex
import shutil
import socket
import sys
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

from . import __version__
from .config.http_settings import MAX_UPLOAD_MB, parse_http
from .config.registry import PRESETS
from .config.settings import ARGS_ENV, DEFAULT_URI, MAX_BATCH, MAX_QUEUE, Settings
from .config.uri import parse_uri
from .config.voices import PACKAGE_VOICES, VoiceConfigError, load_voices, voices_folder
from .engine.threads import ThreadPlan, available_cores
from .errors import SettingsError
from .server.listener import Listener, bind

# Nothing here imports torch: `--help` and `--version` answer at once, and the models' modules
# are imported by `main` once the flags are parsed.

_LOGGER = logging.getLogger(__name__)

HTTP_TOKEN_ENV = "WYOMING_WSRVC_HTTP_TOKEN"  # noqa: S105 - the variable's name


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="wyoming-wsrvc", description=__doc__)
    parser.add_argument(
        "--uri", default=DEFAULT_URI, help="tcp://HOST:PORT, unix://PATH or stdio://"
    )
    parser.add_argument("--data-dir", default="data", help="models and caches (default: ./data)")
    parser.add_argument(
        "--voices",
        help="folder of voice profiles (default: <data-dir>/voices if it exists, else the example "
        "profile shipped in the package)",
    )
    parser.add_argument("--default-voice", help="voice used when a request names none")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    parser.add_argument(
        "--dtype",
        default="auto",
        help="auto (float32 on CPU, float16 on CUDA), float32, float16, bfloat16",
    )
    parser.add_argument(
        "--offline", action="store_true", help="never download; use local files only"
    )
    parser.add_argument(
        "--zeroconf",
        nargs="?",
        const="",
        metavar="NAME",
        help="advertise over zeroconf (mDNS), optionally with NAME (default: the MAC address)",
    )
    parser.add_argument(
        "--no-streaming",
        action="store_true",
        help="do not advertise streaming synthesis (streaming events are still answered)",
    )
    parser.add_argument(
        "--samples-per-chunk", type=int, default=1024, help="samples per audio-chunk"
    )
    parser.add_argument(
        "--max-text-length", type=int, default=10_000, help="characters per request"
    )
    parser.add_argument(
        "--idle-timeout",
        type=float,
        default=60.0,
        help="seconds before a connection with no request is closed",
    )
    parser.add_argument(
        "--phrase-cache",
        type=int,
        default=256,
        metavar="N",
        help="keep the audio of the last N sentences for repeats (default 256; 0 disables)",
    )
    parser.add_argument("--no-phrase-cache", action="store_true", help="same as --phrase-cache 0")
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="CPU threads for model work in all (default: the cores this process may use, "
        f"here {available_cores()})",
    )
    parser.add_argument(
        "--max-batch",
        type=int,
        default=MAX_BATCH,
        metavar="N",
        help="sentences decoded together across requests; more wait for their turn "
        f"(default {MAX_BATCH})",
    )
    parser.add_argument(
        "--max-queue",
        type=int,
        default=MAX_QUEUE,
        metavar="N",
        help="requests that may wait for their turn; past that a new one gets an error with "
        f"code 'busy' (default {MAX_QUEUE})",
    )
    parser.add_argument(
        "--max-loaded-voices",
        type=int,
        default=4,
        help="RVC voices kept loaded at once (the least recently used is unloaded)",
    )
    parser.add_argument(
        "--skip-bad-voices",
        action="store_true",
        help="log and leave out invalid voice profiles instead of refusing to start",
    )
    parser.add_argument(
        "--watch-interval",
        type=float,
        default=5.0,
        metavar="SECONDS",
        help="check the voices folder for added, changed and removed profiles this often "
        "(default 5; 0: only when a client asks for the voices)",
    )
    parser.add_argument(
        "--http-uri",
        metavar="URI",
        help="serve the voice studio, OpenAI's speech API and /metrics here: PORT or "
        "http://HOST:PORT (default off; a bare port listens on 127.0.0.1)",
    )
    parser.add_argument(
        "--http-token",
        metavar="TOKEN",
        default=os.environ.get(HTTP_TOKEN_ENV),
        help=f"a token every HTTP request must show (Bearer, or the page's sign-in); needed to "
        f"listen beyond loopback (default: ${HTTP_TOKEN_ENV})",
    )
    parser.add_argument(
        "--http-ingress",
        action="store_true",
        help="accept HTTP only from Home Assistant's ingress proxy (the add-on)",
    )
    parser.add_argument(
        "--http-max-upload-mb",
        type=int,
        default=MAX_UPLOAD_MB,
        metavar="MB",
        help=f"largest voice upload (its files together; default {MAX_UPLOAD_MB})",
    )
    parser.add_argument("--debug", action="store_true", help="log at DEBUG level")
    parser.add_argument("--log-format", default=logging.BASIC_FORMAT, help="logging format")
    parser.add_argument("--version", action="version", version=__version__)
    return parser


def settings_from_args(argv: Sequence[str] | None = None) -> Settings:
    """Parse flags (plus any in $WYOMING_WSRVC_ARGS) into frozen, validated settings."""
    args_list = list(sys.argv[1:] if argv is None else argv)
    args_list = shlex.split(os.environ.get(ARGS_ENV, "")) + args_list
    args = build_parser().parse_args(args_list)
    if args.http_uri is None and (args.http_token or args.http_ingress):
        _LOGGER.warning("--http-token and --http-ingress do nothing without --http-uri")
    data_dir = Path(args.data_dir).expanduser().resolve()
    voices_dir = voices_folder(data_dir, Path(args.voices) if args.voices else None)
    settings = Settings(
        uri=args.uri,
        data_dir=data_dir,
        voices_dir=voices_dir,
        default_voice=args.default_voice,
        device=args.device,
        dtype=args.dtype,
        offline=args.offline,
        zeroconf_name=args.zeroconf,
        streaming=not args.no_streaming,
        samples_per_chunk=args.samples_per_chunk,
        max_text_length=args.max_text_length,
        skip_bad_voices=args.skip_bad_voices,
        max_loaded_voices=args.max_loaded_voices,
        threads=args.threads,
        max_batch=args.max_batch,
        max_queue=args.max_queue,
        phrase_cache=0 if args.no_phrase_cache else args.phrase_cache,
        idle_timeout=args.idle_timeout,
        debug=args.debug,
        http=None
        if args.http_uri is None
        else parse_http(args.http_uri, args.http_token, args.http_ingress, args.http_max_upload_mb),
        watch_interval=args.watch_interval,
    )
    logging.basicConfig(level=logging.DEBUG if args.debug else logging.INFO, format=args.log_format)
    # faiss logs each CPU build it tries (AVX-512, AVX2) at INFO; they read like errors
    logging.getLogger("faiss.loader").setLevel(logging.WARNING)
    return settings.validate()


def main(argv: Sequence[str] | None = None) -> int:
    """Start the server; the exit status: 0 after a clean stop, 2 for a start-up error, 130 for
    Ctrl-C before the server was ready."""
    try:
        return _start(argv)
    except KeyboardInterrupt:
        # Ctrl-C while torch imports or models load: the socket is closed by `_start`
        _LOGGER.info("Interrupted during start-up")
        return 130


def _start(argv: Sequence[str] | None) -> int:
    try:
        settings = settings_from_args(argv)
    except SettingsError as err:
        _LOGGER.error("Cannot start: %s", err)
        return 2
    try:
        listener = bind(parse_uri(settings.uri))  # before the models: a port in use fails now
    except SettingsError as err:
        _LOGGER.error("Cannot start: %s", err)
        return 2
    http_socket = None
    try:
        if settings.http is not None:
            from .web.app import bind_http

            http_socket = bind_http(settings.http)
        return _load_and_serve(settings, listener, http_socket)
    except SettingsError as err:
        _LOGGER.error("Cannot start: %s", err)
        return 2
    finally:
        listener.close()
        if http_socket is not None:
            http_socket.close()


def _load_and_serve(
    settings: Settings, listener: Listener, http_socket: socket.socket | None
) -> int:
    from .engine.build import Engine
    from .engine.pipeline import EngineUnavailableError
    from .scheduling.scheduler import Scheduler
    from .server.handler import ServerContext
    from .web.app import serve_all

    settings = _writable_voices(settings)
    try:
        voices = load_voices(
            settings.voices_dir, frozenset(PRESETS), skip_bad=settings.skip_bad_voices
        )
        if not voices:
            raise VoiceConfigError(settings.voices_dir, "(folder)", "no voice profiles (*.yaml)")
        default_voice = settings.default_voice or next(iter(voices))
        if default_voice not in voices:
            raise SettingsError(
                f"--default-voice {default_voice!r} is not a voice; voices: {', '.join(voices)}"
            )
        plan = ThreadPlan.for_profiles(settings.threads, voices.values())
        engine = Engine(settings)
        voices = engine.start(voices, plan)
        pipeline = engine.pipeline
        if default_voice not in voices:
            default_voice = next(iter(voices))
    except (SettingsError, VoiceConfigError, EngineUnavailableError) as err:
        _LOGGER.error("Cannot start: %s", err)
        return 2

    scheduler = Scheduler(
        pipeline,
        plan,
        max_rows=settings.max_batch,
        max_queue=settings.max_queue,
    )
    _LOGGER.info("Threads: %s", scheduler.plan.describe())
    context = ServerContext.wire(
        pipeline,
        voices,
        default_voice,
        streaming=settings.streaming,
        scheduler=scheduler,
        samples_per_chunk=settings.samples_per_chunk,
        max_text_length=settings.max_text_length,
        idle_timeout=settings.idle_timeout,
        engine=engine,
        folder=None if settings.voices_dir == PACKAGE_VOICES else settings.voices_dir,
        presets=frozenset(PRESETS),
    )
    http = None if settings.http is None or http_socket is None else (settings.http, http_socket)
    try:
        asyncio.run(
            serve_all(
                listener,
                context,
                settings.zeroconf_name,
                http,
                frozenset(PRESETS),
                settings.watch_interval,
            )
        )
    except KeyboardInterrupt:
        pass
    finally:
        finished = scheduler.shutdown(timeout=3.0)
    if not finished:
        # A long synthesis is still inside torch. Everything else is closed (connections,
        # zeroconf); exit now rather than let interpreter teardown abort under a running kernel.
        _LOGGER.info("Abandoning the synthesis in progress")
        logging.shutdown()
        os._exit(0)
    return 0


def _writable_voices(settings: Settings) -> Settings:
    """With the studio on and no voices folder of the user's, `<data-dir>/voices` is made (with
    the example profile), so that voices can be added: the package's own folder is not theirs."""
    if settings.http is None or settings.voices_dir != PACKAGE_VOICES:
        return settings
    folder = settings.data_dir / "voices"
    folder.mkdir(parents=True, exist_ok=True)
    for profile in PACKAGE_VOICES.glob("*.yaml"):
        shutil.copyfile(profile, folder / profile.name)
    _LOGGER.info("Voices folder for the studio: %s (with the example profile)", folder)
    return replace(settings, voices_dir=folder)


def run() -> None:
    sys.exit(main())


if __name__ == "__main__":
    run()
