"""Backbones behind one factory call, as timm does: ``create_model("efficientnet-lite0")``.

A backbone turns a batch of letterboxed uint8 RGB images (N, H, W, 3) into dense local features (N, C, h, w); how
those are pooled into one vector is :mod:`lookalike.aggregate`'s business, so every backbone gets every pooling.
"""

from lookalike.models.base import Backbone, TorchBackbone, cache_dir
from lookalike.models.registry import available_models, create_model, register_model

# Importing the modules registers their models.
from lookalike.models import efficientnet as _efficientnet  # noqa: F401  isort: skip
from lookalike.models import hub as _hub  # noqa: F401  isort: skip

__all__ = ["Backbone", "TorchBackbone", "available_models", "cache_dir", "create_model", "register_model"]
