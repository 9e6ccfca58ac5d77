"""The API's routes, one ``APIRouter`` per area: :mod:`.search` (search, classify, keypoint matches),
:mod:`.clusters`, :mod:`.duplicates`, :mod:`.map`, and :mod:`.files` (images, thumbnails, the page, the docs,
login, health). Routes are module-level functions; each gets the app's :class:`~lookalike.server.service.Service`
through the :data:`ServiceDep` dependency."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from lookalike.server.service import Service


def service(request: Request) -> Service:
    """The opened index of the app serving this request (``create_app`` puts it in ``app.state.service``)."""
    return request.app.state.service


ServiceDep = Annotated[Service, Depends(service)]
