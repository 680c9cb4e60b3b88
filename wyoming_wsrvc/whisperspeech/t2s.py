"""T2S: UTF-8 text → semantic tokens at 25 Hz (upstream `TSARTransformer`), inference only.

Optional layers follow upstream's constructor (docs/checkpoint-branches.md): projections of the
byte and semantic embeddings only where `ttoks_width`/`stoks_width` differ from the model width.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from .languages import LANGUAGES, to_id
from .layers import (
    HEAD_WIDTH,
    Block,
    Decoder,
    FlexEmbeddings,
    KVCache,
    LayerNorm,
    encoder_decoder_depths,
    prepare_rotary,
)
from .sampling import sample

_LOGGER = logging.getLogger(__name__)


@dataclass(frozen=True)
class T2SConfig:
    depth: int
    n_head: int
    head_width: int = HEAD_WIDTH
    ffn_mult: int = 4
    ttoks_len: int = 550
    ttoks_codes: int = 256
    stoks_len: int = 750
    stoks_codes: int = 513
    stoks_width: int | None = None
    ttoks_width: int | None = None
    output_mult: float = 0.35
    query_mult: float = 1.0
    encoder_depth_ratio: float = 0.25
    causal_encoder: bool = True
    cps_bins: int = 32
    padding_token_offset: int = 0

    @property
    def width(self) -> int:
        return self.n_head * self.head_width

    @property
    def eos(self) -> int:
        """SOT = EOS id: the special id (offset 0) or, for old checkpoints (offset -1), the pad code."""
        return self.stoks_codes + self.padding_token_offset

    @property
    def max_text_bytes(self) -> int:
        return self.ttoks_len - 1  # one position is the leading SOT byte


class TextEncoder(nn.Module):
    def __init__(self, cfg: T2SConfig, depth: int, qk_scale: float) -> None:
        super().__init__()
        self.embedding = FlexEmbeddings(cfg.ttoks_codes, cfg.width, frozen_width=cfg.ttoks_width)
        self.register_buffer("positional_embedding", torch.zeros(cfg.ttoks_len, cfg.width))
        self.layers = nn.ModuleList(
            [
                Block(cfg.width, cfg.n_head, qk_scale, cfg.ffn_mult, cross=False, rope=False)
                for _ in range(depth)
            ]
        )
        self.ln_post = LayerNorm(cfg.width)
        self.causal = cfg.causal_encoder

    def forward(self, ttoks: Tensor, lang_emb: Tensor) -> Tensor:
        positions = torch.arange(ttoks.shape[1], device=ttoks.device)
        pos: Tensor = self.positional_embedding  # type: ignore[assignment]
        x = self.embedding(ttoks) + lang_emb + pos[positions]
        for layer in self.layers:
            x = layer(x, positions, causal=self.causal)
        result: Tensor = self.ln_post(x)
        return result


class T2SEmbeddings(nn.Module):
    def __init__(self, cfg: T2SConfig) -> None:
        super().__init__()
        self.embedding = FlexEmbeddings(
            cfg.stoks_codes, cfg.width, special_codes=1, frozen_width=cfg.stoks_width
        )
        self.register_buffer("positional_embedding", torch.zeros(cfg.stoks_len, cfg.width))


class T2S(nn.Module):
    """Text-to-semantic transformer. State-dict keys equal upstream's."""

    def __init__(self, cfg: T2SConfig) -> None:
        super().__init__()
        self.cfg = cfg
        qk_scale = cfg.query_mult * 8 / math.sqrt(cfg.head_width)
        enc_depth, dec_depth = encoder_decoder_depths(cfg.depth, cfg.encoder_depth_ratio)
        self.lang_embeddings = nn.Embedding(len(LANGUAGES), cfg.width)
        self.cps_embeddings = nn.Embedding(cfg.cps_bins, cfg.width)
        self.encoder = TextEncoder(cfg, enc_depth, qk_scale)
        self.embeddings = T2SEmbeddings(cfg)
        self.decoder = Decoder(dec_depth, cfg.width, cfg.n_head, qk_scale, cfg.ffn_mult, rope=False)
        self.logit_scale = cfg.output_mult / (cfg.width / (3 * cfg.head_width))

    def prepare(self, int8: bool = False) -> None:
        """Once after loading: fused decode-step projections, int8 decoder weights with `int8`,
        the rotary tables."""
        prepare_rotary(self, self.dtype)
        self.decoder.prepare(int8)

    @property
    def device(self) -> torch.device:
        return self.lang_embeddings.weight.device

    @property
    def dtype(self) -> torch.dtype:
        return self.lang_embeddings.weight.dtype

    def encode_text(self, texts: Sequence[str]) -> Tensor:
        """UTF-8 bytes after a leading SOT byte 0, right-padded with 0 to `ttoks_len`: (b, 550)."""
        rows = []
        for text in texts:
            data = list(text.strip().encode("utf-8"))
            if len(data) > self.cfg.max_text_bytes:
                raise ValueError(
                    f"text of {len(data)} bytes is over the model's {self.cfg.max_text_bytes}; "
                    "split it first"
                )
            rows.append([0, *data] + [0] * (self.cfg.ttoks_len - len(data) - 1))
        return torch.tensor(rows, dtype=torch.long, device=self.device)

    def cps_embedding(self, cps: float, batch: int) -> Tensor:
        """Speaking-rate condition: bin int(cps / 20 * bins), clamped to the last bin."""
        index = min(int(cps / 20 * self.cfg.cps_bins), self.cfg.cps_bins - 1)
        ids = torch.full((batch,), index, dtype=torch.long, device=self.device)
        result: Tensor = self.cps_embeddings(ids).unsqueeze(1)
        return result

    def logits(self, x: Tensor) -> Tensor:
        return self.embeddings.embedding.unembed(x) * self.logit_scale

    def decode_step(
        self,
        toks: Tensor,
        positions: Tensor,
        cps_emb: Tensor,
        caches: list[KVCache],
        cross: list[tuple[Tensor, Tensor]],
    ) -> Tensor:
        """Logits (b, n, 514) for tokens `toks` (b, n) at `positions` (n,)."""
        pos: Tensor = self.embeddings.positional_embedding  # type: ignore[assignment]
        x = self.embeddings.embedding(toks) + pos[positions] + cps_emb
        return self.logits(self.decoder.step(x.to(self.dtype), positions, caches, cross))

    @torch.inference_mode()
    def generate(
        self,
        texts: Sequence[str],
        language: str = "en",
        cps: float = 15.0,
        max_tokens: int | Sequence[int] | None = None,
        temperature: float = 0.7,
        top_k: int | None = None,
        generator: torch.Generator | None = None,
        forced: Sequence[int] | None = None,
        on_logits: Callable[[Tensor], None] | None = None,
    ) -> list[list[int]]:
        """Semantic tokens (25 Hz) for each text, generated as one batch.

        Mirrors upstream: SOT/EOS start token, at most `max_tokens - 1` tokens (default
        `stoks_len`; one limit per row if a sequence), a row stops at its first EOS (included in
        its result, as upstream returns it). `forced` (teacher forcing) and `on_logits` exist
        for parity checks.
        """
        batch = len(texts)
        if max_tokens is None or isinstance(max_tokens, int):
            limits = [max_tokens or self.cfg.stoks_len] * batch
        else:
            limits = list(max_tokens)
        limits = [min(limit, self.cfg.stoks_len) for limit in limits]
        n_max = max(limits)
        ttoks = self.encode_text(texts)
        lang = torch.full((batch,), to_id(language), dtype=torch.long, device=self.device)
        xenc = self.encoder(ttoks, self.lang_embeddings(lang).unsqueeze(1).to(self.dtype))
        cross = self.decoder.cross_kv(xenc, torch.arange(xenc.shape[1], device=self.device))
        caches = self.decoder.new_caches(batch, self.cfg.stoks_len, xenc)
        cps_emb = self.cps_embedding(cps, batch).to(self.dtype)
        positions = torch.arange(n_max, device=self.device)
        current = torch.full((batch, 1), self.cfg.eos, dtype=torch.long, device=self.device)
        out: list[list[int]] = [[] for _ in range(batch)]
        done = torch.zeros(batch, dtype=torch.bool, device=self.device)
        for step in range(n_max - 1):
            logits = self.decode_step(current, positions[step : step + 1], cps_emb, caches, cross)
            logits = logits[:, -1]
            if on_logits is not None:
                on_logits(logits)
            if forced is not None:
                if step >= len(forced):
                    break
                nxt = torch.full((batch,), forced[step], dtype=torch.long, device=self.device)
            else:
                nxt = sample(logits, temperature, top_k, generator)
            for row in range(batch):
                if not done[row]:
                    out[row].append(int(nxt[row]))
            done |= nxt == self.cfg.eos
            done |= torch.tensor(
                [len(row) >= limits[i] - 1 for i, row in enumerate(out)], device=self.device
            )
            if forced is None and bool(done.all()):
                break
            current = nxt[:, None]
        return out
