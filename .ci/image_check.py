"""The checks `.ci/images` runs against a started container.

--port P --voices a,b   a Wyoming client on 127.0.0.1:P: `describe` lists the voices, and each
                        speaks a sentence (audio, one rate, no error), as Home Assistant asks
--supervisor H:P --record FILE
                        a stand-in for Supervisor's discovery API: records what is POSTed
--discovery FILE        the recorded discovery message is run.sh's: service wyoming, its uri
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

from wyoming.client import AsyncTcpClient
from wyoming.info import Describe, Info

from wyoming_wsrvc.devtools.loopback import speak

TEXT = "The kitchen light is on. The weather is sunny today. Have a nice day."


async def check_wyoming(port: int, voices: list[str]) -> None:
    async with AsyncTcpClient("127.0.0.1", port) as client:
        await client.write_event(Describe().event())
        while (event := await client.read_event()) is not None and not Info.is_type(event.type):
            pass
    assert event is not None, "no info"
    offered = [voice.name for voice in Info.from_event(event).tts[0].voices]
    assert sorted(offered) == sorted(voices), offered
    for voice in voices:
        # three sentences: random weights sample their end of speech, so one sentence may be
        # over after a few tokens (seen: 0.16 s with its tail silence); three rarely all are
        heard = await speak(port, TEXT, voice, silence=120)
        assert heard.error is None, heard.error
        assert len(heard.rates) == 1, heard.rates
        assert heard.seconds > 0.5, heard.seconds
        print(
            f"{voice}: {heard.seconds:.2f} s of audio at {min(heard.rates)} Hz, first after {heard.first_audio:.2f} s"
        )


def supervisor(address: str, record: Path) -> None:
    host, port = address.rsplit(":", 1)

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            record.write_bytes(body if self.path == "/discovery" else b"")
            answer = json.dumps({"result": "ok", "data": {"uuid": "0" * 32}}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer)

        def log_message(self, format: str, *args: object) -> None:
            pass

    HTTPServer((host, int(port)), Handler).serve_forever()


def check_discovery(record: Path) -> None:
    message = json.loads(record.read_text())
    assert message["service"] == "wyoming", message
    uri = message["config"]["uri"]
    assert uri.startswith("tcp://"), uri
    assert uri.endswith(":10210"), uri
    print(f"discovery: {message}")


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int)
    parser.add_argument("--voices", default="")
    parser.add_argument("--supervisor")
    parser.add_argument("--record", type=Path)
    parser.add_argument("--discovery", type=Path)
    args = parser.parse_args()
    if args.supervisor:
        supervisor(args.supervisor, args.record)
    elif args.discovery:
        check_discovery(args.discovery)
    else:
        asyncio.run(check_wyoming(args.port, args.voices.split(",")))
    return 0


if __name__ == "__main__":
    sys.exit(main())
