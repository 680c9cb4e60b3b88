"""The precision plan: which arithmetic each stage uses (`--dtype`), chosen once at start-up
from what this CPU (or GPU) runs natively.

Batch-1 decoding reads every decoder weight once per step; on a CPU that is memory-bandwidth
bound, so time follows bytes. `models.int8.Int8Linear` keeps a linear layer's weights as int8 with one float
scale per output row (symmetric, weight-only: activations stay float32) and multiplies with
`torch._weight_int8pack_mm`, a quarter of the bytes of float32. The activations enter that
kernel as bfloat16 (its fast path on x86: ~7x float32 for a decode step's matrices here, while
float32 activations take a slow path) and leave it as float32. The float32 path is untouched:
quantization is applied to a loaded model only when the precision plan asks for it.
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass
from pathlib import Path

import torch

from ..config.settings import check_dtype, resolve_dtype
from ..models.int8 import int8_supported

_LOGGER = logging.getLogger(__name__)


# oneDNN's ISA names, lowest first; bfloat16 convolutions are native from AVX512_CORE_BF16 on.
_ONEDNN_ISAS = (
    "SSE41",
    "AVX",
    "AVX2",
    "AVX2_VNNI",
    "AVX2_VNNI_2",
    "AVX512_CORE",
    "AVX512_CORE_VNNI",
    "AVX512_CORE_BF16",
    "AVX512_CORE_FP16",
    "AVX512_CORE_AMX",
    "AVX512_CORE_AMX_FP16",
)


@dataclass(frozen=True)
class CpuKind:
    """What this process's torch really runs on the CPU: the instruction set its own kernels
    use (`ATEN_CPU_CAPABILITY` can lower it), the oneDNN limit (`ONEDNN_MAX_CPU_ISA`, which
    runs the convolutions), and the CPU's native bfloat16."""

    flags: frozenset[str]
    aten: str  # torch.backends.cpu.get_cpu_capability(): DEFAULT, AVX2, AVX512, ...
    onednn_limit: str | None

    @classmethod
    def current(cls) -> CpuKind:
        import os

        try:
            flags = frozenset(Path("/proc/cpuinfo").read_text().split())
        except OSError:
            flags = frozenset()
        limit = os.environ.get("ONEDNN_MAX_CPU_ISA") or os.environ.get("DNNL_MAX_CPU_ISA")
        return cls(flags, torch.backends.cpu.get_cpu_capability(), limit.upper() if limit else None)

    @property
    def isa(self) -> str:
        """The instruction set torch runs, for logs and benchmark results: `avx512_bf16`,
        `avx512`, `avx2` or `default` (the CPU's own flags, lowered to what torch uses)."""
        if self.aten.startswith("AVX512"):
            return "avx512_bf16" if self.bf16_fast()[0] else "avx512"
        return self.aten.lower()

    def bf16_fast(self) -> tuple[bool, str]:
        """Whether bfloat16 convolutions run natively (about twice float32), and why."""
        native = {"avx512_bf16", "amx_bf16"} & self.flags
        if not native:
            return False, "the CPU has no native bfloat16 (no AVX-512 BF16 or AMX)"
        if not self.aten.startswith("AVX512"):
            return False, f"torch runs {self.aten} kernels here (ATEN_CPU_CAPABILITY)"
        limit = self.onednn_limit
        if limit is not None and limit != "ALL":
            rank = _ONEDNN_ISAS.index(limit) if limit in _ONEDNN_ISAS else -1
            if rank < _ONEDNN_ISAS.index("AVX512_CORE_BF16"):
                return False, f"oneDNN is limited to {limit} (ONEDNN_MAX_CPU_ISA)"
        return True, f"the CPU has native bfloat16 ({', '.join(sorted(native))})"


@functools.cache
def bf16_fast() -> bool:
    """Whether bfloat16 convolutions run natively here (`CpuKind.bf16_fast`); elsewhere they
    are emulated and slower than float32."""
    return CpuKind.current().bf16_fast()[0]


@dataclass(frozen=True)
class Precision:
    """The arithmetic of each stage, chosen once at start-up (`--dtype`).

    `models`: T2S/S2A weights and activations; `decoder_int8`: their decode steps read int8
    weights; `rvc`: the RVC synthesizer; `content`: HuBERT; `pitch`: RMVPE. The vocoder is
    float32.
    """

    models: torch.dtype
    decoder_int8: bool
    rvc: torch.dtype
    content: torch.dtype
    pitch: torch.dtype
    refinegan: torch.dtype | None = None  # RefineGAN synthesizers, when not `rvc`
    reason: str = ""  # why `auto` chose this (the start-up log)

    @classmethod
    def uniform(cls, dtype: torch.dtype) -> Precision:
        return cls(dtype, False, dtype, dtype, dtype)

    @classmethod
    def auto(cls, device: torch.device) -> Precision:
        """CUDA: float16 everywhere. CPU: float32, except int8 decoder weights where the CPU runs
        them (time follows weight bytes), and a bfloat16 RVC synthesizer and HuBERT where torch
        really runs native bfloat16 here (about twice as fast; `CpuKind`). RefineGAN
        synthesizers stay float32: in bfloat16 they left the tests' bound on voices other than
        the fixtures (rms 0.015-0.017), for the smallest gain (1.6x). RMVPE stays float32: in
        bfloat16 its pitch is wrong. The deviations are bounded by the tests."""
        if device.type == "cuda":
            return cls.uniform(torch.float16)
        fast, why = CpuKind.current().bf16_fast()
        half = torch.bfloat16 if fast else torch.float32
        int8 = int8_supported()
        reason = (
            f"{'bfloat16' if fast else 'float32'} RVC/HuBERT: {why}; "
            f"{'int8' if int8 else 'float32'} decode steps: "
            f"{'the int8 kernel runs here' if int8 else 'no int8 kernel here'}"
        )
        return cls(
            torch.float32, int8, half, half, torch.float32, refinegan=torch.float32, reason=reason
        )

    def synthesizer(self, vocoder: str) -> torch.dtype:
        """The RVC synthesizer's dtype for a voice with this decoder (`synthesizer.VOCODERS`)."""
        if vocoder == "RefineGAN" and self.refinegan is not None:
            return self.refinegan
        return self.rvc

    def describe(self) -> str:
        def name(dtype: torch.dtype) -> str:
            return str(dtype).replace("torch.", "")

        decoders = "int8 weights" if self.decoder_int8 else name(self.models)
        rvc = name(self.rvc)
        if self.refinegan is not None and self.refinegan != self.rvc:
            rvc += f" (RefineGAN {name(self.refinegan)})"
        return (
            f"T2S/S2A {name(self.models)} (decode steps: {decoders}), RVC {rvc}, "
            f"HuBERT {name(self.content)}, RMVPE {name(self.pitch)}, vocoder float32"
        )


def resolve_precision(name: str, device: torch.device) -> Precision:
    """`auto` picks per stage (`Precision.auto`); a named dtype is used by every stage
    (`SettingsError` for one this device cannot run: `config.settings.check_dtype`)."""
    check_dtype(name, device)
    if name == "auto":
        return Precision.auto(device)
    return Precision.uniform(resolve_dtype(name, device))
