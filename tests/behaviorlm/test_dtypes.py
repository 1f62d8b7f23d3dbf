"""dtype "auto": bf16 only where the hardware computes it natively (real /proc/cpuinfo lines)."""

from __future__ import annotations

import pytest

from behaviorlm.dtypes import cpu_flags, cpu_has_native_bf16, resolve_dtype_name
from behaviorlm.errors import InputError

# Abridged from the two development machines of 2026-12-02 and an arm64 server.
ICELAKE = (
    "processor\t: 0\nmodel name\t: Intel(R) Xeon(R) Processor @ 2.60GHz\n"
    "flags\t\t: fpu sse sse2 avx2 avx512f avx512bw avx512vl avx512_vnni avx512_bitalg\n"
)
EPYC = (
    "processor\t: 0\nmodel name\t: AMD EPYC 9B14\n"
    "flags\t\t: fpu sse sse2 avx2 avx512f avx512bw avx512_bf16 avx512_vnni\n"
)
SAPPHIRE = "flags\t\t: avx512f avx512bw amx_bf16 amx_tile amx_int8\n"
GRAVITON3 = "processor\t: 0\nFeatures\t: fp asimd sve bf16 i8mm\nCPU implementer\t: 0x41\n"
GRAVITON2 = "processor\t: 0\nFeatures\t: fp asimd aes pmull sha1\n"


def test_flags_read_from_x86_and_arm_lines() -> None:
    assert {"avx512f", "avx512_vnni"} <= cpu_flags(ICELAKE)
    assert "bf16" in cpu_flags(GRAVITON3)
    assert cpu_flags("no flags here\n") == set()


@pytest.mark.parametrize(
    ("cpuinfo", "native"),
    [(ICELAKE, False), (EPYC, True), (SAPPHIRE, True), (GRAVITON3, True), (GRAVITON2, False)],
)
def test_native_bf16_only_with_the_hardware_flags(cpuinfo: str, native: bool) -> None:
    assert cpu_has_native_bf16(cpuinfo) is native


def test_explicit_choices_are_kept_and_auto_follows_the_gpu() -> None:
    assert resolve_dtype_name("bfloat16", gpu_bf16=None) == "bfloat16"
    assert resolve_dtype_name("float32", gpu_bf16=True) == "float32"
    assert resolve_dtype_name("auto", gpu_bf16=True) == "bfloat16"
    assert resolve_dtype_name("auto", gpu_bf16=False) == "float32"


def test_auto_on_this_cpu_matches_its_flags() -> None:
    want = "bfloat16" if cpu_has_native_bf16() else "float32"
    assert resolve_dtype_name("auto", gpu_bf16=None) == want


def test_an_unknown_dtype_names_the_option_and_the_value() -> None:
    with pytest.raises(InputError, match=r"--dtype: expected one of \['auto'.*got 'fp16'"):
        resolve_dtype_name("fp16", gpu_bf16=None, where="--dtype")
