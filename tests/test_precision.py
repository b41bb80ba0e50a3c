"""The native-bf16 check and what ``mixed_precision="auto"`` resolves to."""

import sys
from pathlib import Path

import pytest

from mtlib import precision
from mtlib.precision import cpu_has_native_bf16, resolve_mixed_precision


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/cpuinfo")
def test_native_bf16_check_agrees_with_cpuinfo_flags():
    flags = set(Path("/proc/cpuinfo").read_text().split())
    assert cpu_has_native_bf16() == bool({"avx512_bf16", "amx_bf16"} & flags)


@pytest.fixture
def cpu_only(monkeypatch):
    monkeypatch.setattr(precision.torch.cuda, "is_available", lambda: False)


@pytest.mark.parametrize("requested", ["no", "bf16", "fp16"])
def test_explicit_choices_pass_through(requested):
    assert resolve_mixed_precision(requested) == requested


def test_auto_stays_fp32_without_native_bf16(cpu_only, monkeypatch):
    monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda: False)
    monkeypatch.setattr(precision, "CPU_BF16_TRAINING", True)
    assert resolve_mixed_precision("auto") == "no"


@pytest.mark.parametrize(("switch", "expected"), [(True, "bf16"), (False, "no")])
def test_auto_on_native_bf16_follows_the_switch(cpu_only, monkeypatch, switch, expected):
    monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda: True)
    monkeypatch.setattr(precision, "CPU_BF16_TRAINING", switch)
    assert resolve_mixed_precision("auto") == expected


@pytest.mark.parametrize(("supported", "expected"), [(True, "bf16"), (False, "no")])
def test_auto_on_a_gpu_follows_its_bf16_support(monkeypatch, supported, expected):
    monkeypatch.setattr(precision.torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(precision.torch.cuda, "is_bf16_supported", lambda: supported)
    monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda: True)
    assert resolve_mixed_precision("auto") == expected
