"""The region's HTTP endpoint for the ``http`` transport."""

from __future__ import annotations

from rest_framework.renderers import JSONRenderer
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from silo_router import signing
from silo_router.exceptions import EnvelopeRejected

from .receiver import HandlerFailed, receive


class EnvelopeView(APIView):
    """POST a sealed envelope; the HMAC signature is the authentication."""

    authentication_classes: list[type] = []
    permission_classes: list[type] = []
    renderer_classes = [JSONRenderer]

    def post(self, request: Request) -> Response:
        try:
            receipt = receive(request.body, request.headers.get(signing.HEADER))
        except EnvelopeRejected as exc:
            return Response({"error": exc.reason, "detail": exc.detail}, status=exc.status)
        except HandlerFailed as exc:
            return Response({"error": "handler_failed", "detail": str(exc)}, status=500)
        return Response(receipt.as_dict())
