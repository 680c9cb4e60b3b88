"""The real peers the tests and the benchmark talk to (installed into `.venv-peers` by
tests/peers/install.sh): wyoming-piper serving the real Piper voice `en_US-joe-medium` offline,
Whisper in CTranslate2 format, and a TCP relay that can cut an upstream off mid-answer.

Standard library only: the Home Assistant suite imports it from its own interpreter.
"""

from __future__ import annotations

import contextlib
import json
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

PIPER_VOICE = "en_US-joe-medium"
INSTALL = "tests/peers/install.sh"


class PeersMissingError(RuntimeError):
    """`.venv-peers` (or one of its parts) is not there."""


@dataclass(frozen=True)
class Peers:
    """Where tests/peers/install.sh put the peers."""

    venv: Path

    @property
    def python(self) -> Path:
        return self.venv / "bin" / "python"

    @property
    def piper_data(self) -> Path:
        """The Piper voice's `.onnx` and `.onnx.json` (wyoming-piper's data folder)."""
        return self.venv / "piper-data"

    @property
    def whisper_base(self) -> Path:
        """Whisper base (multilingual), CTranslate2 format."""
        return self.venv / "whisper-base"

    @property
    def whisper_tiny_en(self) -> Path:
        """Whisper tiny.en, CTranslate2 format."""
        return self.venv / "whisper-tiny.en"

    @classmethod
    def find(cls, repo: Path) -> Peers:
        """The peers of the checkout at `repo`; raises `PeersMissingError` naming the install
        script when any part is missing."""
        peers = cls(repo / ".venv-peers")
        parts = (
            peers.python,
            peers.piper_data / f"{PIPER_VOICE}.onnx",
            peers.whisper_base / "model.bin",
            peers.whisper_tiny_en / "model.bin",
        )
        missing = [str(part) for part in parts if not part.exists()]
        if missing:
            raise PeersMissingError(
                f"the real peers are not installed ({', '.join(missing)} missing): "
                f"run bash {INSTALL}"
            )
        return peers


def free_port() -> int:
    with socket.create_server(("127.0.0.1", 0)) as sock:
        return int(sock.getsockname()[1])


def describe(port: int, timeout: float = 5.0) -> dict[str, object]:
    """The `info` a Wyoming server on loopback `port` answers to `describe` (raises OSError)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(b'{"type": "describe"}\n')
        reader = sock.makefile("rb")
        header = json.loads(reader.readline())
        data_length = int(header.get("data_length") or 0)
        data = json.loads(reader.read(data_length)) if data_length else header.get("data", {})
        if header.get("type") != "info":
            raise OSError(f"answered {header.get('type')!r} to describe")
        return dict(data)


@dataclass
class Piper:
    """A running wyoming-piper; `uri` is its address."""

    process: subprocess.Popen[bytes]
    port: int

    @property
    def uri(self) -> str:
        return f"tcp://127.0.0.1:{self.port}"


@contextlib.contextmanager
def piper(peers: Peers, port: int | None = None, timeout: float = 120.0) -> Iterator[Piper]:
    """wyoming-piper 2.5.2 serving the real Joe voice from `.venv-peers`, offline (no voice list
    update, no zeroconf), on loopback; stopped on exit. Raises RuntimeError if it does not
    answer `describe` within `timeout` seconds."""
    port = port or free_port()
    process = subprocess.Popen(
        [
            *(str(peers.python), "-m", "wyoming_piper", "--voice", PIPER_VOICE),
            *("--data-dir", str(peers.piper_data), "--download-dir", str(peers.piper_data)),
            *("--local-files-only", "--uri", f"tcp://127.0.0.1:{port}"),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                describe(port)
                break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    process.kill()
                    _, err = process.communicate()
                    raise RuntimeError(
                        f"wyoming-piper did not start: {err.decode(errors='replace')[-2000:]}"
                    ) from None
                time.sleep(0.2)
        yield Piper(process, port)
    finally:
        if process.poll() is None:
            process.terminate()  # wyoming-piper stops on SIGTERM
            process.wait()  # no timeout: Home Assistant's blocking-call check forbids its sleeps
        if process.stderr is not None:
            process.stderr.close()


class CutRelay:
    """A TCP relay on loopback in front of a Wyoming server. While `cut_after` is set, every
    connection that asks to `synthesize` is closed after that many bytes of the server's answer
    have been relayed: the server stops mid-answer, as a crashed or restarted peer does.
    `describe` and every other connection pass untouched; `texts` are the texts asked to be
    synthesized, in order."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.cut_after: int | None = None
        self.cuts = 0
        self.texts: list[str] = []
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = int(self._listener.getsockname()[1])
        self._closing = False
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    @property
    def uri(self) -> str:
        return f"tcp://127.0.0.1:{self.port}"

    def close(self) -> None:
        self._closing = True
        self._listener.close()

    def _accept(self) -> None:
        while not self._closing:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            threading.Thread(target=self._relay, args=(client,), daemon=True).start()

    def _relay(self, client: socket.socket) -> None:
        with client, socket.create_connection(("127.0.0.1", self.target_port)) as server:
            reader = client.makefile("rb")
            first = reader.readline()
            try:
                header = json.loads(first)
                data = reader.read(int(header.get("data_length") or 0))
                fields = json.loads(data) if data else header.get("data") or {}
            except ValueError:
                return
            asks = header.get("type") == "synthesize"
            if asks:
                self.texts.append(str(fields.get("text", "")))
            limit = self.cut_after if asks else None
            server.sendall(first + data)
            threading.Thread(target=self._pump, args=(reader, server), daemon=True).start()
            sent = 0
            while True:
                try:
                    data = server.recv(4096)
                except OSError:
                    return
                if not data:
                    return
                if limit is not None and sent + len(data) >= limit:
                    with contextlib.suppress(OSError):
                        client.sendall(data[: max(0, limit - sent)])
                    self.cuts += 1
                    return  # both sockets close: the answer stops here
                sent += len(data)
                try:
                    client.sendall(data)
                except OSError:
                    return

    @staticmethod
    def _pump(reader: BinaryIO, server: socket.socket) -> None:
        """The client's side, after its first event: everything it sends, to the server."""
        while True:
            try:
                data = reader.read1(4096)  # type: ignore[attr-defined]
                if not data:
                    return
                server.sendall(data)
            except (OSError, ValueError):
                return
