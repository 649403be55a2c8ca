"""Device peaks by the names CUDA reports: the most specific row wins, whole words only."""

from __future__ import annotations

import pytest

from trainables.hardware import peak_tflops


@pytest.mark.parametrize(
    ("name", "bf16"),
    [
        ("NVIDIA H100 80GB HBM3", 989),
        ("NVIDIA H100 PCIe", 756),
        ("NVIDIA H100 NVL", 835),  # not the SXM row
        ("NVIDIA H200", 989),
        ("NVIDIA H200 NVL", 835),
        ("NVIDIA A100-SXM4-80GB", 312),
        ("NVIDIA A10G", 70),
        ("NVIDIA A10", 125),  # not A10G, not A100
        ("NVIDIA L4", 121),
        ("NVIDIA L40", 181),  # not the L4 row
        ("NVIDIA L40S", 362),
        ("Tesla T4", 65),
        ("NVIDIA GeForce RTX 4090", None),
    ],
)
def test_each_device_gets_its_own_row(name, bf16):
    assert peak_tflops(name) == bf16


def test_tf32_peaks_and_devices_without_them():
    assert peak_tflops("NVIDIA A100-SXM4-40GB", "tf32") == 156
    assert peak_tflops("Tesla T4", "tf32") is None
