"""Parity with upstream WhisperSpeech: every case of every manifest in WSRVC_PARITY_DIR.

T2S tokens and S2A code grids exactly, logits to 1e-4 (relative to their scale).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch

from wyoming_wsrvc.models.whisperspeech.checkpoint import kind, load_s2a, load_t2s, read
from wyoming_wsrvc.models.whisperspeech.decoding import generate_acoustic, generate_semantic

from .parity import PARITY_DIR, all_cases, cases

ENTRIES = cases("whisperspeech")
needs_parity = pytest.mark.skipif(not ENTRIES, reason=f"no parity fixtures in {PARITY_DIR}")


class Rows(list[torch.Tensor]):
    """Collects the first batch row of each logits tensor the model reports."""

    def append_row(self, logits: torch.Tensor) -> None:
        self.append(logits[0].clone())


def _logits(entry: dict[str, Any], key: str) -> np.ndarray:
    manifest = entry["_manifest"]
    npz = np.load(manifest.with_name(manifest.stem + "_logits.npz"))
    result: np.ndarray = npz[key]
    return result


def _close(actual: list[torch.Tensor], expected: np.ndarray) -> None:
    got = torch.stack([a.reshape(expected.shape[1:]) for a in actual]).numpy()
    assert got.shape == expected.shape
    scale = max(1.0, float(np.abs(expected).max()))
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4 * scale)


def test_every_parity_case_has_a_test() -> None:
    """A fixture of a kind no test knows must fail here, not be skipped."""
    unknown = [name for kind, name, _ in all_cases() if kind == "unknown"]
    assert not unknown, f"parity cases of no known kind: {unknown}"


@needs_parity
@pytest.mark.parametrize(("name", "entry"), ENTRIES, ids=[n for n, _ in ENTRIES])
def test_parity(name: str, entry: dict[str, Any]) -> None:
    path = entry["_dir"] / entry["checkpoint"]
    found = kind(read(path)["state_dict"])
    if found == "t2s":
        model = load_t2s(path)
        for case in entry["cases"]:
            seen = Rows()
            tokens = generate_semantic(
                model,
                [case["text"]],
                case["lang"],
                case["cps"],
                max_tokens=case["N"],
                temperature=case["T"],
                top_k=case["top_k"],
                on_logits=seen.append_row,
            )[0]
            assert tokens == case["tokens"]
            _close([seen[i] for i in case["logits_steps"]], _logits(entry, case["logits_key"]))
        forced = entry["forced"]
        seen = Rows()
        generate_semantic(
            model,
            [forced["text"]],
            forced["lang"],
            forced["cps"],
            forced=forced["forced_tokens"],
            on_logits=seen.append_row,
        )
        _close(seen[: len(forced["forced_tokens"])], _logits(entry, forced["logits_key"]))
    else:
        s2a = load_s2a(path)
        for case in entry["cases"]:
            seen = Rows()
            codes = generate_acoustic(
                s2a,
                [case["stoks"]],
                torch.tensor([case["speaker"]]),
                frames=case["N"],
                temperature=case["T"],
                top_k=case["top_k"],
                on_logits=seen.append_row,
            )[0]
            assert codes.tolist() == case["codes"]
            _close([seen[i] for i in case["logits_steps"]], _logits(entry, case["logits_key"]))
        forced = entry["forced"]
        seen = Rows()
        codes = generate_acoustic(
            s2a,
            [forced["stoks"]],
            torch.tensor([forced["speaker"]]),
            frames=forced["N"],
            forced=forced["forced_samples"],
            on_logits=seen.append_row,
        )[0]
        assert codes.tolist() == forced["codes"]
        _close(seen, _logits(entry, forced["logits_key"]))
