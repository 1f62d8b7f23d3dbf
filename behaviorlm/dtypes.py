"""The dtype a model computes in: bf16 only where the hardware computes bf16 natively.

Measured on two 2-core development machines (2026-12-02, SmolLM2-135M, 2 threads): an AMD EPYC
with native bf16 (avx512_bf16) ran bf16 matmuls at 0.37 TFLOP/s, faster than fp32; an Intel
Xeon with AVX-512 but no avx512_bf16 / amx_bf16 ran them emulated at ~2.8x the fp32 time, and a
4,096-token training step took 37 s in bf16. torch's own check
(``torch.ops.mkldnn._is_mkldnn_bf16_supported``) says yes on both, since it only asks whether
oneDNN can run bf16 at all, so "auto" reads the CPU's flags instead.
"""

from __future__ import annotations

import platform
import sys
from pathlib import Path
from typing import Any, Literal, cast, get_args

from behaviorlm.errors import InputError

Dtype = Literal["bfloat16", "float32"]
DtypeChoice = Literal["auto", "bfloat16", "float32"]
DTYPE_CHOICES: tuple[str, ...] = get_args(DtypeChoice)

# x86: AVX-512 BF16 or AMX tiles; arm64: the BF16 extension (FEAT_BF16, "bf16" in Features).
_NATIVE_BF16_FLAGS = frozenset({"avx512_bf16", "amx_bf16", "bf16"})


def cpu_flags(cpuinfo: str | None = None) -> set[str]:
    """The CPU feature flags of /proc/cpuinfo (x86 ``flags``, arm64 ``Features``); empty where
    there is no such file (macOS, Windows)."""
    if cpuinfo is None:
        path = Path("/proc/cpuinfo")
        try:
            cpuinfo = path.read_text()
        except OSError:
            return set()
    flags: set[str] = set()
    for line in cpuinfo.splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip().lower() in ("flags", "features"):
            flags.update(value.split())
    return flags


def cpu_has_native_bf16(cpuinfo: str | None = None) -> bool:
    """Whether this CPU computes bf16 in hardware (Apple silicon: yes, it has FEAT_BF16 from
    M2 on; macOS has no /proc/cpuinfo, so arm64 Darwin counts as native)."""
    if cpuinfo is None and platform.system() == "Darwin":
        return platform.machine() == "arm64"
    return bool(cpu_flags(cpuinfo) & _NATIVE_BF16_FLAGS)


def resolve_dtype_name(choice: str, *, gpu_bf16: bool | None, where: str = "dtype") -> Dtype:
    """A concrete dtype for a choice: "auto" is bf16 on a GPU that does bf16 (``gpu_bf16``
    True), fp32 on one that does not (False), and on a CPU (None) bf16 only with native bf16;
    "bfloat16" and "float32" are kept as asked."""
    if choice not in DTYPE_CHOICES:
        raise InputError(f"{where}: expected one of {list(DTYPE_CHOICES)}, got {choice!r}")
    if choice != "auto":
        return cast(Dtype, choice)
    native = cpu_has_native_bf16() if gpu_bf16 is None else gpu_bf16
    return "bfloat16" if native else "float32"


def resolve_dtype_here(choice: str, where: str = "dtype") -> Dtype:
    """:func:`resolve_dtype_name` for this machine: its CUDA GPU when torch sees one, else
    its CPU."""
    import torch

    gpu = bool(torch.cuda.is_bf16_supported()) if torch.cuda.is_available() else None
    return resolve_dtype_name(choice, gpu_bf16=gpu, where=where)


def torch_dtype(name: str) -> Any:
    """The torch dtype of a concrete name (what :func:`resolve_dtype_here` returns)."""
    import torch

    if name not in get_args(Dtype):
        raise ValueError(f"torch_dtype: {name!r} is not resolved (resolve_dtype_here first)")
    return {"bfloat16": torch.bfloat16, "float32": torch.float32}[name]


def resolve_torch_dtype(choice: str, where: str = "dtype") -> Any:
    """The torch dtype to run a model in here: :func:`resolve_dtype_here`, and an explicit bf16
    falls back to fp32 on a CPU without bf16 kernels at all (it would not run)."""
    import torch

    name = resolve_dtype_here(choice, where)
    cpu = not torch.cuda.is_available()
    if name == "bfloat16" and cpu and not torch.ops.mkldnn._is_mkldnn_bf16_supported():
        print("[dtype] this CPU has no bf16 kernels: using float32", file=sys.stderr)
        name = "float32"
    return torch_dtype(name)
