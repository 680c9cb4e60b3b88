"""Start-up checks that answer before any model loads: the URI, the socket, the dtype, and the
model files (all missing files listed at once, with where to put them)."""

from __future__ import annotations

import socket
import time
from pathlib import Path

import pytest

from wyoming_wsrvc.config import registry as registry_module
from wyoming_wsrvc.config.registry import ModelUnavailableError, Registry
from wyoming_wsrvc.config.uri import parse_uri
from wyoming_wsrvc.config.voices import load_voices
from wyoming_wsrvc.engine.build import needed_refs
from wyoming_wsrvc.engine.precision import resolve_precision
from wyoming_wsrvc.errors import SettingsError
from wyoming_wsrvc.server.listener import bind

RVC_PROFILE = """\
languages: [en]
whisperspeech: {preset: fast}
rvc: {model: voice.pth, f0_method: rmvpe}
"""


@pytest.mark.parametrize(
    ("uri", "why"),
    [
        ("10210", "no scheme"),
        ("localhost:10210", "no scheme"),
        ("tcp://127.0.0.1", "no port"),
        ("tcp://127.0.0.1:99999", "the port is not a number from 0 to 65535"),
        ("tcp://:10210", "no host"),
        ("http://127.0.0.1:10210", "unknown scheme 'http'"),
        ("unix://", "no socket path"),
    ],
)
def test_malformed_uri_is_one_line(uri: str, why: str) -> None:
    with pytest.raises(SettingsError) as caught:
        parse_uri(uri)
    message = str(caught.value)
    assert message.startswith(f"--uri {uri!r}: {why}; use e.g. tcp://0.0.0.0:10210")
    assert "\n" not in message


def test_good_uris() -> None:
    assert parse_uri("tcp://0.0.0.0:10210").port == 10210
    assert parse_uri("tcp://[::1]:10210").host == "::1"
    assert parse_uri("unix:///run/x.sock").path == "/run/x.sock"
    assert parse_uri("stdio://").scheme == "stdio"


def test_port_in_use_is_refused_before_loading(tmp_path: Path) -> None:
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        with pytest.raises(SettingsError, match="Address already in use") as caught:
            bind(parse_uri(f"tcp://127.0.0.1:{port}"))
    assert "another server" in str(caught.value)
    listener = bind(parse_uri("tcp://127.0.0.1:0"))
    try:
        assert listener.port is not None
        assert listener.port > 0
        with socket.create_connection(("127.0.0.1", listener.port), timeout=2):
            pass  # accepted by the kernel's backlog while the models would load
    finally:
        listener.close()
    path = tmp_path / "s.sock"
    path.write_text("stale")  # left by an earlier run: replaced
    unix = bind(parse_uri(f"unix://{path}"))
    unix.close()
    assert not path.exists()


def test_float16_on_the_cpu_is_refused() -> None:
    import torch

    with pytest.raises(SettingsError, match="float16 cannot run on the CPU"):
        resolve_precision("float16", torch.device("cpu"))
    assert resolve_precision("bfloat16", torch.device("cpu")).rvc == torch.bfloat16


@pytest.fixture
def rvc_voices(tmp_path: Path) -> Path:
    voices = tmp_path / "voices"
    voices.mkdir()
    (voices / "v.yaml").write_text(RVC_PROFILE)
    (voices / "voice.pth").write_bytes(b"not read for the listing")
    return voices


def test_offline_lists_every_missing_file(tmp_path: Path, rvc_voices: Path) -> None:
    registry = Registry(tmp_path, offline=True)
    refs = needed_refs(registry, load_voices(rvc_voices))
    with pytest.raises(ModelUnavailableError) as caught:
        registry.ensure(refs)
    message = str(caught.value)
    assert message.startswith("6 model file(s) missing and offline (--offline)")
    for wanted in (
        "charactr/vocos-encodec-24khz/resolve/main/config.yaml",
        "charactr/vocos-encodec-24khz/resolve/main/pytorch_model.bin",
        "collabora/whisperspeech/resolve/main/t2s-base-en+pl.model",
        "collabora/whisperspeech/resolve/main/s2a-q4-tiny-en+pl.model",
        "lj1995/VoiceConversionWebUI/resolve/main/hubert_base.pt",
        "lj1995/VoiceConversionWebUI/resolve/main/rmvpe.pt",
    ):
        assert f"https://huggingface.co/{wanted}" in message
    assert f"-> {tmp_path}/collabora/whisperspeech/t2s-base-en+pl.model" in message


def test_a_file_put_where_the_error_says_is_used(tmp_path: Path, rvc_voices: Path) -> None:
    registry = Registry(tmp_path, offline=True)
    placed = tmp_path / "collabora" / "whisperspeech" / "t2s-base-en+pl.model"
    placed.parent.mkdir(parents=True)
    placed.write_bytes(b"weights")
    assert registry.resolve("collabora/whisperspeech:t2s-base-en+pl.model") == placed
    (tmp_path / "rmvpe.pt").write_bytes(b"weights")  # the shared models' own local names
    missing = registry.missing(needed_refs(registry, load_voices(rvc_voices)))
    assert [str(hub) for hub in missing] == [
        "charactr/vocos-encodec-24khz:config.yaml",
        "charactr/vocos-encodec-24khz:pytorch_model.bin",
        "collabora/whisperspeech:s2a-q4-tiny-en+pl.model",
        "lj1995/VoiceConversionWebUI:hubert_base.pt",
    ]


def test_unresolvable_host_fails_at_once(
    tmp_path: Path, rvc_voices: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No retries against a host that does not resolve (`.invalid` never does): one error
    listing every file, within seconds."""
    monkeypatch.setattr(registry_module, "hub_endpoint", lambda: "https://models.invalid")
    registry = Registry(tmp_path, offline=False)
    started = time.monotonic()
    with pytest.raises(ModelUnavailableError) as caught:
        registry.ensure(needed_refs(registry, load_voices(rvc_voices)))
    assert time.monotonic() - started < 10
    message = str(caught.value)
    assert message.startswith("6 model file(s) missing and cannot resolve models.invalid")
    assert "https://models.invalid/charactr/vocos-encodec-24khz/resolve/main/config.yaml" in message
    assert not (tmp_path / "hf").exists()  # nothing was attempted


def test_download_log_lines_appear_once() -> None:
    """huggingface_hub logs through its own handler and the root logger (every retry line
    twice); before downloading the registry leaves only the root logger's."""
    import logging

    import huggingface_hub  # noqa: F401  (installs its handler)

    hub_logger = logging.getLogger("huggingface_hub")
    hub_logger.addHandler(logging.StreamHandler())
    registry_module._quiet_hub_logging()
    assert hub_logger.handlers == []
    assert hub_logger.propagate
