"""What an accelerator can do: its dense peak FLOP/s, looked up by the name CUDA reports.

MFU (model FLOPs utilisation) divides the FLOP/s a run achieves by this peak. The figures are
NVIDIA's data-sheet numbers for dense (not 2:4-sparse) tensor-core math: "bf16" also stands for
fp16, "tf32" is what fp32 matrix products run at with TF32 enabled (the loop enables it). AWS's
A10G has no NVIDIA data sheet: 70 TFLOP/s bf16 is the figure AWS and its users quote (about
half the A10's 125); ``benchmarks/gpu_check.py`` also measures a dense bf16 matmul on the
device itself, to check any row against.
"""

from __future__ import annotations

import re
import resource
import sys
from typing import Literal

__all__ = ["PEAK_TFLOPS", "peak_host_rss_bytes", "peak_tflops", "training_flops_per_token"]

MathMode = Literal["bf16", "tf32"]

# (model, variant or None): dense TFLOP/s. Matched on whole words of the device name, a row with
# its variant before the model alone, so "H100 NVL" is not read as an H100 SXM, nor an "L40"
# as an "L4".
PEAK_TFLOPS: dict[tuple[str, str | None], dict[MathMode, float]] = {
    ("B200", None): {"bf16": 2250, "tf32": 1100},
    ("H200", "NVL"): {"bf16": 835, "tf32": 418},
    ("H200", None): {"bf16": 989, "tf32": 495},  # SXM
    ("H100", "NVL"): {"bf16": 835, "tf32": 418},
    ("H100", "PCIE"): {"bf16": 756, "tf32": 378},
    ("H100", None): {"bf16": 989, "tf32": 495},  # SXM ("NVIDIA H100 80GB HBM3")
    ("A100", None): {"bf16": 312, "tf32": 156},  # SXM4 and PCIe alike
    ("L40S", None): {"bf16": 362, "tf32": 183},
    ("L40", None): {"bf16": 181, "tf32": 90.5},
    ("L4", None): {"bf16": 121, "tf32": 60},
    ("A10G", None): {"bf16": 70, "tf32": 35},
    ("A10", None): {"bf16": 125, "tf32": 62.5},
    ("V100", None): {"bf16": 125},  # fp16 only: no bf16 tensor cores (emulated)
    ("T4", None): {"bf16": 65},  # fp16 only, likewise
}


def peak_tflops(device_name: str, mode: MathMode = "bf16") -> float | None:
    """The dense peak of ``device_name`` (``torch.cuda.get_device_name()``) for ``mode``, or
    None for a device (or mode) the table does not know."""
    words = set(re.split(r"[\s\-_]+", device_name.upper()))
    for (model, variant), peaks in PEAK_TFLOPS.items():
        if model in words and (variant is None or variant in words):
            return peaks.get(mode)
    return None


def training_flops_per_token(
    params_non_embedding: int, *, layers: int, hidden: int, seq_len: float
) -> float:
    """Model FLOPs of one token's forward and backward pass: 6 per non-embedding parameter,
    plus attention's 12 x layers x hidden x sequence length (PaLM, appendix B)."""
    return 6 * params_non_embedding + 12 * layers * hidden * seq_len


def peak_host_rss_bytes() -> int:
    """The largest resident set this process has had, in bytes (``getrusage``: the kernel's
    high-water mark, so no sampling can miss a peak). psutil is not a dependency here."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024  # bytes on macOS, KiB on Linux
