"""Static int8 quantization of an exported backbone with ONNX Runtime: QDQ format, per-channel weights.

EfficientNet-Lite was designed for this (ReLU6 instead of Swish, no squeeze-excite), and on CPUs with AVX2 or
AVX-512 VNNI ONNX Runtime runs its int8 convolutions about twice as fast as fp32 (BENCHMARKS.md "quantize").
Activations are uint8 and weights int8 (ONNX Runtime's recommended U8S8 on x86: the signed-activation variant ran
slower than fp32 here), with ranges from a MinMax calibration: by default over the bundled sample photos, once per
machine (ReLU6 bounds most ranges whatever the photos: calibrating on 64 room photos instead moved the median cosine
to fp32 from 0.9941 to 0.9943), or over the user's own photos when asked.

The quantized graph keeps the fp32 export's dynamic batch and image size, so one file serves every batch size;
calibration runs at the index resolution, the size it will see.

Weights use all 8 bits only where the CPU has VNNI (AVX512-VNNI or AVX-VNNI). Without it ONNX Runtime's u8×s8 kernels
(vpmaddubsw) add each pair of products into 16 bits with saturation, and with full-range weights that overflows: on an
AVX2-only EPYC a model whose QDQ graph, computed exactly (as VNNI's 32-bit sums do), gives a median cosine of 0.9934 to
fp32 on the sample photos at 320 px gave 0.9328 (min 0.79) in the int8 kernels, with onnxruntime 1.30-1.32 alike. There the weights are quantized to 7 bits (ONNX Runtime's
``reduce_range``, its advice for CPUs without VNNI), which cannot saturate: 0.9736. The choice is written into the model
(``WEIGHT_BITS_KEY``) so a full-range model meeting a CPU without VNNI (an index built elsewhere) is reported.
"""

from __future__ import annotations

import functools
import logging
import platform
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np

from lookalike.errors import LookalikeError
from lookalike.io import atomic_write

log = logging.getLogger(__name__)

#: The quantized backbone of an int8 index, kept in the index folder (a copy of the machine's samples calibration, or
#: calibrated on the folder's photos): queries must run exactly this file, since another calibration would give
#: slightly other vectors, and the machine's cache may be cleared.
INT8_FILE = "model-int8.onnx"
#: Calibrating on fewer images than this gives ranges set by a handful of photos; callers fall back to a wider set.
MIN_CALIBRATION_IMAGES = 16
#: More calibration images barely move MinMax ranges but cost time (about 0.25 s an image on two cores).
MAX_CALIBRATION_IMAGES = 64
#: Model metadata naming the bits of the quantized weights: "8" (full range, for CPUs with VNNI) or "7".
WEIGHT_BITS_KEY = "lookalike.int8_weight_bits"


@functools.cache
def cpu_has_vnni() -> bool:
    """Whether ONNX Runtime's int8 kernels here accumulate u8×s8 products without 16-bit saturation: x86 with
    AVX512-VNNI or AVX-VNNI, or any non-x86 CPU (ARM kernels widen before adding). An x86 CPU whose flags cannot be
    read (no /proc/cpuinfo) counts as without, the safe side: 7-bit weights are right on every CPU."""
    if platform.machine().lower() not in ("x86_64", "amd64", "i386", "i686", "x86"):
        return True
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    return bool(flags & {"avx512_vnni", "avx_vnni"})
    except OSError:
        pass
    return False


def weight_bits() -> int:
    """The weight width this CPU needs for exact int8 arithmetic: 8 with VNNI, else 7 (see the module docstring)."""
    return 8 if cpu_has_vnni() else 7


def saturates_here(weight_bits_of_model: str | None) -> bool:
    """Whether a quantized model with this ``WEIGHT_BITS_KEY`` value (None: written before the key, so 8 bits) would
    saturate in this CPU's int8 kernels."""
    return (weight_bits_of_model or "8") == "8" and not cpu_has_vnni()


def quantize_static_qdq(fp32_path: Path, out_path: Path, calibration: Iterable[np.ndarray]) -> None:
    """Write an int8 (QDQ, per-channel) copy of the ONNX model at ``fp32_path`` to ``out_path``, atomically.

    ``calibration`` yields (N, H, W, 3) uint8 batches fed to the graph's ``pixels`` input.
    """
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quant_pre_process,
        quantize_static,
    )

    class Reader(CalibrationDataReader):
        def __init__(self, batches: Iterator[np.ndarray]) -> None:
            self.batches = batches

        def get_next(self) -> dict[str, np.ndarray] | None:
            batch = next(self.batches, None)
            return None if batch is None else {"pixels": np.ascontiguousarray(batch, dtype=np.float32)}

    batches = iter(calibration)
    bits = weight_bits()
    with tempfile.TemporaryDirectory(prefix="lookalike-quantize-") as tmp:
        pre = Path(tmp) / "pre.onnx"
        try:
            # folds constants and fuses BatchNorm into the convolutions first, so those are what get quantized
            quant_pre_process(str(fp32_path), str(pre), skip_symbolic_shape=True)
        except Exception as exc:  # pre-processing is an optimisation: quantize the export as it is
            log.warning("ONNX pre-processing failed (%s); quantizing the export as is", exc)
            pre = fp32_path

        def write(target: Path) -> None:
            quantize_static(
                str(pre),
                str(target),
                Reader(batches),
                quant_format=QuantFormat.QDQ,
                per_channel=True,
                reduce_range=bits < 8,  # 7-bit weights where full-range ones would saturate (module docstring)
                activation_type=QuantType.QUInt8,
                weight_type=QuantType.QInt8,
                calibrate_method=CalibrationMethod.MinMax,
                calibration_cache_path=str(Path(tmp) / "calibration"),
            )
            import onnx

            model = onnx.load(str(target))
            onnx.helper.set_model_props(
                model, {**{p.key: p.value for p in model.metadata_props}, WEIGHT_BITS_KEY: str(bits)}
            )
            onnx.save(model, str(target))

        try:
            atomic_write(out_path, write)
        except LookalikeError:
            raise
        except Exception as exc:
            raise LookalikeError(
                f"int8 quantization of {fp32_path.name} failed ({type(exc).__name__}: {exc})"
            ) from None
