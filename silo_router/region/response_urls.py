"""Counting response_url uses in the region's database, so every attempt and handler counts."""

from __future__ import annotations

import hashlib

from django.db import IntegrityError, transaction
from django.db.models import F

from .models import ResponseUrlUse


def url_hash(response_url: str) -> str:
    """What the ledger stores instead of the URL (a response_url is a capability)."""
    return hashlib.sha256(response_url.encode("utf-8", "surrogatepass")).hexdigest()


class DatabaseLedger:
    """A ``ResponseUrlLedger`` over :class:`ResponseUrlUse`: one atomic increment per use."""

    def take(self, response_url: str, *, limit: int) -> bool:
        """Count one use unless ``limit`` uses are already counted."""
        key = url_hash(response_url)
        if self._increment(key, limit):
            return True
        if limit < 1:
            return False
        try:
            with transaction.atomic():
                ResponseUrlUse.objects.create(url_hash=key, uses=1)
        except IntegrityError:
            return self._increment(key, limit)  # another process counted the first use
        return True

    @staticmethod
    def _increment(key: str, limit: int) -> bool:
        return bool(ResponseUrlUse.objects.filter(url_hash=key, uses__lt=limit).update(uses=F("uses") + 1))
