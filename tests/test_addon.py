"""The Home Assistant add-on's files against Supervisor's conventions: the manifest and its
option schema, a build that only uses its own folder, the repository file, and run.sh's mapping
of options to server flags (run under bash with a stand-in for bashio)."""

from __future__ import annotations

import json
import os
import re
import shlex
import stat
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import yaml

from wyoming_wsrvc import __version__

from .conftest import REPO

ADDON = REPO / "config" / "addon"
ARCHES = {"amd64", "aarch64", "armv7", "armhf", "i386"}
STARTUP = {"initialize", "system", "services", "application", "once"}
MAP_TYPES = {"config", "ssl", "addons", "backup", "share", "media", "all_addon_configs"}
MAP_TYPES |= {"addon_config", "homeassistant_config"}
# Supervisor's option types (supervisor/addons/options.py): name, optional range or choices, `?`
SCHEMA_TYPE = re.compile(
    r"^(str|bool|email|url|port|password|device|"
    r"(int|float)(\((-?[\d.]+)?,(-?[\d.]+)?\))?|"
    r"str\(\d*,\d*\)|match\(.+\)|list\([^|()]+(\|[^|()]+)*\))\??$"
)


def manifest() -> dict[str, Any]:
    data = yaml.safe_load((ADDON / "config.yaml").read_text())
    assert isinstance(data, dict)
    return data


def valid(value: object, kind: str) -> bool:
    kind = kind.rstrip("?")
    if kind.startswith("list("):
        return value in kind[5:-1].split("|")
    if kind == "bool":
        return isinstance(value, bool)
    if kind.startswith("int"):
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, str)


def test_manifest_follows_supervisor_conventions() -> None:
    config = manifest()
    for key in ("name", "version", "slug", "description", "arch"):
        assert config.get(key), key
    assert re.fullmatch(r"[a-z0-9_]+", config["slug"])
    assert config["version"] == __version__  # the release the image installs
    assert set(config["arch"]) <= ARCHES
    assert config["startup"] in STARTUP
    assert isinstance(config["init"], bool)
    for port in config["ports"]:
        assert re.fullmatch(r"\d+/(tcp|udp)", port)
    for entry in config["map"]:
        kind, _, mode = str(entry).partition(":")
        assert kind in MAP_TYPES
        assert mode in ("", "rw", "ro")
    schema, options = config["schema"], config["options"]
    for name, kind in schema.items():
        assert SCHEMA_TYPE.match(kind), (name, kind)
        if not kind.endswith("?"):
            assert name in options, f"required option {name} has no default"
    for name, value in options.items():
        assert name in schema, name
        if value not in ("", None):
            assert valid(value, schema[name]), (name, value)
    translations = yaml.safe_load((ADDON / "translations" / "en.yaml").read_text())
    assert set(translations["configuration"]) == set(schema)


def test_prebuilt_images_are_the_ones_the_release_publishes() -> None:
    """`image:` names one image per arch ({arch}); the release workflow pushes exactly those
    names, for every arch the add-on lists, tagged with the version Supervisor pulls."""
    config = manifest()
    image = config["image"]
    assert "{arch}" in image
    workflow = (REPO / ".github" / "workflows" / "release.yml").read_text()
    pushed = image.replace("{arch}", "$arch") + ":$version"
    assert pushed in workflow
    for arch in config["arch"]:
        assert f" {arch}:linux/" in workflow or f"for pair in {arch}:" in workflow, arch
    assert 'version="${GITHUB_REF_NAME#v}"' in workflow  # the tag v<version> → <version>


def test_the_studio_opens_through_ingress_only() -> None:
    """The studio is a panel in Home Assistant's sidebar: ingress on its own port, which is not
    published; run.sh listens there for the ingress proxy only (`--http-ingress`)."""
    config = manifest()
    assert config["ingress"] is True
    port = config["ingress_port"]
    assert isinstance(port, int)
    assert 1024 < port < 65536
    assert not any(str(port) in published for published in config["ports"])
    assert config["panel_title"]
    assert config["panel_icon"].startswith("mdi:")
    run = (ADDON / "run.sh").read_text()
    assert f"--http-uri 'http://0.0.0.0:{port}' --http-ingress" in run


def test_voices_folder_is_writable_and_kept_in_backups() -> None:
    """run.sh creates the voices folder under /share: share must be mapped read-write (read-only
    is the default); models are excluded from backups, the voices are not."""
    config = manifest()
    assert "share:rw" in config["map"]
    assert config["options"]["voices_dir"].startswith("/share/")
    assert not any(pattern in ("*.yaml", "*") for pattern in config["backup_exclude"])


def test_build_uses_only_the_addon_folder() -> None:
    """Supervisor's build context is the add-on's folder: everything COPY'd must be in it."""
    dockerfile = (ADDON / "Dockerfile").read_text()
    copies = re.findall(r"^(?:COPY|ADD)\s+(?!--from)(.+)$", dockerfile, re.MULTILINE)
    assert copies
    for line in copies:
        *sources, _ = shlex.split(line)
        for source in sources:
            assert not source.startswith(("/", "..")), source
            assert (ADDON / source).exists(), f"{source} is not in the add-on folder"
    build = yaml.safe_load((ADDON / "build.yaml").read_text())
    assert set(build["build_from"]) == set(manifest()["arch"])
    assert "ARG BUILD_FROM" in dockerfile
    assert "FROM ${BUILD_FROM}" in dockerfile


def test_image_installs_the_cpu_torch_the_package_pins() -> None:
    dockerfile = (ADDON / "Dockerfile").read_text()
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    pins = {
        dep.split("==")[0]: dep.split("==")[1]
        for dep in pyproject["project"]["dependencies"]
        if dep.startswith(("torch==", "torchaudio=="))
    }
    assert set(pins) == {"torch", "torchaudio"}
    arg = re.search(r"^ARG TORCH_VERSION=(\S+)$", dockerfile, re.MULTILINE)
    assert arg is not None
    assert set(pins.values()) == {arg.group(1)}
    assert "ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu" in dockerfile
    # torch comes from the CPU index before the package, so pip does not fetch the CUDA build
    assert dockerfile.index('--index-url "${TORCH_INDEX}"') < dockerfile.index('"${PACKAGE}"')
    assert "v${BUILD_VERSION}.tar.gz" in dockerfile


def test_repository_file() -> None:
    repository = yaml.safe_load((REPO / "repository.yaml").read_text())
    assert repository["name"]
    assert repository["url"].startswith("https://")
    assert repository["maintainer"]
    assert manifest()["url"] == repository["url"]


BASHIO_STUB = """
bashio::config() { "$REAL_PYTHON" -c "$READ_OPTION" "$OPTIONS" "$1"; }
bashio::config.has_value() { [ -n "$(bashio::config "$1")" ]; }
bashio::config.true() { [ "$(bashio::config "$1")" = "true" ]; }
bashio::log.info() { echo "INFO $*" >> "$RECORD"; }
bashio::log.warning() { echo "WARNING $*" >> "$RECORD"; }
bashio::exit.nok() { echo "EXIT $*" >> "$RECORD"; exit 1; }
bashio::discovery() { echo "DISCOVERY $1 $2" >> "$RECORD"; }
"""

# what bashio::config prints: the option's value, booleans as true/false, nothing when unset
READ_OPTION = """
import json, sys
value = json.load(open(sys.argv[1])).get(sys.argv[2])
print("" if value is None else str(value).lower() if isinstance(value, bool) else value)
"""

PYTHON_STUB = """#!/bin/sh
case "$2" in
  wyoming_wsrvc.example_voices) echo "$EXAMPLES" ;;
  wyoming_wsrvc.server.healthcheck) exit 0 ;;
  wyoming_wsrvc) shift 2; for a in "$@"; do printf '%s\\n' "$a"; done > "$FLAGS" ;;
  *) echo "no module $2" >&2; exit 3 ;;
esac
"""


def run_addon(tmp_path: Path, options: dict[str, object]) -> tuple[list[str], str]:
    """run.sh with these options: the server's flags and what it logged."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    python = bin_dir / "python3"
    python.write_text(PYTHON_STUB)
    python.chmod(python.stat().st_mode | stat.S_IEXEC)
    (tmp_path / "bashio.sh").write_text(BASHIO_STUB)
    examples = tmp_path / "examples"
    examples.mkdir(exist_ok=True)
    (examples / "example.yaml").write_text("languages: [en]\n")
    (tmp_path / "options.json").write_text(json.dumps(options))
    env = {
        **os.environ,
        "PATH": f"{bin_dir}:{os.environ['PATH']}",
        "OPTIONS": str(tmp_path / "options.json"),
        "RECORD": str(tmp_path / "record"),
        "FLAGS": str(tmp_path / "flags"),
        "EXAMPLES": str(examples),
        "REAL_PYTHON": sys.executable,
        "READ_OPTION": READ_OPTION,
    }
    script = f"source {tmp_path / 'bashio.sh'}; source {ADDON / 'run.sh'}"
    subprocess.run(["bash", "-c", script], env=env, check=True, timeout=60)
    record = (tmp_path / "record").read_text()
    return (tmp_path / "flags").read_text().splitlines(), record


def test_run_sh_maps_options_to_flags(tmp_path: Path) -> None:
    voices = tmp_path / "share" / "voices"
    options = {
        "voices_dir": str(voices),
        "device": "cpu",
        "default_voice": "",
        "debug_logging": False,
    }
    flags, record = run_addon(tmp_path, options)
    assert flags == [
        "--uri", "tcp://0.0.0.0:10210", "--data-dir", "/data", "--voices", str(voices),
        "--device", "cpu", "--zeroconf",
        "--http-uri", "http://0.0.0.0:8099", "--http-ingress",
    ]  # fmt: skip
    assert (voices / "example.yaml").is_file()  # seeded on first start
    assert "DISCOVERY wyoming" in record
    assert ':10210"}' in record
    options.update(default_voice="alice", threads=1, debug_logging=True, device="auto")
    flags, _ = run_addon(tmp_path, options)
    assert flags[flags.index("--default-voice") + 1] == "alice"
    assert flags[flags.index("--threads") + 1] == "1"
    assert flags[flags.index("--device") + 1] == "auto"
    assert flags[-1] == "--debug"


def test_run_sh_survives_an_unwritable_voices_folder(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")
    options = {"voices_dir": str(blocker / "voices"), "device": "cpu", "debug_logging": False}
    flags, record = run_addon(tmp_path, options)
    assert flags[flags.index("--voices") + 1] == str(tmp_path / "examples")
    assert "WARNING Cannot create" in record


def test_docker_image_can_be_built_cpu_only() -> None:
    """The root image takes torch from PyPI (CUDA) unless TORCH_INDEX names the CPU index; its
    torch version is the package's pin."""
    dockerfile = (REPO / "Dockerfile").read_text()
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    assert (
        f"ARG TORCH_VERSION={pyproject['project']['dependencies'][0].split('==')[1]}" in dockerfile
    )
    assert "--build-arg TORCH_INDEX=https://download.pytorch.org/whl/cpu" in dockerfile
    assert dockerfile.index('--index-url "${TORCH_INDEX}"') < dockerfile.index(
        "pip install --no-cache-dir ."
    )
