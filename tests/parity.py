"""The parity fixtures: every case of every `*parity.json` manifest in WSRVC_PARITY_DIR and below,
and in this repository's `tests/fixtures/parity` (vectors of upstream code for what the shared set
does not cover, with the script that made them).

Each case is sorted by what it holds (a WhisperSpeech checkpoint entry, an RVC synthesizer case,
an RMVPE case); a case of no known kind fails `test_every_parity_case_has_a_test` instead of
being skipped silently. Test ids name the manifest (relative to the folder) and the case.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
PARITY_DIR = Path(os.environ.get("WSRVC_PARITY_DIR", REPO.parent / "shared" / "parity"))
OWN_PARITY_DIR = REPO / "tests" / "fixtures" / "parity"

Case = tuple[str, dict[str, Any]]


def case_kind(case: dict[str, Any]) -> str:
    if "cases" in case and "forced" in case:
        return "whisperspeech"
    if "phone" in case.get("arrays", {}):
        return "rvc"
    if "e2e_kwargs" in case and "threshold" in case:
        return "rmvpe"
    return "unknown"


def all_cases() -> list[tuple[str, str, dict[str, Any]]]:
    """(kind, id, case) for every case; the case gains `_dir`, `_manifest` and `_npz`."""
    out = []
    for root, prefix in ((PARITY_DIR, ""), (OWN_PARITY_DIR, "own/")):
        if not root.is_dir():
            continue
        for manifest in sorted(root.rglob("*parity.json")):
            data = json.loads(manifest.read_text())
            if "checkpoint" in data:  # a single-case manifest (RMVPE)
                data = {manifest.stem: data}
            for key, case in data.items():
                name = f"{prefix}{manifest.relative_to(root).as_posix()}:{key}"
                extra = {"_dir": manifest.parent, "_manifest": manifest}
                extra["_npz"] = manifest.with_suffix(".npz")
                out.append((case_kind(case), name, {**case, **extra}))
    return out


def cases(kind: str) -> list[Case]:
    return [(name, case) for found, name, case in all_cases() if found == kind]
