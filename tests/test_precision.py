"""The native-bf16 check and what ``precision="auto"`` resolves to."""

import sys
from pathlib import Path

import pytest

from mtlib import precision
from mtlib.precision import cpu_has_native_bf16, make_accelerator, resolve_precision


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/cpuinfo")
def test_native_bf16_check_agrees_with_cpuinfo_flags():
    flags = set(Path("/proc/cpuinfo").read_text().split())
    assert cpu_has_native_bf16() == bool({"avx512_bf16", "amx_bf16"} & flags)


@pytest.mark.parametrize("requested", ["fp32", "bf16", "fp16"])
def test_explicit_choices_pass_through(requested):
    assert resolve_precision(requested, "cpu") == requested


def test_auto_stays_fp32_without_native_bf16(monkeypatch):
    monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda: False)
    monkeypatch.setattr(precision, "CPU_BF16", True)
    assert resolve_precision("auto", "cpu") == "fp32"


@pytest.mark.parametrize(("switch", "expected"), [(True, "bf16"), (False, "fp32")])
def test_auto_on_native_bf16_follows_the_switch(monkeypatch, switch, expected):
    monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda: True)
    monkeypatch.setattr(precision, "CPU_BF16", switch)
    assert resolve_precision("auto", "cpu") == expected


@pytest.mark.parametrize(("supported", "expected"), [(True, "bf16"), (False, "fp32")])
def test_auto_on_a_gpu_follows_its_bf16_support(monkeypatch, supported, expected):
    monkeypatch.setattr(precision.torch.cuda, "is_bf16_supported", lambda: supported)
    monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda: True)
    assert resolve_precision("auto", "cuda") == expected


def test_unknown_precision_names_the_valid_ones():
    with pytest.raises(ValueError, match="Valid precisions"):
        resolve_precision("int8", "cpu")


def test_one_session_can_train_in_two_precisions():
    """Accelerate keeps one precision per process; a second run in bf16 after one in fp32 must not be refused."""
    assert make_accelerator("fp32").mixed_precision == "no"
    assert make_accelerator("bf16").mixed_precision == "bf16"
    assert make_accelerator("fp32").mixed_precision == "no"
