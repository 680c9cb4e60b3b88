"""WhisperSpeech engine: checkpoint formats, the published key sets, vocoder, generation rules."""

from __future__ import annotations

import json
import pickle
import re
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from wyoming_wsrvc.config.voices import VoiceProfile, WhisperSpeechParams
from wyoming_wsrvc.devtools.write_vocos import VOCOS_TINY, write_vocos
from wyoming_wsrvc.devtools.write_whisperspeech import (
    S2A_TUNABLES,
    T2S_TUNABLES,
    write_s2a,
    write_t2s,
)
from wyoming_wsrvc.engine.pipeline import Pipeline
from wyoming_wsrvc.engine.whisperspeech import TokenBudget, WhisperSpeechStage, token_budget
from wyoming_wsrvc.models.vocos import Vocoder, VocoderError
from wyoming_wsrvc.models.whisperspeech.checkpoint import (
    CheckpointError,
    load_s2a,
    load_t2s,
    s2a_from_spec,
    t2s_from_spec,
)
from wyoming_wsrvc.models.whisperspeech.decoding import generate_semantic
from wyoming_wsrvc.models.whisperspeech.s2a import valid_codes
from wyoming_wsrvc.models.whisperspeech.speaker import SpeakerError, default_speaker, load_speaker

from .parity import PARITY_DIR

INVENTORY = PARITY_DIR / "whisperspeech_state_dict_inventory.json"


def _inventory() -> dict[str, dict[str, list[int]]]:
    if not INVENTORY.is_file():
        return {}
    data: dict[str, dict[str, list[int]]] = json.loads(INVENTORY.read_text())
    return data


@pytest.mark.skipif(not INVENTORY.is_file(), reason=f"no inventory in {PARITY_DIR}")
@pytest.mark.parametrize("name", sorted(_inventory()))
def test_published_key_sets_load(name: str) -> None:
    """Every key set and shape of the published sizes loads strictly (on the meta device)."""
    keys = _inventory()[name]
    width = keys["lang_embeddings.weight"][1] if "t2s" in name else keys["emb_to_hidden.weight"][0]
    layers = {m.group(0) for k in keys if (m := re.match(r"(en|de)coder\.(layers\.)?\d+\.", k))}
    depth = len(layers) // 2
    state = {
        k: torch.empty(shape, device="meta") for k, shape in keys.items() if k != "_extra_state"
    }
    if "_extra_state" in keys:
        state["_extra_state"] = {"speaker_map": {"1": 0}}  # type: ignore[assignment]
    with torch.device("meta"):
        if name.startswith("t2s"):
            config = {"depth": depth, "n_head": width // 64, "stoks_width": 64}
            spec = {"config": config, "tunables": T2S_TUNABLES, "state_dict": state}
            model = t2s_from_spec(name, spec)
            assert model.cfg.width == width
        else:
            config = {"depth": depth, "n_head": width // 64, "stoks_width": 64, "spk_width": 192}
            spec = {"config": config, "tunables": S2A_TUNABLES, "state_dict": state}
            model = s2a_from_spec(name, spec)  # type: ignore[assignment]
    assert {k: list(v.shape) for k, v in model.state_dict().items()} == {
        k: v for k, v in keys.items() if k != "_extra_state"
    }


def test_fp16_and_legacy_checkpoints(tmp_path: Path) -> None:
    s2a = load_s2a(write_s2a(tmp_path / "s2a.model", 2, 2, conditioned=True, half=True))
    assert s2a.dtype == torch.float32
    assert s2a.cfg.conditioned
    legacy = load_t2s(write_t2s(tmp_path / "legacy.model", 2, 2, legacy=True))
    assert legacy.cfg.padding_token_offset == -1
    assert legacy.cfg.eos == 512
    modern = load_t2s(write_t2s(tmp_path / "t2s.model", 2, 2))
    assert modern.cfg.eos == 513


class Evil:
    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (print, ("pwned",))


def test_bad_checkpoints_are_refused(tmp_path: Path) -> None:
    good = write_t2s(tmp_path / "t2s.model", 2, 2)
    truncated = tmp_path / "truncated.model"
    truncated.write_bytes(good.read_bytes()[:5000])
    evil = tmp_path / "evil.model"
    with evil.open("wb") as f:
        pickle.dump({"config": {}, "state_dict": Evil()}, f)
    foreign = tmp_path / "foreign.model"
    torch.save({"weights": torch.zeros(3)}, foreign)
    spec = torch.load(good, weights_only=True)
    spec["state_dict"]["extra.weight"] = torch.zeros(2)
    extra = tmp_path / "extra.model"
    torch.save(spec, extra)
    cases = {
        truncated: "not a loadable",
        evil: "not a loadable",
        foreign: "missing 'config'",
        extra: "unexpected",
        tmp_path / "missing.model": "not found",
    }
    for path, reason in cases.items():
        with pytest.raises(CheckpointError, match=reason):
            load_t2s(path)
    with pytest.raises(CheckpointError, match="not an S2A"):
        load_s2a(good)


def test_vocoder_decodes_codes(tmp_path: Path) -> None:
    folder = write_vocos(tmp_path / "vocos", VOCOS_TINY)
    vocoder = Vocoder(folder / "config.yaml", folder / "pytorch_model.bin")
    audio = vocoder.decode(torch.randint(0, 1024, (4, 30)))
    assert audio.rate == 24000
    assert len(audio) == 30 * 320
    assert np.isfinite(audio.samples).all()
    assert np.abs(audio.samples).max() > 0
    assert len(vocoder.decode(torch.randint(0, 1024, (2, 10)))) == 3200  # 1.5 kbps
    config = yaml.safe_load((folder / "config.yaml").read_text())
    config["head"]["class_path"] = "os.system"
    (folder / "config.yaml").write_text(yaml.safe_dump(config))
    with pytest.raises(VocoderError, match="only"):
        Vocoder(folder / "config.yaml", folder / "pytorch_model.bin")


def test_valid_codes_removes_special_ids() -> None:
    codes = torch.tensor([[[5, 1024, 7, 1025], [1025, 3, 1024, 9]]])
    assert valid_codes(codes).tolist() == [[[5, 5, 7, 7], [0, 3, 3, 9]]]


def test_speaker_files(tmp_path: Path) -> None:
    assert default_speaker().shape == (192,)
    np.save(tmp_path / "ok.npy", np.ones(192, dtype=np.float32))
    assert load_speaker(tmp_path / "ok.npy").sum() == 192
    torch.save(torch.ones(1, 192), tmp_path / "ok.pt")
    assert load_speaker(tmp_path / "ok.pt").shape == (192,)
    np.save(tmp_path / "short.npy", np.ones(10, dtype=np.float32))
    with pytest.raises(SpeakerError, match="192"):
        load_speaker(tmp_path / "short.npy")


@pytest.fixture(scope="module")
def stage(
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[WhisperSpeechStage, WhisperSpeechParams]:
    folder = tmp_path_factory.mktemp("ws")
    vocos = write_vocos(folder / "vocos", VOCOS_TINY)
    stage = WhisperSpeechStage(
        Vocoder(vocos / "config.yaml", vocos / "pytorch_model.bin"),
        torch.device("cpu"),
        torch.float32,
    )
    params = WhisperSpeechParams(temperature=0.0)
    stage.bind(params, write_t2s(folder / "t2s.model", 2, 2), write_s2a(folder / "s2a.model", 2, 2))
    return stage, params


def _speak(
    ws: WhisperSpeechStage,
    params: WhisperSpeechParams,
    voices: dict[str, VoiceProfile],
    texts: list[str],
) -> list[np.ndarray]:
    """`texts` generated together through the engine (`Pipeline`: the server's steps, inline),
    as int16 samples at 24 kHz."""
    profile = replace(voices["alice"], whisperspeech=params)
    pcm = Pipeline(ws).synthesize_sentences(texts, profile)
    assert all(p.rate == 24000 for p in pcm)
    return [np.frombuffer(p.data, "<i2") for p in pcm]


def test_audio_length_follows_tokens(
    stage: tuple[WhisperSpeechStage, WhisperSpeechParams], voices: dict[str, VoiceProfile]
) -> None:
    ws, params = stage
    pair = ws.pair(params)
    text = "Hello there, this is a test."
    tokens = generate_semantic(
        pair.t2s,
        [text],
        "en",
        params.speaking_rate,
        temperature=0.0,
        max_tokens=token_budget(text, params.speaking_rate, 750),
    )[0]
    stoks = [t for t in tokens if t < 512]
    (audio,) = _speak(ws, params, voices, [text])
    assert stoks
    assert len(audio) == (3 * len(stoks) - 4) * 320


def test_batch_equals_single(
    stage: tuple[WhisperSpeechStage, WhisperSpeechParams], voices: dict[str, VoiceProfile]
) -> None:
    ws, params = stage
    texts = ["Short one.", "A somewhat longer second sentence here.", "Third."]
    batch = _speak(ws, params, voices, texts)
    singles = [_speak(ws, params, voices, [t])[0] for t in texts]
    for b, s in zip(batch, singles, strict=True):
        assert len(b) == len(s)
        assert len(b)
        assert np.abs(b.astype(np.int32) - s).max() <= 4  # 1e-4 of full scale


def test_long_text_is_not_truncated(
    stage: tuple[WhisperSpeechStage, WhisperSpeechParams],
    voices: dict[str, VoiceProfile],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    ws, params = stage
    text = "word " * 120  # 600 bytes: over the model's 549-byte window
    pieces = ws.fit(text, ws.pair(params).t2s)
    assert len(pieces) == 2
    assert all(len(p.encode()) <= ws.max_text_bytes for p in pieces)
    assert " ".join(pieces).split() == text.split()
    # Spoken in pieces of 60 bytes, each a quarter of its natural length (random weights run
    # to their budget): ten pieces, every one of which must be heard.
    monkeypatch.setattr(ws, "max_text_bytes", 60)
    monkeypatch.setattr(ws, "budget", TokenBudget(0.25, 0, 1))
    pieces = ws.fit(text, ws.pair(params).t2s)
    assert len(pieces) == 10
    (audio,) = _speak(ws, params, voices, [text])
    one = token_budget(pieces[0], params.speaking_rate, 750, ws.budget) / 25
    assert len(audio) / 24000 > len(pieces) / 2 * one


def test_token_budget() -> None:
    assert token_budget("x" * 13, 13.0, 750) == 75  # 1 s expected -> max(2 s + 1 s, 2 s)
    assert token_budget("x" * 2000, 13.0, 750) == 750
