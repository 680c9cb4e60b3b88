"""T2S: UTF-8 text → semantic tokens at 25 Hz (upstream `TSARTransformer`), inference only.

Optional layers follow upstream's constructor (docs/checkpoint-branches.md): projections of the
byte and semantic embeddings only where `ttoks_width`/`stoks_width` differ from the model width.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from .languages import LANGUAGES, to_id
from .layers import (
    HEAD_WIDTH,
    Block,
    Decoder,
    FlexEmbeddings,
    LayerNorm,
    RowBatch,
    RowCache,
    encoder_decoder_depths,
    prepare_rotary,
)
from .sampling import Sampling

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

    def encode(self, texts: Sequence[str], language: str) -> list[tuple[Tensor, Tensor]]:
        """The decoder's cross-attention keys/values for each text (one pair per layer)."""
        ttoks = self.encode_text(texts)
        lang = torch.full((len(texts),), to_id(language), dtype=torch.long, device=self.device)
        xenc = self.encoder(ttoks, self.lang_embeddings(lang).unsqueeze(1).to(self.dtype))
        return self.decoder.cross_kv(xenc, torch.arange(xenc.shape[1], device=self.device))


@dataclass(eq=False)
class T2SRow:
    """One text being decoded: its semantic tokens so far (the last may be EOS)."""

    steps: int  # the most tokens it may take
    sampling: Sampling
    until_eos: bool = True
    tokens: list[int] = field(default_factory=list)
    done: bool = False


class T2SBatch(RowBatch[T2SRow]):
    """Rows of one T2S model decoded together, each at its own position with its own speaking
    rate and sampling: rows join (`add`) and leave (when done) between steps. A step is
    `forward` (logits of every row) then `accept` (the ids picked)."""

    def __init__(self, model: T2S) -> None:
        super().__init__(RowCache(model.decoder))
        self.model = model
        self._cps = torch.zeros(0, 1, model.cfg.width, dtype=model.dtype, device=model.device)
        self._last = torch.zeros(0, dtype=torch.long, device=model.device)

    @torch.inference_mode()
    def add(
        self,
        texts: Sequence[str],
        language: str,
        cps: float,
        limits: Sequence[int],
        sampling: Sampling,
        until_eos: bool = True,
    ) -> list[T2SRow]:
        """Encode `texts` and add them as rows (a row may take `limit - 1` tokens)."""
        cfg = self.model.cfg
        rows = [T2SRow(min(limit, cfg.stoks_len) - 1, sampling, until_eos) for limit in limits]
        for row in rows:
            row.done = row.steps <= 0
        live = [i for i, row in enumerate(rows) if not row.done]
        if live:
            longest = max(rows[i].steps for i in live) + 1  # positions the longest row may use
            self.cache.add(self.model.encode([texts[i] for i in live], language), longest)
            cps_emb = self.model.cps_embedding(cps, len(live)).to(self.model.dtype)
            self._cps = torch.cat([self._cps, cps_emb])
            start = torch.full((len(live),), cfg.eos, dtype=torch.long, device=self.model.device)
            self._last = torch.cat([self._last, start])
            self.rows += [rows[i] for i in live]
        return rows

    @torch.inference_mode()
    def forward(self) -> Tensor:
        """Logits (rows, 514) for every row's next token, in float32."""
        model = self.model
        pos: Tensor = model.embeddings.positional_embedding  # type: ignore[assignment]
        x = model.embeddings.embedding(self._last[:, None])
        x = x + pos[self.cache.positions][:, None] + self._cps
        return model.logits(model.decoder.step(x.to(model.dtype), self.cache))[:, -1]

    @torch.inference_mode()
    def accept(self, picked: Tensor) -> list[T2SRow]:
        """Each row takes its id; the rows that are done leave the batch and are returned."""
        self.cache.advance()
        self._last = picked
        finished = []
        for index, (row, token) in enumerate(zip(self.rows, picked.tolist(), strict=True)):
            row.tokens.append(token)
            if (row.until_eos and token == self.model.cfg.eos) or len(row.tokens) >= row.steps:
                row.done = True
                finished.append(index)
        return self.drop(finished)

    def _keep(self, keep: list[int]) -> None:
        index = torch.tensor(keep, dtype=torch.long, device=self._last.device)
        self._cps, self._last = self._cps[index], self._last[index]
