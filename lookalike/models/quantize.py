"""Static int8 quantization of an exported backbone with ONNX Runtime: QDQ format, per-channel weights.

EfficientNet-Lite was designed for this (ReLU6 instead of Swish, no squeeze-excite), and on CPUs with AVX2 or
AVX-512 VNNI ONNX Runtime runs its int8 convolutions about twice as fast as fp32 (BENCHMARKS.md "quantize").
Activations are uint8 and weights int8 (ONNX Runtime's recommended U8S8 on x86: the signed-activation variant ran
slower than fp32 here), with ranges from a MinMax calibration: by default over the bundled sample photos, once per
machine (ReLU6 bounds most ranges whatever the photos: calibrating on 64 room photos instead moved the median cosine
to fp32 from 0.9941 to 0.9943), or over the user's own photos when asked.

The quantized graph keeps the fp32 export's dynamic batch and image size, so one file serves every batch size;
calibration runs at the index resolution, the size it will see.
"""

from __future__ import annotations

import logging
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
                activation_type=QuantType.QUInt8,
                weight_type=QuantType.QInt8,
                calibrate_method=CalibrationMethod.MinMax,
                calibration_cache_path=str(Path(tmp) / "calibration"),
            )

        try:
            atomic_write(out_path, write)
        except LookalikeError:
            raise
        except Exception as exc:
            raise LookalikeError(
                f"int8 quantization of {fp32_path.name} failed ({type(exc).__name__}: {exc})"
            ) from None
