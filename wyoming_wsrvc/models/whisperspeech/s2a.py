"""S2A: semantic tokens (25 Hz) + speaker → 4 EnCodec codebooks (75 Hz), upstream
`SADelARTransformer`, plain or conditioned (`cond_embeddings.*`).

Which optional layers exist follows upstream's constructors (see docs/checkpoint-branches.md):
`spk_to_hidden` only when the speaker width differs from the model width (else the normalized
embedding is added as it is), `emb_to_hidden` only when the semantic codebook is narrower,
per-codebook projections when `atoks_width` differs, RoPE or (`rope=False`) sinusoid positions.

The delay pattern: codebook j is delayed by j+1 positions; position i of the decoder input holds
codebooks < min(i, quantizers) of the sample drawn at position i-1. At the end codebook j is read
from position 1+j on and the last 4 frames are dropped (upstream's unshift).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..int8 import Int8Linear
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

CODES = 1024  # EnCodec codes per codebook; 1024 = pad/EOS, 1025 = "not yet" (SOT)
SOT = CODES + 1
SNR, C50 = 60.0, 60.0  # upstream's inference conditions for the conditioned model


@dataclass(frozen=True)
class S2AConfig:
    depth: int
    n_head: int
    head_width: int = HEAD_WIDTH
    ffn_mult: int = 4
    ctx_n: int = 2250
    stoks_len: int = 750
    stoks_codes: int = 513
    stoks_width: int | None = None
    spk_width: int | None = None
    quantizers: int = 4
    output_mult: float = 5.6
    query_mult: float = 0.3
    encoder_depth_ratio: float = 0.25
    causal_encoder: bool = False
    hidden_to_emb: bool = False
    conditioned: bool = False
    rope: bool = True
    atoks_width: int | None = None

    @property
    def width(self) -> int:
        return self.n_head * self.head_width

    @property
    def speaker_projection(self) -> bool:
        """Upstream's `spk_factor`: a `spk_to_hidden` layer exists only if the widths differ."""
        return (self.spk_width or self.width) != self.width


class Binned(nn.Module):
    """Upstream `BinnedEmbedding`: value → bin of [vmin, vmax) in `bins`, NaN → the extra bin."""

    def __init__(self, vmin: float, vmax: float, bins: int, width: int) -> None:
        super().__init__()
        self.vmin, self.vmax, self.bins = vmin, vmax, bins
        self.embed = nn.Embedding(bins + 1, width)

    def index(self, value: float) -> int:
        if math.isnan(value):
            return self.bins
        return min(
            max(int((value - self.vmin) / (self.vmax - self.vmin) * self.bins), 0), self.bins - 1
        )


class Categorical(nn.Module):
    def __init__(self, codes: int, width: int) -> None:
        super().__init__()
        self.codes = codes
        self.embed = nn.Embedding(codes + 1, width)  # the last row is "missing"


class SpeakerProjection(nn.Module):
    """Upstream `SpeakerEmbedding`: a projection only when the widths differ."""

    def __init__(self, spk_width: int, width: int) -> None:
        super().__init__()
        self.spk_to_hidden = nn.Linear(spk_width, width) if spk_width != width else None

    def forward(self, spk: Tensor) -> Tensor:
        return self.spk_to_hidden(spk) if self.spk_to_hidden is not None else spk


def _codebook_rows(table: FlexEmbeddings) -> Tensor:
    """(1026, width): a codebook's 1024 code rows (projected to the model width when the codebook
    is narrower) followed by the 2 shared special rows."""
    if table.special is None:
        raise RuntimeError("table.special is not set")
    main = table.main.weight
    if table.emb_to_hidden is not None:
        main = table.emb_to_hidden(main)
    return torch.cat([main, table.special.weight])


def _codebook_unembedding(table: FlexEmbeddings) -> tuple[Tensor, Tensor | None]:
    """(width, 1026) tied output matrix, and its bias when a `hidden_to_emb` projection exists:
    logits = [hidden_to_emb(x) @ main.T ++ x @ special.T], folded into one matmul as upstream's
    `convert_for_eval` does."""
    if table.special is None:
        raise RuntimeError("table.special is not set")
    main = table.main.weight
    if table.hidden_to_emb is None:
        return torch.cat([main, table.special.weight]).T, None
    weight = torch.cat([main @ table.hidden_to_emb.weight, table.special.weight]).T
    bias = torch.cat(
        [table.hidden_to_emb.bias @ main.T, main.new_zeros(table.special.weight.shape[0])]
    )
    return weight, bias


class DelSumEmbedding(nn.Module):
    """One embedding per codebook (sharing the `special` table); their sum is the input."""

    def __init__(
        self, quantizers: int, width: int, atoks_width: int | None, positions: int | None
    ) -> None:
        super().__init__()
        special: nn.Embedding | None = None
        embeddings: list[FlexEmbeddings] = []
        for _ in range(quantizers):
            emb = FlexEmbeddings(
                CODES, width, special_codes=2, frozen_width=atoks_width, special=special
            )
            special = emb.special
            embeddings.append(emb)
        self.embeddings = nn.ModuleList(embeddings)
        self.tables: list[FlexEmbeddings] = embeddings
        if positions is not None:  # rope=False: stored by upstream, never used by its decoder
            self.register_buffer("positional_embedding", torch.zeros(positions, width))
        # derived from the weights once they are loaded (`prepare`); made again if cast later
        self._merged: tuple[Tensor, Tensor] | None = None
        self._unembed: tuple[Tensor, Tensor | None] | None = None

    def prepare(self) -> None:
        """Once after loading: the merged input table and the tied output matrices."""
        self._merged = self._make_merged()
        self._unembed = self._make_unembedding()

    def _stale(self, table: tuple[Tensor, Tensor | None] | None) -> bool:
        weight = self.tables[0].main.weight
        return table is None or table[0].dtype != weight.dtype or table[0].device != weight.device

    def merged(self) -> tuple[Tensor, Tensor]:
        """All codebooks' input rows (main + special) as one table, and each codebook's offset."""
        if self._merged is None or self._stale(self._merged):
            self._merged = self._make_merged()
        return self._merged

    def _make_merged(self) -> tuple[Tensor, Tensor]:
        with torch.no_grad():
            rows = [_codebook_rows(t) for t in self.tables]
            merged = torch.cat(rows)
        offsets = torch.arange(len(rows), device=merged.device) * rows[0].shape[0]
        return merged, offsets

    def forward(self, toks: Tensor) -> Tensor:
        """toks (b, quantizers, n) → (b, n, width): the sum of every codebook's embedding."""
        merged, offsets = self.merged()
        return F.embedding(toks + offsets[None, :, None], merged).sum(dim=1)

    def unembedding(self) -> tuple[Tensor, Tensor | None]:
        """(quantizers, width, 1026): each codebook's tied output matrix (main ++ special), and
        (quantizers, 1, 1026) biases when the codebooks are narrower than the model."""
        if self._unembed is None or self._stale(self._unembed):
            self._unembed = self._make_unembedding()
        return self._unembed

    def _make_unembedding(self) -> tuple[Tensor, Tensor | None]:
        with torch.no_grad():
            parts = [_codebook_unembedding(t) for t in self.tables]
            matrix = torch.stack([w for w, _ in parts]).contiguous()
            biases = [b for _, b in parts if b is not None]
            bias = torch.stack(biases)[:, None] if len(biases) == len(parts) else None
        return matrix, bias


class DelSumHead(nn.Module):
    def __init__(self, quantizers: int, width: int) -> None:
        super().__init__()
        self.splitter = nn.Sequential(nn.Linear(width, width * quantizers), nn.GELU())


class S2A(nn.Module):
    """Semantic-to-acoustic transformer. State-dict keys equal upstream's."""

    def __init__(self, cfg: S2AConfig) -> None:
        super().__init__()
        self.cfg = cfg
        width = cfg.width
        stoks_width = cfg.stoks_width or width
        spk_width = cfg.spk_width or width
        qk_scale = cfg.query_mult * 8 / math.sqrt(cfg.head_width)
        enc_depth, dec_depth = encoder_decoder_depths(cfg.depth, cfg.encoder_depth_ratio)
        self.semantic_embedding = nn.Embedding(cfg.stoks_codes, stoks_width)
        self.emb_to_hidden = nn.Linear(stoks_width, width) if stoks_width != width else None
        # Present in old checkpoints (force_hidden_to_emb); unused at inference.
        self.hidden_to_emb = (
            nn.Linear(width, stoks_width) if stoks_width != width and cfg.hidden_to_emb else None
        )
        if not cfg.rope:  # sinusoids added to the encoder input (upstream needs stoks_len == ctx_n)
            self.register_buffer("positional_embeddings", torch.zeros(cfg.ctx_n, width))
        self.spk_to_hidden: nn.Linear | None = None
        if cfg.conditioned:
            self.cond_embeddings = nn.ModuleDict(
                {
                    "lang": Categorical(99, width),
                    "snr": Binned(-10, 70, 10, width),
                    "c50": Binned(0, 60, 6, width),
                    "speaker": SpeakerProjection(spk_width, width),
                }
            )
        elif cfg.speaker_projection:
            self.spk_to_hidden = nn.Linear(spk_width, width)
        self.encoder = nn.ModuleList(
            [
                Block(width, cfg.n_head, qk_scale, cfg.ffn_mult, cross=False, rope=cfg.rope)
                for _ in range(enc_depth)
            ]
        )
        self.ln_post = LayerNorm(width)
        self.embds = DelSumEmbedding(
            cfg.quantizers, width, cfg.atoks_width, None if cfg.rope else cfg.ctx_n
        )
        self.decoder = Decoder(dec_depth, width, cfg.n_head, qk_scale, cfg.ffn_mult, rope=cfg.rope)
        self.decoder.set_cross_key_subsampling(3)  # 25 Hz keys against 75 Hz queries
        self.head = DelSumHead(cfg.quantizers, width)
        # int8 output projections per codebook, when `prepare(int8=True)` made them
        self.unembed_int8: nn.ModuleList | None = None
        self.register_buffer("val_true", torch.zeros(cfg.quantizers))
        self.register_buffer("val_total", torch.zeros(cfg.quantizers))
        self.logit_scale = cfg.output_mult / (width / (3 * cfg.head_width))

    def prepare(self, int8: bool = False) -> None:
        """Once after loading: fused decode-step projections; with `int8`, every weight a decode
        step reads (decoder, head, tied output tables) is kept as int8 (activations float).
        Also the tables derived from the weights (embedding, rotary)."""
        self.embds.prepare()
        prepare_rotary(self, self.dtype)
        self.decoder.prepare(int8)
        if int8:
            splitter = self.head.splitter[0]
            if not isinstance(splitter, nn.Linear):
                raise TypeError(f"expected nn.Linear, got {type(splitter).__name__}")
            self.head.splitter[0] = Int8Linear.from_linear(splitter)
            matrix, bias = self.embds.unembedding()
            self.unembed_int8 = nn.ModuleList(
                Int8Linear(matrix[q].T, None if bias is None else bias[q, 0])
                for q in range(matrix.shape[0])
            )

    @property
    def device(self) -> torch.device:
        return self.semantic_embedding.weight.device

    @property
    def dtype(self) -> torch.dtype:
        return self.semantic_embedding.weight.dtype

    def condition(self, speakers: Tensor) -> Tensor:
        """What is added to every encoder output position: (b, width)."""
        spk = F.normalize(speakers.to(self.dtype), dim=-1)
        if not self.cfg.conditioned:
            return self.spk_to_hidden(spk) if self.spk_to_hidden is not None else spk
        conds = self.cond_embeddings
        batch = speakers.shape[0]

        def row(module: nn.Module, index: int) -> Tensor:
            ids = torch.full((batch,), index, dtype=torch.long, device=self.device)
            result: Tensor = module.embed(ids)  # type: ignore[operator]
            return result

        lang: Categorical = conds["lang"]  # type: ignore[assignment]
        snr: Binned = conds["snr"]  # type: ignore[assignment]
        c50: Binned = conds["c50"]  # type: ignore[assignment]
        speaker: SpeakerProjection = conds["speaker"]  # type: ignore[assignment]
        total: Tensor = (
            row(lang, lang.codes)
            + row(snr, snr.index(SNR))
            + row(c50, c50.index(C50))
            + speaker(spk)
        )
        return total

    def encode(self, stoks: Sequence[Sequence[int]], speakers: Tensor) -> Tensor:
        """Pad each row as upstream (leading 512, trailing 512 to `stoks_len`) and encode."""
        pad = self.cfg.stoks_codes - 1
        rows = []
        for toks in stoks:
            if len(toks) > self.cfg.stoks_len - 1:
                raise ValueError(f"{len(toks)} semantic tokens are over the model's limit")
            rows.append([pad, *toks] + [pad] * (self.cfg.stoks_len - len(toks) - 1))
        x = self.semantic_embedding(torch.tensor(rows, dtype=torch.long, device=self.device))
        if self.emb_to_hidden is not None:
            x = self.emb_to_hidden(x)
        if not self.cfg.rope:
            x = x + self.positional_embeddings
        positions = torch.arange(x.shape[1], device=self.device)
        for layer in self.encoder:
            x = layer(x, positions, causal=self.cfg.causal_encoder)
        result: Tensor = self.ln_post(x) + self.condition(speakers).unsqueeze(1)
        return result

    def logits(self, x: Tensor) -> Tensor:
        """(b, n, width) → (b, quantizers, n, 1026)."""
        b, n, _ = x.shape
        q_n = self.cfg.quantizers
        split = self.head.splitter(x).view(b * n, q_n, self.cfg.width).transpose(0, 1)
        if self.unembed_int8 is not None:
            parts = [layer(split[q]) for q, layer in enumerate(self.unembed_int8)]
            return torch.stack(parts).view(q_n, b, n, -1).transpose(0, 1) * self.logit_scale
        matrix, bias = self.embds.unembedding()
        logits = torch.bmm(split, matrix) if bias is None else torch.baddbmm(bias, split, matrix)
        logits = logits.float()  # (q, b*n, 1026)
        return logits.view(q_n, b, n, -1).transpose(0, 1) * self.logit_scale


@dataclass(eq=False)
class S2ARow:
    """One row of semantic tokens being decoded into EnCodec codes: `positions` decoder
    positions give `positions - 4` frames; finished pieces of codes (quantizers, k) wait in
    `pieces`, each with whether it is the row's last."""

    positions: int
    sampling: Sampling
    chunk: int
    step: int = 0
    emitted: int = 0
    pieces: list[tuple[Tensor, bool]] = field(default_factory=list)

    @property
    def frames(self) -> int:
        return max(self.positions - 4, 0)

    @property
    def done(self) -> bool:
        return self.step >= self.positions - 1


class S2ABatch(RowBatch[S2ARow]):
    """Rows of one S2A model decoded together, each at its own position with its own speaker,
    length and sampling: rows join (`add`) and leave (when done) between steps. A step is
    `forward` (logits of every row) then `accept` (the codes picked)."""

    def __init__(self, model: S2A) -> None:
        super().__init__(RowCache(model.decoder))
        self.model = model
        self._toks = torch.zeros(0, model.cfg.quantizers, 0, dtype=torch.long, device=model.device)

    @torch.inference_mode()
    def add(
        self,
        stoks: Sequence[Sequence[int]],
        speakers: Tensor,
        sampling: Sampling,
        chunk: int = 0,
        positions: int | None = None,
    ) -> list[S2ARow]:
        """Encode rows of semantic tokens with their speakers (rows, 192) and add them; each
        takes `positions` decoder positions (default 3 per token), at most the model's
        context. Codes come out every `chunk` frames (0: once, at the end)."""
        lengths = [min(positions or 3 * len(t), self.model.cfg.ctx_n) for t in stoks]
        rows = [S2ARow(n, sampling, chunk) for n in lengths]
        for row in rows:
            if row.done:
                row.pieces.append((self._codes_of(None, 0, row.frames), True))
        live = [i for i, row in enumerate(rows) if not row.done]
        if live:
            xenc = self.model.encode([stoks[i] for i in live], speakers[live])
            positions_enc = torch.arange(xenc.shape[1], device=self.model.device)
            longest = max(lengths[i] for i in live)
            self.cache.add(self.model.decoder.cross_kv(xenc, positions_enc), longest)
            self._grow(len(self.rows) + len(live), longest)
            self._toks[len(self.rows) : len(self.rows) + len(live)] = SOT
            self.rows += [rows[i] for i in live]
        return rows

    @torch.inference_mode()
    def forward(self) -> Tensor:
        """Logits (rows, quantizers, 1026) of every row's next frame, in float32."""
        model = self.model
        slots = torch.arange(len(self.rows), device=model.device)
        x = model.embds(self._toks[slots, :, self.cache.positions][:, :, None])
        return model.logits(model.decoder.step(x.to(model.dtype), self.cache))[:, :, -1]

    @torch.inference_mode()
    def accept(self, picked: Tensor) -> list[S2ARow]:
        """Each row takes its codes (rows, quantizers) (codebook j only from step j on, the
        delay pattern); finished codes go to the rows' `pieces`; the rows that are done leave
        the batch and are returned."""
        q_n = self.model.cfg.quantizers
        positions = self.cache.positions
        slots = torch.arange(len(self.rows), device=picked.device)
        started = torch.arange(q_n, device=picked.device)[None, :] <= positions[:, None]
        current = self._toks[slots, :, positions + 1]
        self._toks[slots, :, positions + 1] = torch.where(started, picked, current)
        self.cache.advance()
        finished = []
        for slot, row in enumerate(self.rows):
            ready = min(max(row.step - q_n + 2, 0), row.frames)
            row.step += 1
            if row.chunk and ready - row.emitted >= row.chunk:
                row.pieces.append((self._codes_of(slot, row.emitted, ready), False))
                row.emitted = ready
            if not row.done:
                continue
            if row.frames > row.emitted or row.emitted == 0:
                row.pieces.append((self._codes_of(slot, row.emitted, row.frames), True))
                row.emitted = row.frames
            else:  # the chunk just taken was the last
                piece, _ = row.pieces[-1]
                row.pieces[-1] = (piece, True)
            finished.append(slot)
        return self.drop(finished)

    def _keep(self, keep: list[int]) -> None:
        if keep:
            index = torch.tensor(keep, device=self._toks.device)
            self._toks[: len(keep)] = self._toks[index]

    def _codes_of(self, slot: int | None, start: int, end: int) -> Tensor:
        q_n = self.model.cfg.quantizers
        if slot is None:
            return torch.zeros(q_n, 0, dtype=torch.long, device=self.model.device)
        return _unshift(self._toks[slot : slot + 1], start, end)[0]

    def _grow(self, rows: int, length: int) -> None:
        have_rows, _, have_length = self._toks.shape
        if rows <= have_rows and length <= have_length:
            return
        toks = torch.full(
            (max(rows, 2 * have_rows), self.model.cfg.quantizers, max(length, have_length)),
            SOT,
            dtype=torch.long,
            device=self.model.device,
        )
        toks[: len(self.rows), :, :have_length] = self._toks[: len(self.rows)]
        self._toks = toks


def _unshift(toks: Tensor, start: int, end: int) -> Tensor:
    """Output frames [start, end): codebook j of frame t sits at decoder position 1 + t + j."""
    q_n = toks.shape[1]
    return torch.stack([toks[:, j, 1 + j + start : 1 + j + end] for j in range(q_n)], dim=1)


def valid_codes(codes: Tensor, previous: Tensor | None = None) -> Tensor:
    """Replace the special ids (1024, 1025) that sampling can produce, so none reaches Vocos.

    Each special is replaced by the previous valid code of its codebook: within `codes`
    (..., quantizers, frames), else `previous` (..., quantizers), the last codes of the frames
    before (a streamed piece), else 0.
    """
    codes = codes.clone()
    bad = codes >= CODES
    if not bool(bad.any()):
        return codes
    for index in bad.nonzero().tolist():
        *lead, t = index
        if t > 0:
            codes[(*lead, t)] = codes[(*lead, t - 1)]
        else:
            codes[(*lead, t)] = previous[tuple(lead)] if previous is not None else 0
    return codes
