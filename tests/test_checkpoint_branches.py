"""Every optional layer of upstream's WhisperSpeech constructors (docs/checkpoint-branches.md):
a random checkpoint in the real format that takes the branch loads strictly and runs, with the
layers upstream's rule says it has. Numbers for each branch against upstream's own code are in
the parity suite (`tests/fixtures/parity`); the refusals are what upstream cannot run either."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from wyoming_wsrvc.devtools.write_whisperspeech import write_s2a, write_t2s
from wyoming_wsrvc.models.whisperspeech.checkpoint import CheckpointError, load_s2a, load_t2s
from wyoming_wsrvc.models.whisperspeech.decoding import generate_acoustic, generate_semantic

# (name, writer arguments, keys that must exist, keys that must not)
S2A_BRANCHES: list[tuple[str, dict[str, Any], set[str], set[str]]] = [
    (
        "speaker projection (width 128 != 192)",
        {"n_head": 2},
        {"spk_to_hidden.weight", "emb_to_hidden.weight", "encoder.0.attn.rotary.inv_freq"},
        {"positional_embeddings"},
    ),
    ("no speaker projection (width 192)", {"n_head": 3}, set(), {"spk_to_hidden.weight"}),
    (
        "conditioned, no speaker projection",
        {"n_head": 3, "conditioned": True},
        {"cond_embeddings.lang.embed.weight"},
        {"cond_embeddings.speaker.spk_to_hidden.weight", "spk_to_hidden.weight"},
    ),
    (
        "conditioned with speaker projection",
        {"n_head": 2, "conditioned": True},
        {"cond_embeddings.speaker.spk_to_hidden.weight"},
        {"spk_to_hidden.weight"},
    ),
    (
        "semantic codebook as wide as the model",
        {"n_head": 2, "config": {"stoks_width": None}},
        set(),
        {"emb_to_hidden.weight", "hidden_to_emb.weight"},
    ),
    (
        "hidden_to_emb: narrower codebook and causal encoder",
        {"n_head": 2, "tunables": {"causal_encoder": True, "force_hidden_to_emb": False}},
        {"hidden_to_emb.weight"},
        set(),
    ),
    (
        "hidden_to_emb: old checkpoint (upgrade() forces it)",
        {"n_head": 2, "tunables": {"force_hidden_to_emb": None}},
        {"hidden_to_emb.weight"},
        set(),
    ),
    (
        "no hidden_to_emb: bidirectional encoder, not forced",
        {"n_head": 2, "tunables": {"force_hidden_to_emb": False}},
        {"emb_to_hidden.weight"},
        {"hidden_to_emb.weight"},
    ),
    (
        "narrower acoustic codebooks (atoks_width)",
        {"n_head": 2, "config": {"atoks_width": 64, "quantizers": 3}},
        {"embds.embeddings.2.emb_to_hidden.weight", "embds.embeddings.0.hidden_to_emb.bias"},
        {"embds.embeddings.3.main.weight"},
    ),
    (
        "no RoPE (stoks_len == ctx_n)",
        {"n_head": 2, "config": {"ctx_n": 90, "stoks_len": 90}, "tunables": {"rope": False}},
        {"positional_embeddings", "embds.positional_embedding"},
        {"encoder.0.attn.rotary.inv_freq", "decoder.layers.0.cross_attn.rotary.inv_freq"},
    ),
]


@pytest.mark.parametrize(
    ("name", "kwargs", "present", "absent"), S2A_BRANCHES, ids=[b[0] for b in S2A_BRANCHES]
)
def test_s2a_branch_loads_strictly_and_runs(
    tmp_path: Path, name: str, kwargs: dict[str, Any], present: set[str], absent: set[str]
) -> None:
    args = {"depth": 2, **kwargs}
    path = write_s2a(tmp_path / "s2a.model", args.pop("depth"), args.pop("n_head"), **args)
    stored = set(torch.load(path, weights_only=True)["state_dict"])
    assert present <= stored, name
    assert not absent & stored, name
    model = load_s2a(path)
    codes = generate_acoustic(model, [[1, 2, 3, 4, 5]], torch.randn(1, 192), frames=12, top_k=1)
    assert codes.shape == (1, model.cfg.quantizers, 8)


@pytest.mark.parametrize(
    ("config", "tunables", "present", "absent"),
    [
        (
            {},
            {},
            {"embeddings.embedding.emb_to_hidden.weight"},
            {"encoder.embedding.emb_to_hidden.weight"},
        ),
        (
            {"ttoks_width": 64, "stoks_width": None},
            {"causal_encoder": False},
            {"encoder.embedding.emb_to_hidden.weight", "encoder.embedding.hidden_to_emb.weight"},
            {"embeddings.embedding.emb_to_hidden.weight"},
        ),
    ],
    ids=["narrow semantic codebook", "narrow byte embeddings, wide semantic codebook"],
)
def test_t2s_branch_loads_strictly_and_runs(
    tmp_path: Path,
    config: dict[str, Any],
    tunables: dict[str, Any],
    present: set[str],
    absent: set[str],
) -> None:
    path = write_t2s(tmp_path / "t2s.model", 2, 2, config=config, tunables=tunables)
    stored = set(torch.load(path, weights_only=True)["state_dict"])
    assert present <= stored
    assert not absent & stored
    model = load_t2s(path)
    assert len(generate_semantic(model, ["Hello there."], max_tokens=10, top_k=1)[0]) == 9


def test_what_upstream_cannot_run_is_refused(tmp_path: Path) -> None:
    cases = {
        write_t2s(tmp_path / "nocps.model", 2, 2, tunables={"cps_input": False}): (
            load_t2s,
            "cps_input=False",
        ),
        write_s2a(
            tmp_path / "s50hz.model", 2, 2, config={"stoks_len": 1500, "stoks_codes": 1025}
        ): (
            load_s2a,
            "stoks_len 1500",
        ),
        write_s2a(tmp_path / "norope.model", 2, 2, tunables={"rope": False}): (
            load_s2a,
            "rope=False with stoks_len 750 != ctx_n 2250",
        ),
    }
    for path, (load, reason) in cases.items():
        with pytest.raises(CheckpointError, match=reason) as caught:
            load(path)
        assert str(path) in str(caught.value)
        assert "\n" not in str(caught.value)
