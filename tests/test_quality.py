"""The intelligibility check (speak → Whisper → CER), offline on random weights."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import pytest
import torch

from wyoming_wsrvc.config.registry import ModelUnavailableError, Registry
from wyoming_wsrvc.devtools.__main__ import main as devtools_main
from wyoming_wsrvc.devtools.quality import cer, wer
from wyoming_wsrvc.devtools.random_models import random_models

pytestmark = pytest.mark.slow


def test_cer() -> None:
    assert cer("Hello, world!", "hello world") == 0.0
    assert cer("abcd", "abed") == 0.25
    assert cer("abc", "") == 1.0
    assert cer("", "") == 0.0


def write_random_whisper(path: Path) -> Path:
    import whisper
    from whisper.model import ModelDimensions, Whisper

    assert whisper  # the optional dependency is installed with the test extra
    dims = ModelDimensions(
        n_mels=80,
        n_audio_ctx=1500,
        n_audio_state=64,
        n_audio_head=2,
        n_audio_layer=1,
        n_vocab=51865,
        n_text_ctx=448,
        n_text_state=64,
        n_text_head=2,
        n_text_layer=1,
    )
    torch.manual_seed(0)
    model = Whisper(dims)
    torch.save({"dims": asdict(dims), "model_state_dict": model.state_dict()}, path)
    return path


def test_quality_command_offline(tmp_path: Path) -> None:
    random_models(tmp_path, "tiny")
    checkpoint = write_random_whisper(tmp_path / "whisper-random.pt")
    sentences = tmp_path / "sentences.txt"
    sentences.write_text("Lights on.\nGood night.\n")
    out = tmp_path / "quality.json"
    code = devtools_main(
        [
            "quality",
            "--voice",
            "random",
            "--voice",
            "rvc-v1",
            "--data-dir",
            str(tmp_path),
            "--offline",
            "--whisper",
            str(checkpoint),
            "--sentences",
            str(sentences),
            "--json",
            str(out),
        ]
    )
    assert code == 0
    results = json.loads(out.read_text())
    assert [r["voice"] for r in results] == ["random", "rvc-v1"]
    for result in results:
        assert len(result["sentences"]) == 2
        assert result["cer"] >= 0
        assert all(s["seconds"] > 0 for s in result["sentences"])


def test_whisper_weights_are_not_downloaded_offline(tmp_path: Path) -> None:
    with pytest.raises(
        ModelUnavailableError,
        match=r"offline and Whisper 'base' is not at .*base\.pt: download https://",
    ) as caught:
        Registry(tmp_path, offline=True).whisper_checkpoint("base")
    assert str(tmp_path / "whisper" / "base.pt") in str(caught.value)
    # a CTranslate2 folder (faster-whisper) is taken as it is; a folder without model.bin is not
    folder = tmp_path / "ct2"
    folder.mkdir()
    with pytest.raises(ModelUnavailableError, match="not a Whisper model in CTranslate2 format"):
        Registry(tmp_path, offline=True).whisper_checkpoint(str(folder))
    (folder / "model.bin").write_bytes(b"")
    assert Registry(tmp_path, offline=True).whisper_checkpoint(str(folder)) == folder


def test_word_error_rate() -> None:
    assert wer("It is twenty one degrees.", "it is 21 degrees") == pytest.approx(2 / 5)
    assert wer("Lights on.", "lights on") == 0.0
    assert wer("a b c", "") == 1.0


def test_quality_command_errors_before_loading(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A voice that does not exist, or no Whisper checkpoint offline: one line, exit 2, and the
    default voices folder is the server's (the package's example profile here)."""
    assert devtools_main(["quality", "--voice", "alice", "--data-dir", str(tmp_path)]) == 2
    assert "Unknown voice(s) in " in caplog.text
    assert "example_voices: alice; voices: example" in caplog.text
    caplog.clear()
    assert devtools_main(["quality", "--data-dir", str(tmp_path), "--offline"]) == 2
    errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert len(errors) == 1
    assert errors[0].startswith("Cannot run the quality check: offline and Whisper 'base'")
