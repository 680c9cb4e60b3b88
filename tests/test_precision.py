"""Reduced precision against the exact float32 path, on the parity fixtures: int8 decoder weights
(T2S/S2A logits) and a bfloat16 RVC synthesizer (audio), each bounded; and what `--dtype auto`
picks. The exact path itself is the parity suite."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from wyoming_wsrvc.engine.precision import CpuKind, Precision, resolve_precision
from wyoming_wsrvc.models.int8 import Int8Linear, int8_supported
from wyoming_wsrvc.models.rvc.checkpoint import load_synthesizer, read_voice
from wyoming_wsrvc.models.whisperspeech.checkpoint import kind, load_s2a, load_t2s, read
from wyoming_wsrvc.models.whisperspeech.decoding import generate_acoustic, generate_semantic

from .parity import cases

WS = cases("whisperspeech")
RVC = cases("rvc")
needs_int8 = pytest.mark.skipif(not int8_supported(), reason="no int8 kernel on this CPU")

# Measured on the fixtures (2-core Zen 4): logits within 1.0-1.9 % of their scale, 96-100 % of
# greedy picks unchanged; RVC audio rms error <= 0.005, max <= 0.035 (full scale 1).
INT8_MAX_RELATIVE = 0.04
INT8_ARGMAX_AGREEMENT = 0.9
BF16_RMS, BF16_MAX = 0.01, 0.07


def _forced_logits(entry: dict[str, Any], int8: bool) -> np.ndarray:
    path = entry["_dir"] / entry["checkpoint"]
    forced = entry["forced"]
    rows: list[torch.Tensor] = []
    if kind(read(path)["state_dict"]) == "t2s":
        t2s = load_t2s(path, int8=int8)
        generate_semantic(
            t2s,
            [forced["text"]],
            forced["lang"],
            forced["cps"],
            forced=forced["forced_tokens"],
            on_logits=lambda logits: rows.append(logits[0].clone()),
        )
        rows = rows[: len(forced["forced_tokens"])]
    else:
        s2a = load_s2a(path, int8=int8)
        generate_acoustic(
            s2a,
            [forced["stoks"]],
            torch.tensor([forced["speaker"]]),
            frames=forced["N"],
            forced=forced["forced_samples"],
            on_logits=lambda logits: rows.append(logits[0].clone()),
        )
    return torch.stack(rows).numpy()


@needs_int8
@pytest.mark.skipif(not WS, reason="no WhisperSpeech parity fixtures")
@pytest.mark.parametrize(("name", "entry"), WS, ids=[n for n, _ in WS])
def test_int8_decoders_stay_close_to_float32(name: str, entry: dict[str, Any]) -> None:
    manifest: Path = entry["_manifest"]
    want = np.load(manifest.with_name(manifest.stem + "_logits.npz"))[entry["forced"]["logits_key"]]
    got = _forced_logits(entry, int8=True)
    want = want.reshape(got.shape)
    relative = np.abs(got - want).max() / np.abs(want).max()
    agreement = (got.argmax(-1) == want.argmax(-1)).mean()
    assert relative <= INT8_MAX_RELATIVE, (name, relative)
    assert agreement >= INT8_ARGMAX_AGREEMENT, (name, agreement)
    assert relative > 0  # the reduced path really ran


@pytest.mark.skipif(not RVC, reason="no RVC parity fixtures")
@pytest.mark.parametrize(("name", "case"), RVC, ids=[n for n, _ in RVC])
def test_bfloat16_rvc_stays_close_to_float32(name: str, case: dict[str, Any]) -> None:
    arrays = np.load(case["_npz"])
    data = {k: torch.from_numpy(arrays[v]) for k, v in case["arrays"].items()}
    model = load_synthesizer(read_voice(case["_dir"] / case["checkpoint"]), dtype=torch.bfloat16)
    audio = model.infer(
        data["phone"], data["f0_coarse"], data["f0_hz"], sid=case["sid"], noise=False
    ).audio.float()
    error = audio - data["audio"]
    assert error.pow(2).mean().sqrt() <= BF16_RMS, name
    assert error.abs().max() <= BF16_MAX, name
    assert error.abs().max() > 0


def test_int8_linear_matches_its_float_layer() -> None:
    if not int8_supported():
        pytest.skip("no int8 kernel on this CPU")
    generator = torch.Generator().manual_seed(0)
    linear = torch.nn.Linear(96, 40)
    x = torch.randn(2, 5, 96, generator=generator)
    out = Int8Linear.from_linear(linear)(x)
    assert out.shape == (2, 5, 40)
    assert out.dtype == torch.float32
    assert (out - linear(x)).abs().max() < 0.02 * linear(x).abs().max()


def test_dtype_choices() -> None:
    cpu = torch.device("cpu")
    exact = resolve_precision("float32", cpu)
    assert exact == Precision.uniform(torch.float32)
    assert not exact.decoder_int8
    auto = resolve_precision("auto", cpu)
    assert auto.models == torch.float32
    assert auto.pitch == torch.float32
    assert auto.content == auto.rvc
    assert auto.decoder_int8 == int8_supported()
    assert auto.rvc in (torch.float32, torch.bfloat16)
    assert resolve_precision("auto", torch.device("cuda")) == Precision.uniform(torch.float16)
    assert "int8" in auto.describe() or not auto.decoder_int8


def test_bfloat16_only_where_torch_runs_it_natively() -> None:
    """`auto` picks bfloat16 RVC only when the CPU has native bf16 *and* torch and oneDNN use
    it (an AVX2 run on an AVX-512 machine is AVX2), and says why."""
    zen4 = frozenset({"avx2", "avx512f", "avx512_bf16"})
    assert CpuKind(zen4, "AVX512", None).bf16_fast()[0]
    assert CpuKind(zen4, "AVX512", "ALL").bf16_fast()[0]
    assert CpuKind(zen4, "AVX512", "AVX512_CORE_AMX").bf16_fast()[0]
    fast, why = CpuKind(zen4, "AVX2", None).bf16_fast()
    assert not fast
    assert "ATEN_CPU_CAPABILITY" in why
    fast, why = CpuKind(zen4, "AVX512", "AVX2").bf16_fast()
    assert not fast
    assert "ONEDNN_MAX_CPU_ISA" in why
    fast, why = CpuKind(frozenset({"avx2", "fma"}), "AVX2", None).bf16_fast()
    assert not fast
    assert "no native bfloat16" in why
    assert CpuKind(frozenset({"avx2"}), "AVX2", None).isa == "avx2"
    assert CpuKind(zen4, "AVX512", None).isa == "avx512_bf16"
    here = CpuKind.current()
    auto = resolve_precision("auto", torch.device("cpu"))
    assert (auto.rvc == torch.bfloat16) == here.bf16_fast()[0]
    assert here.bf16_fast()[1] in auto.reason


def test_refinegan_stays_float32_under_auto() -> None:
    auto = resolve_precision("auto", torch.device("cpu"))
    assert auto.synthesizer("RefineGAN") == torch.float32
    assert auto.synthesizer("HiFi-GAN") == auto.rvc
    assert resolve_precision("bfloat16", torch.device("cpu")).synthesizer("RefineGAN") == (
        torch.bfloat16
    )
