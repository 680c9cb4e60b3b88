"""Parity with the upstream RVC code: every RVC and RMVPE case in WSRVC_PARITY_DIR."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from wyoming_wsrvc.models.rvc.checkpoint import load_synthesizer, read_voice
from wyoming_wsrvc.models.rvc.pitch import coarse
from wyoming_wsrvc.models.rvc.rmvpe import Rmvpe, decode

from .parity import PARITY_DIR, cases

RVC = cases("rvc")
RMVPE = cases("rmvpe")


@pytest.mark.skipif(not RVC, reason=f"no RVC parity fixtures in {PARITY_DIR}")
@pytest.mark.parametrize(("name", "case"), RVC, ids=[n for n, _ in RVC])
def test_parity_rvc_synthesizer(name: str, case: dict[str, Any]) -> None:
    voice = read_voice(Path(case["_dir"]) / case["checkpoint"])
    assert voice.version == case["version"]
    assert voice.config.f0 == bool(case["f0"])
    model = load_synthesizer(voice)
    arrays = np.load(case["_npz"])
    data = {k: torch.from_numpy(arrays[v]) for k, v in case["arrays"].items()}
    assert np.array_equal(
        coarse(arrays[case["arrays"]["f0_hz"]].astype(np.float64)),
        arrays[case["arrays"]["f0_coarse"]],
    )
    result = model.infer(
        data["phone"], data["f0_coarse"], data["f0_hz"], sid=case["sid"], noise=False
    )
    assert result.audio.shape[-1] == case["audio_samples"]
    for key in ("m_p", "logs_p", "z", "audio"):
        got, want = getattr(result, key).numpy(), data[key].numpy()
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4, err_msg=f"{name} {key}")


@pytest.mark.skipif(not RMVPE, reason=f"no RMVPE parity fixtures in {PARITY_DIR}")
@pytest.mark.parametrize(("name", "case"), RMVPE, ids=[n for n, _ in RMVPE])
def test_parity_rmvpe(name: str, case: dict[str, Any]) -> None:
    model = Rmvpe(Path(case["_dir"]) / case["checkpoint"])
    arrays = np.load(case["_npz"])
    mel = model.mel(torch.from_numpy(arrays["audio"]))
    np.testing.assert_allclose(mel.numpy(), arrays["mel"], rtol=1e-4, atol=1e-4)
    hidden = model.salience(torch.from_numpy(arrays["mel"]))
    np.testing.assert_allclose(hidden.numpy(), arrays["hidden"], rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(decode(arrays["hidden"], case["threshold"]), arrays["f0"], rtol=1e-6)
    end_to_end = model.f0(torch.from_numpy(arrays["audio"]), case["threshold"])
    np.testing.assert_allclose(end_to_end, arrays["f0"], rtol=1e-4, atol=1e-2)
