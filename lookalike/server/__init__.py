"""The web page and JSON API over an index (``lookalike serve``); see :mod:`lookalike.server.app`."""

from lookalike.server.app import create_app, serve

__all__ = ["create_app", "serve"]
