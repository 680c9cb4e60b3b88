"""Transformer building blocks of the WhisperSpeech checkpoints, inference only.

Parameter names match the upstream state dicts so checkpoints load with strict key checks.
Attention keeps an explicit kv-cache: self-attention keys/values are written once per position,
cross-attention keys/values are computed once per utterance, and each step attends only over the
positions filled so far.

Upstream quirks kept here (they change numbers): q and k are both scaled by sqrt(qk_scale) before
SDPA's own 1/sqrt(head_dim); RoPE uses the GPT-NeoX "rotate half" layout; key positions are
multiplied by `key_subsampling` (3 in the S2A cross-attention, aligning 25 Hz with 75 Hz).
"""

from __future__ import annotations

import math
from typing import Generic, TypeVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..int8 import Int8Linear

HEAD_WIDTH = 64
Row = TypeVar("Row")


class LayerNorm(nn.LayerNorm):
    """LayerNorm computed in float32 and cast back, as upstream."""

    def forward(self, x: Tensor) -> Tensor:
        weight = self.weight.float() if self.weight is not None else None
        bias = self.bias.float() if self.bias is not None else None
        return F.layer_norm(x.float(), self.normalized_shape, weight, bias, self.eps).type(x.dtype)


TABLE_POSITIONS = 2500  # rotary positions prepared at load (upstream's cache size)


class Rotary(nn.Module):
    """RoPE frequencies; `inv_freq` is a persistent buffer in the checkpoints."""

    def __init__(self, dim: int, base: float = 10000.0) -> None:
        super().__init__()
        self.register_buffer("inv_freq", 1.0 / (base ** (torch.arange(0, dim, 2).float() / dim)))
        self._table: tuple[Tensor, Tensor] | None = None  # cos, sin: (positions, dim)

    def prepare(self, dtype: torch.dtype, length: int = TABLE_POSITIONS) -> None:
        """Once after loading (inv_freq is a checkpoint buffer): the cos/sin tables."""
        inv_freq: Tensor = self.inv_freq  # type: ignore[assignment]
        t = torch.arange(length, device=inv_freq.device, dtype=inv_freq.dtype)
        emb = torch.cat([torch.outer(t, inv_freq)] * 2, dim=-1)
        self._table = (emb.cos().to(dtype), emb.sin().to(dtype))

    def _tables(self, length: int, like: Tensor) -> tuple[Tensor, Tensor]:
        """cos/sin for positions 0..length-1 in `like`'s dtype; prepared at load, made again only
        for a longer run or another dtype."""
        table = self._table
        if (
            table is None
            or table[0].shape[0] < length
            or table[0].dtype != like.dtype
            or table[0].device != like.device
        ):
            self.prepare(like.dtype, max(length, TABLE_POSITIONS))
            table = self._table
            if table is None:
                raise RuntimeError("rotary tables were not prepared")
        return table

    def rotate(self, x: Tensor, positions: Tensor) -> Tensor:
        """x: (b, n, heads, d); positions: (n,) shared by the rows, or (b, n) one per row
        (integer positions, already subsampled)."""
        cos_table, sin_table = self._tables(int(positions.max()) + 1, x)
        cos, sin = cos_table[positions], sin_table[positions]
        if positions.dim() == 1:
            cos, sin = cos[None], sin[None]
        half = x.shape[-1] // 2
        rotated = torch.cat((-x[..., half:], x[..., :half]), dim=-1)
        return x * cos[:, :, None, :] + rotated * sin[:, :, None, :]


def prepare_rotary(model: nn.Module, dtype: torch.dtype) -> None:
    """The rotary tables of every attention layer in `model`, in the activations' dtype."""
    for module in model.modules():
        if isinstance(module, Rotary):
            module.prepare(dtype)


class Attention(nn.Module):
    """Multi-head attention with upstream's parameter layout (`key` has no bias)."""

    def __init__(self, width: int, n_head: int, qk_scale: float, rope: bool) -> None:
        super().__init__()
        self.n_head = n_head
        self.scale = math.sqrt(qk_scale)
        self.query = nn.Linear(width, width)
        self.key = nn.Linear(width, width, bias=False)
        self.value = nn.Linear(width, width)
        self.out = nn.Linear(width, width)
        self.rotary = Rotary(width // n_head) if rope else None
        self.key_subsampling = 1
        # The decode-step projections, built by `prepare` once the weights are loaded: q/k/v as
        # one matmul with sqrt(qk_scale) folded in, in float or int8.
        self.qkv: nn.Module | None = None

    def _heads(self, x: Tensor, positions: Tensor | None, subsampling: int = 1) -> Tensor:
        x = x.view(*x.shape[:2], self.n_head, -1)
        if self.rotary is not None and positions is not None:
            x = self.rotary.rotate(x, positions * subsampling)
        return x.permute(0, 2, 1, 3)

    def queries(self, x: Tensor, positions: Tensor) -> Tensor:
        return self._heads(self.query(x) * self.scale, positions)

    def keys_values(self, x: Tensor, positions: Tensor) -> tuple[Tensor, Tensor]:
        k = self._heads(self.key(x) * self.scale, positions, self.key_subsampling)
        return k, self._heads(self.value(x), None)

    def attend(self, q: Tensor, k: Tensor, v: Tensor, causal: bool = False) -> Tensor:
        out = F.scaled_dot_product_attention(q, k, v, is_causal=causal)
        result: Tensor = self.out(out.permute(0, 2, 1, 3).flatten(start_dim=2))
        return result

    def forward(self, x: Tensor, positions: Tensor, causal: bool) -> Tensor:
        """Plain self-attention over a whole sequence (encoders)."""
        k, v = self.keys_values(x, positions)
        return self.attend(self.queries(x, positions), k, v, causal=causal)

    def prepare(self, int8: bool) -> None:
        """Build the decode-step projections from the loaded weights (once, after loading)."""
        with torch.no_grad():
            w = torch.cat(
                [self.query.weight * self.scale, self.key.weight * self.scale, self.value.weight]
            )
            b = torch.cat(
                [self.query.bias * self.scale, torch.zeros_like(self.query.bias), self.value.bias]
            )
        if int8:
            self.qkv = Int8Linear(w, b)
            self.out = _int8(self.out)  # type: ignore[assignment]
        else:
            fused = nn.Linear(w.shape[1], w.shape[0], device=w.device, dtype=w.dtype)
            fused.weight.data, fused.bias.data = w, b
            self.qkv = fused

    def cached(self, x: Tensor, layer: int, cache: RowCache) -> Tensor:
        """Self-attention of one new position per row (x: (b, 1, width)), each row at its own
        position in `cache`, over the positions it has filled so far."""
        if self.qkv is None:
            self.prepare(int8=False)
        if self.qkv is None:
            raise RuntimeError("self.qkv is not set")
        positions = cache.positions[:, None]
        q, k, v = self.qkv(x).chunk(3, dim=-1)
        q = self._heads(q, positions)
        k = self._heads(k, positions, self.key_subsampling)
        v = self._heads(v, None)
        keys, values = cache.write(layer, k, v)
        out = F.scaled_dot_product_attention(q, keys, values, attn_mask=cache.mask())
        result: Tensor = self.out(out.permute(0, 2, 1, 3).flatten(start_dim=2))
        return result


def _int8(linear: nn.Module) -> nn.Module:
    if not isinstance(linear, nn.Linear):
        raise TypeError(f"expected nn.Linear, got {type(linear).__name__}")
    return Int8Linear.from_linear(linear)


class Block(nn.Module):
    """Pre-LN residual block: self-attention, optional cross-attention, GELU MLP."""

    def __init__(
        self, width: int, n_head: int, qk_scale: float, ffn_mult: int, cross: bool, rope: bool
    ) -> None:
        super().__init__()
        self.attn = Attention(width, n_head, qk_scale, rope)
        self.attn_ln = LayerNorm(width)
        self.cross_attn = Attention(width, n_head, qk_scale, rope) if cross else None
        self.cross_attn_ln = LayerNorm(width) if cross else None
        self.mlp = nn.Sequential(
            nn.Linear(width, width * ffn_mult), nn.GELU(), nn.Linear(width * ffn_mult, width)
        )
        self.mlp_ln = LayerNorm(width)

    def forward(self, x: Tensor, positions: Tensor, causal: bool = False) -> Tensor:
        """Encoder block (no cross-attention, no cache)."""
        x = x + self.attn(self.attn_ln(x), positions, causal)
        result: Tensor = x + self.mlp(self.mlp_ln(x))
        return result

    def step(self, x: Tensor, layer: int, cache: RowCache) -> Tensor:
        """Decoder block for one new position per row, reading and extending `cache`."""
        if self.cross_attn is None:
            raise RuntimeError("self.cross_attn is not set")
        if self.cross_attn_ln is None:
            raise RuntimeError("self.cross_attn_ln is not set")
        x = x + self.attn.cached(self.attn_ln(x), layer, cache)
        q = self.cross_attn.queries(self.cross_attn_ln(x), cache.positions[:, None])
        x = x + self.cross_attn.attend(q, *cache.cross(layer))
        result: Tensor = x + self.mlp(self.mlp_ln(x))
        return result


class Decoder(nn.Module):
    """Cross-attending decoder (`decoder.layers.*`, `decoder.ln_post`)."""

    def __init__(
        self, depth: int, width: int, n_head: int, qk_scale: float, ffn_mult: int, rope: bool
    ) -> None:
        super().__init__()
        self.blocks = [
            Block(width, n_head, qk_scale, ffn_mult, cross=True, rope=rope) for _ in range(depth)
        ]
        self.layers = nn.ModuleList(self.blocks)
        self.ln_post = LayerNorm(width)

    def prepare(self, int8: bool) -> None:
        """Make the per-step layers ready (fused q/k/v); with `int8`, every linear layer a
        decode step reads (not the cross-attention keys/values, computed once per utterance)
        keeps int8 weights."""
        for layer in self.blocks:
            layer.attn.prepare(int8)
            if int8:
                if layer.cross_attn is None:
                    raise RuntimeError("layer.cross_attn is not set")
                layer.cross_attn.query = _int8(layer.cross_attn.query)  # type: ignore[assignment]
                layer.cross_attn.out = _int8(layer.cross_attn.out)  # type: ignore[assignment]
                layer.mlp[0] = _int8(layer.mlp[0])
                layer.mlp[2] = _int8(layer.mlp[2])

    def set_cross_key_subsampling(self, factor: int) -> None:
        for layer in self.blocks:
            if layer.cross_attn is None:
                raise RuntimeError("layer.cross_attn is not set")
            layer.cross_attn.key_subsampling = factor

    def cross_kv(self, xenc: Tensor, positions: Tensor) -> list[tuple[Tensor, Tensor]]:
        """Cross-attention keys/values of every layer: computed once per utterance."""
        out = []
        for layer in self.blocks:
            if layer.cross_attn is None:
                raise RuntimeError("layer.cross_attn is not set")
            out.append(layer.cross_attn.keys_values(xenc, positions))
        return out

    def step(self, x: Tensor, cache: RowCache) -> Tensor:
        """x (b, 1, width): one new position per row of `cache` → (b, 1, width)."""
        for index, layer in enumerate(self.blocks):
            x = layer.step(x, index, cache)
        result: Tensor = self.ln_post(x)
        return result


class RowBatch(Generic[Row]):
    """Rows of one model decoded together (`rows`, in the order of `cache`'s slots)."""

    def __init__(self, cache: RowCache) -> None:
        self.cache = cache
        self.rows: list[Row] = []

    @torch.inference_mode()
    def drop(self, slots: list[int]) -> list[Row]:
        """Remove these rows (done, or their request is gone) and return them."""
        dropped = [self.rows[i] for i in slots]
        if slots:
            keep = [i for i in range(len(self.rows)) if i not in set(slots)]
            self.cache.remove(slots)
            self._keep(keep)
            self.rows = [self.rows[i] for i in keep]
        return dropped

    def _keep(self, keep: list[int]) -> None:
        """Keep only these rows of the batch's own per-row tensors, in this order."""


class RowCache:
    """The decode state of rows that each sit at their own position: per decoder layer the
    self-attention keys/values (capacity, heads, length, head_dim), written at each row's
    position, and the cross-attention keys/values (capacity, heads, encoder positions,
    head_dim). Rows are slots 0..count-1 in the order they were added; a row that leaves is
    removed and the later ones move up. Memory grows with the rows and lengths in use only."""

    def __init__(self, decoder: Decoder) -> None:
        self.decoder = decoder
        self.count = 0
        self.where: list[int] = []  # each row's next position
        self.positions = torch.zeros(0, dtype=torch.long)
        self._k: list[Tensor] = []
        self._v: list[Tensor] = []
        self._ck: list[Tensor] = []
        self._cv: list[Tensor] = []
        self._length = 0  # positions held per row
        self._mask: Tensor | None = None

    def add(self, cross: list[tuple[Tensor, Tensor]], length: int) -> None:
        """Rows at position 0 with these cross-attention keys/values (one (rows, heads, n, d)
        pair per layer), each to take at most `length` positions."""
        rows = cross[0][0].shape[0]
        self._reserve(self.count + rows, length, cross)
        for layer, (k, v) in enumerate(cross):
            self._ck[layer][self.count : self.count + rows] = k
            self._cv[layer][self.count : self.count + rows] = v
        self.count += rows
        self.where += [0] * rows
        self._moved()

    def remove(self, slots: list[int]) -> None:
        """Drop these rows; the others keep their order."""
        if not slots:
            return
        gone = set(slots)
        keep = [i for i in range(self.count) if i not in gone]
        first = min(gone)
        if keep and keep[-1] > first:
            index = torch.tensor(keep[first:], device=self._k[0].device)
            filled = max(self.where) if self.where else 0
            end = first + len(index)
            for pool in self._k + self._v:
                pool[first:end, :, :filled] = pool[index, :, :filled]
            for pool in self._ck + self._cv:
                pool[first:end] = pool[index]
        self.where = [self.where[i] for i in keep]
        self.count = len(keep)
        self._moved()

    def advance(self) -> None:
        """Every row moves on by one position."""
        self.where = [p + 1 for p in self.where]
        self._moved()

    def write(self, layer: int, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        """Store one position's keys/values (rows, heads, 1, d) at each row's position; return
        every row's keys/values up to the furthest row's position."""
        rows = torch.arange(self.count, device=k.device)
        self._k[layer][rows, :, self.positions] = k[:, :, 0]
        self._v[layer][rows, :, self.positions] = v[:, :, 0]
        end = max(self.where) + 1
        return self._k[layer][: self.count, :, :end], self._v[layer][: self.count, :, :end]

    def mask(self) -> Tensor | None:
        """Which keys each row may see (rows, 1, 1, length), or None when all rows are at the
        same position (then every key is theirs)."""
        return self._mask

    def cross(self, layer: int) -> tuple[Tensor, Tensor]:
        return self._ck[layer][: self.count], self._cv[layer][: self.count]

    def _moved(self) -> None:
        device = self._k[0].device if self._k else None
        self.positions = torch.tensor(self.where, dtype=torch.long, device=device)
        self._mask = None
        if self.where and min(self.where) != max(self.where):
            keys = torch.arange(max(self.where) + 1, device=device)
            self._mask = (keys[None, :] <= self.positions[:, None])[:, None, None, :]

    def _reserve(self, rows: int, length: int, cross: list[tuple[Tensor, Tensor]]) -> None:
        """Room for `rows` rows of `length` positions (grown in steps, contents kept)."""
        capacity = self._k[0].shape[0] if self._k else 0
        if rows <= capacity and length <= self._length:
            return
        new_rows = capacity if rows <= capacity else max(rows, 2 * capacity)
        new_length = max(length, self._length)
        new_length = -(-new_length // 64) * 64
        k0, _ = cross[0]
        heads, head_dim = k0.shape[1], k0.shape[3]
        old = (self._k, self._v, self._ck, self._cv)
        fresh: list[list[Tensor]] = [[], [], [], []]
        for layer, (ck, _) in enumerate(cross):
            shapes = [(new_rows, heads, new_length, head_dim)] * 2 + [(new_rows, *ck.shape[1:])] * 2
            for kind, shape in enumerate(shapes):
                pool = ck.new_zeros(shape)
                if old[kind]:
                    previous = old[kind][layer][: self.count]
                    pool[: self.count, :, : previous.shape[2]] = previous
                fresh[kind].append(pool)
        self._k, self._v, self._ck, self._cv = fresh
        self._length = new_length


class FlexEmbeddings(nn.Module):
    """Tied input/output embeddings: frozen `main` codes (optionally projected) plus `special` ids."""

    def __init__(
        self,
        codes: int,
        width: int,
        special_codes: int = 0,
        frozen_width: int | None = None,
        special: nn.Embedding | None = None,
    ) -> None:
        super().__init__()
        frozen_width = frozen_width or width
        self.codes = codes
        self.main = nn.Embedding(codes, frozen_width)
        self.emb_to_hidden = nn.Linear(frozen_width, width) if frozen_width != width else None
        self.hidden_to_emb = nn.Linear(width, frozen_width) if frozen_width != width else None
        self.special = special or (nn.Embedding(special_codes, width) if special_codes else None)

    def forward(self, toks: Tensor) -> Tensor:
        if self.special is None:
            embs = self.main(toks)
            result: Tensor = self.emb_to_hidden(embs) if self.emb_to_hidden is not None else embs
            return result
        is_special = toks >= self.codes
        embs = self.main(torch.where(is_special, 0, toks))
        if self.emb_to_hidden is not None:
            embs = self.emb_to_hidden(embs)
        specials = self.special(torch.where(is_special, toks - self.codes, 0)).to(embs.dtype)
        return torch.where(is_special[..., None], specials, embs)

    def unembed(self, x: Tensor) -> Tensor:
        """Logits over `codes + special_codes` ids, in float32."""
        h = self.hidden_to_emb(x) if self.hidden_to_emb is not None else x
        logits = (h @ self.main.weight.to(h.dtype).T).float()
        if self.special is None:
            return logits
        special = (x @ self.special.weight.to(x.dtype).T).float()
        return torch.cat([logits, special], dim=-1)


def encoder_decoder_depths(depth: int, ratio: float) -> tuple[int, int]:
    """Upstream splits `2 * depth` layers between encoder and decoder."""
    encoder = int(depth * 2 * ratio)
    return encoder, depth * 2 - encoder
