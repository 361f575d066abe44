"""Counting response_url uses in the region's database, so every attempt and handler counts."""

from __future__ import annotations

import datetime
import hashlib

from django.db import IntegrityError, transaction
from django.db.models import F
from django.utils import timezone

from .models import ResponseUrlUse

#: Rows older than this count nothing any more (Slack's response_url lives 30 minutes).
RETENTION = datetime.timedelta(hours=1)


def url_hash(response_url: str) -> str:
    """What the ledger stores instead of the URL (a response_url is a capability)."""
    return hashlib.sha256(response_url.encode("utf-8", "surrogatepass")).hexdigest()


class DatabaseLedger:
    """A ``ResponseUrlLedger`` over :class:`ResponseUrlUse`: one atomic increment per use.

    The first use of a URL also deletes rows past ``RETENTION``, so the table holds
    about an hour of response_urls.
    """

    def take(self, response_url: str, *, limit: int) -> bool:
        """Count one use unless ``limit`` uses are already counted."""
        key = url_hash(response_url)
        if self._increment(key, limit):
            return True
        if limit < 1:
            return False
        ResponseUrlUse.objects.filter(first_used_at__lt=timezone.now() - RETENTION).delete()
        try:
            with transaction.atomic():
                ResponseUrlUse.objects.create(url_hash=key, uses=1)
        except IntegrityError:
            return self._increment(key, limit)  # another process counted the first use
        return True

    @staticmethod
    def _increment(key: str, limit: int) -> bool:
        return bool(ResponseUrlUse.objects.filter(url_hash=key, uses__lt=limit).update(uses=F("uses") + 1))
