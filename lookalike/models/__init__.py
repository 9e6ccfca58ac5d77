"""Backbones behind one factory call, as timm does: ``create_model("efficientnet-lite0")``.

A backbone turns a batch of letterboxed uint8 RGB images (N, H, W, 3) into dense local features (N, C, h, w); how
those are pooled into one vector is :mod:`lookalike.aggregate`'s business, so every backbone gets every pooling.
"""

from pathlib import Path

from lookalike.config import DEFAULT_MODEL
from lookalike.errors import ModelUnavailableError
from lookalike.models.base import Backbone, TorchBackbone, cache_dir
from lookalike.models.registry import available_models, register_model, registered_factory

# Importing the modules registers their models.
from lookalike.models import efficientnet as _efficientnet  # noqa: F401  isort: skip
from lookalike.models import hub as _hub  # noqa: F401  isort: skip


def create_model(name: str = DEFAULT_MODEL, **kwargs: object) -> Backbone:
    """Build a backbone by registered name, or from a folder holding a model trained by ``lookalike train``."""
    factory = registered_factory(name)
    if factory is not None:
        return factory(**kwargs)
    if Path(name).is_dir():
        from lookalike.models.trained import load_trained_model  # torch-heavy: only for trained models

        return load_trained_model(Path(name), **kwargs)
    known = ", ".join(sorted(available_models()))
    raise ModelUnavailableError(f"unknown model {name!r}; known models: {known} (or a folder from `lookalike train`)")


__all__ = ["Backbone", "TorchBackbone", "available_models", "cache_dir", "create_model", "register_model"]
