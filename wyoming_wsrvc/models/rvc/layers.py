"""Building blocks of the RVC (VITS-derived) synthesizer, inference only.

Parameter names match the community `.pth` files; weight norm is folded into plain weights at
load time (see `checkpoint.py`), so every conv here is an ordinary `nn.Conv1d` (the decoder's resblocks:
the channels-last `nwc.Conv1d`, same parameters and keys).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from . import nwc
from .crop import chain

LRELU_SLOPE = 0.1


class ChannelLayerNorm(nn.Module):
    """LayerNorm over the channel axis of (b, c, t), with VITS's `gamma`/`beta` names."""

    def __init__(self, channels: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.eps = eps
        self.gamma = nn.Parameter(torch.ones(channels))
        self.beta = nn.Parameter(torch.zeros(channels))

    def forward(self, x: Tensor) -> Tensor:
        x = F.layer_norm(x.transpose(1, -1), (x.shape[1],), self.gamma, self.beta, self.eps)
        return x.transpose(1, -1)


class RelativeAttention(nn.Module):
    """Self-attention with relative-position keys and values inside ±`window` (shared by heads)."""

    def __init__(self, channels: int, n_heads: int, window: int = 10) -> None:
        super().__init__()
        self.n_heads = n_heads
        self.k_channels = channels // n_heads
        self.window = window
        self.conv_q = nn.Conv1d(channels, channels, 1)
        self.conv_k = nn.Conv1d(channels, channels, 1)
        self.conv_v = nn.Conv1d(channels, channels, 1)
        self.conv_o = nn.Conv1d(channels, channels, 1)
        self.emb_rel_k = nn.Parameter(torch.zeros(1, 2 * window + 1, self.k_channels))
        self.emb_rel_v = nn.Parameter(torch.zeros(1, 2 * window + 1, self.k_channels))

    def _relative_index(self, length: int, device: torch.device) -> tuple[Tensor, Tensor]:
        """For each (query i, key j): the relative slot j - i + window, and whether it is in range."""
        pos = torch.arange(length, device=device)
        rel = pos[None, :] - pos[:, None] + self.window
        valid = (rel >= 0) & (rel <= 2 * self.window)
        return rel.clamp(0, 2 * self.window), valid

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        """x: (b, c, t); mask: (b, 1, t, t) with 1 where attention is allowed."""
        b, c, t = x.shape
        shape = (b, self.n_heads, self.k_channels, t)
        q = self.conv_q(x).view(shape).transpose(2, 3) / math.sqrt(self.k_channels)
        k = self.conv_k(x).view(shape).transpose(2, 3)
        v = self.conv_v(x).view(shape).transpose(2, 3)
        rel, valid = self._relative_index(t, x.device)
        scores = q @ k.transpose(-2, -1)
        rel_logits = q @ self.emb_rel_k[0].T  # (b, h, t, 2w+1)
        gathered = rel_logits.gather(-1, rel.expand(b, self.n_heads, t, t))
        scores = scores + gathered * valid
        scores = scores.masked_fill(mask == 0, -1e4)
        p = torch.softmax(scores, dim=-1)
        out = p @ v
        bins = torch.zeros(b, self.n_heads, t, 2 * self.window + 1, dtype=p.dtype, device=p.device)
        bins.scatter_add_(-1, rel.expand(b, self.n_heads, t, t), p * valid)
        out = out + bins @ self.emb_rel_v[0]
        result: Tensor = self.conv_o(out.transpose(2, 3).reshape(b, c, t))
        return result


class FeedForward(nn.Module):
    """Two "same"-padded convs with ReLU, masked."""

    def __init__(self, channels: int, filter_channels: int, kernel_size: int) -> None:
        super().__init__()
        self.kernel_size = kernel_size
        self.conv_1 = nn.Conv1d(channels, filter_channels, kernel_size)
        self.conv_2 = nn.Conv1d(filter_channels, channels, kernel_size)

    def _pad(self, x: Tensor) -> Tensor:
        if self.kernel_size == 1:
            return x
        return F.pad(x, ((self.kernel_size - 1) // 2, self.kernel_size // 2))

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        x = torch.relu(self.conv_1(self._pad(x * mask)))
        result: Tensor = self.conv_2(self._pad(x * mask)) * mask
        return result


class AttentionEncoder(nn.Module):
    """Post-LN transformer encoder (`enc_p.encoder`)."""

    def __init__(
        self, channels: int, filter_channels: int, n_heads: int, n_layers: int, kernel_size: int
    ) -> None:
        super().__init__()
        self.attn_layers = nn.ModuleList(
            [RelativeAttention(channels, n_heads) for _ in range(n_layers)]
        )
        self.norm_layers_1 = nn.ModuleList([ChannelLayerNorm(channels) for _ in range(n_layers)])
        self.ffn_layers = nn.ModuleList(
            [FeedForward(channels, filter_channels, kernel_size) for _ in range(n_layers)]
        )
        self.norm_layers_2 = nn.ModuleList([ChannelLayerNorm(channels) for _ in range(n_layers)])

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        attn_mask = mask.unsqueeze(2) * mask.unsqueeze(-1)
        x = x * mask
        for attn, norm1, ffn, norm2 in zip(
            self.attn_layers, self.norm_layers_1, self.ffn_layers, self.norm_layers_2, strict=True
        ):
            x = norm1(x + attn(x, attn_mask))
            x = norm2(x + ffn(x, mask))
        return x * mask


class WaveNet(nn.Module):
    """Gated dilated conv stack with global conditioning (`enc` of a coupling layer)."""

    def __init__(self, hidden: int, kernel_size: int, n_layers: int, gin_channels: int) -> None:
        super().__init__()
        self.hidden = hidden
        self.n_layers = n_layers
        self.cond_layer = nn.Conv1d(gin_channels, 2 * hidden * n_layers, 1)
        self.in_layers = nn.ModuleList(
            [
                nn.Conv1d(hidden, 2 * hidden, kernel_size, padding=kernel_size // 2)
                for _ in range(n_layers)
            ]
        )
        self.res_skip_layers = nn.ModuleList(
            [
                nn.Conv1d(hidden, 2 * hidden if i < n_layers - 1 else hidden, 1)
                for i in range(n_layers)
            ]
        )

    def forward(self, x: Tensor, mask: Tensor, g: Tensor) -> Tensor:
        output = torch.zeros_like(x)
        cond = self.cond_layer(g)
        for i, (in_layer, res_skip) in enumerate(
            zip(self.in_layers, self.res_skip_layers, strict=True)
        ):
            h = in_layer(x) + cond[:, i * 2 * self.hidden : (i + 1) * 2 * self.hidden]
            acts = torch.tanh(h[:, : self.hidden]) * torch.sigmoid(h[:, self.hidden :])
            res = res_skip(acts)
            if i < self.n_layers - 1:
                x = (x + res[:, : self.hidden]) * mask
                output = output + res[:, self.hidden :]
            else:
                output = output + res
        return output * mask


class CouplingLayer(nn.Module):
    """Mean-only residual coupling layer, run in reverse."""

    def __init__(self, channels: int, hidden: int, gin_channels: int) -> None:
        super().__init__()
        self.half_channels = channels // 2
        self.pre = nn.Conv1d(self.half_channels, hidden, 1)
        self.enc = WaveNet(hidden, 5, 3, gin_channels)
        self.post = nn.Conv1d(hidden, self.half_channels, 1)

    def reverse(self, x: Tensor, mask: Tensor, g: Tensor) -> Tensor:
        x0, x1 = x[:, : self.half_channels], x[:, self.half_channels :]
        h = self.enc(self.pre(x0) * mask, mask, g)
        mean = self.post(h) * mask
        return torch.cat([x0, (x1 - mean) * mask], dim=1)


class Flip(nn.Module):
    """Reverses the channel order (no parameters; keeps the flows' key indices)."""

    def forward(self, x: Tensor) -> Tensor:
        return torch.flip(x, [1])


class Flow(nn.Module):
    """4 coupling layers, each followed by a flip (`flow.flows.{0,2,4,6}`)."""

    def __init__(self, channels: int, hidden: int, gin_channels: int, n_flows: int = 4) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        for _ in range(n_flows):
            layers += [CouplingLayer(channels, hidden, gin_channels), Flip()]
        self.flows = nn.ModuleList(layers)

    def reverse(self, x: Tensor, mask: Tensor, g: Tensor) -> Tensor:
        for layer in reversed(self.flows):
            x = layer.reverse(x, mask, g) if isinstance(layer, CouplingLayer) else layer(x)
        return x


def _padding(kernel: int, dilation: int) -> int:
    return (kernel * dilation - dilation) // 2


class ResBlock1(nn.Module):
    def __init__(self, channels: int, kernel: int, dilations: list[int]) -> None:
        super().__init__()
        self.convs1 = nn.ModuleList(
            [
                nwc.Conv1d(channels, channels, kernel, dilation=d, padding=_padding(kernel, d))
                for d in dilations
            ]
        )
        self.convs2 = nn.ModuleList(
            [nwc.Conv1d(channels, channels, kernel, padding=_padding(kernel, 1)) for _ in dilations]
        )

    def forward(self, x: Tensor) -> Tensor:
        for c1, c2 in zip(self.convs1, self.convs2, strict=True):
            x = x + c2(F.leaky_relu(c1(F.leaky_relu(x, LRELU_SLOPE)), LRELU_SLOPE))
        return x

    def reach(self, per_frame: float) -> float:
        """Frames one output reaches into the input (`crop.reach`)."""
        return chain([*self.convs1, *self.convs2], per_frame)


class ResBlock2(nn.Module):
    def __init__(self, channels: int, kernel: int, dilations: list[int]) -> None:
        super().__init__()
        self.convs = nn.ModuleList(
            [
                nwc.Conv1d(channels, channels, kernel, dilation=d, padding=_padding(kernel, d))
                for d in dilations
            ]
        )

    def forward(self, x: Tensor) -> Tensor:
        for conv in self.convs:
            x = x + conv(F.leaky_relu(x, LRELU_SLOPE))
        return x

    def reach(self, per_frame: float) -> float:
        """Frames one output reaches into the input (`crop.reach`)."""
        return chain(self.convs, per_frame)


def sine_source(
    f0: Tensor,
    upp: int,
    rate: int,
    sine_amp: float = 0.1,
    noise_std: float = 0.003,
    generator: torch.Generator | None = None,
    noise: bool = True,
    phase: float = 0.0,
) -> Tensor:
    """NSF excitation (b, t*upp) at the output rate: a sine following `f0` (Hz per frame, 0 =
    unvoiced) on voiced samples plus Gaussian noise (std `noise_std` voiced, sine_amp/3 unvoiced;
    none when `noise` is False). The phase (in turns, starting at `phase`) accumulates per sample
    with f0 held over each frame; whole turns are dropped at frame boundaries to keep float32
    precision."""
    f0 = f0.float()
    steps = torch.arange(1, upp + 1, dtype=f0.dtype, device=f0.device)
    rad = f0[:, :, None] / rate * steps  # (b, t, upp): phase within each frame, in turns
    per_frame = torch.fmod(rad[:, :-1, -1:] + 0.5, 1.0) - 0.5
    carry = per_frame.cumsum(dim=1).fmod(1.0)
    rad = rad + F.pad(carry, (0, 0, 1, 0))
    if phase:
        rad = rad + phase % 1.0
    sine = torch.sin(2 * math.pi * rad.reshape(f0.shape[0], -1)) * sine_amp
    voiced = (f0 > 0).to(sine.dtype).repeat_interleave(upp, dim=1)
    out = sine * voiced
    if noise:
        amp = voiced * noise_std + (1 - voiced) * sine_amp / 3
        out = out + amp * torch.randn(out.shape, generator=generator, device=out.device)
    return out
