"""Token rotation: a bot token that expires soon is refreshed once, by one process.

With token rotation on, Slack's bot tokens expire (12 hours) and each refresh token is
single-use: two processes refreshing with the same refresh token would leave one of
them with a dead token. So the process that wants a fresh token first takes a lease
on the row (one conditional UPDATE: the lease is free and the token is still the one
it read); only the winner calls ``oauth.v2.access`` (slack_sdk's ``TokenRotator``)
and saves the new tokens. The others keep using the current token while it is valid,
or, once it has expired, wait a moment for the winner's. No transaction is open
during the call to Slack. A failed refresh is logged (the error name only) and its
lease left to expire, so the next try is at least a lease later.
"""

from __future__ import annotations

import datetime
import logging
import math
import time
import uuid

from django.db import transaction
from django.db.models import Q
from django.utils import timezone
from slack_sdk import WebClient
from slack_sdk.errors import SlackClientError, SlackTokenRotationError
from slack_sdk.oauth.token_rotation import TokenRotator

from silo_router import tracing
from silo_router.conf import conf

from ..models import SlackInstallation
from . import encryption
from .store import PROVIDER, bot_of

logger = logging.getLogger("silo_router.control")

#: How long a refreshing process holds the row; longer than the refresh call may take.
LEASE_SECONDS = 30.0
#: The refresh call's timeout.
REFRESH_TIMEOUT = 10
#: How long a process whose token has already expired waits for the winner's new one.
WAIT_SECONDS = 5.0
POLL_SECONDS = 0.1


def margin() -> float:
    """Seconds before expiry from which a token is refreshed (``SLACK["TOKEN_ROTATION_MARGIN"]``)."""
    return float(conf.SLACK["TOKEN_ROTATION_MARGIN"])


def is_due(record: SlackInstallation) -> bool:
    """Whether the bot token expires within the rotation margin (and can be refreshed)."""
    expires = record.bot_token_expires_at
    return (
        expires is not None
        and bool(record.encrypted_bot_token and record.encrypted_bot_refresh_token)
        and expires.timestamp() <= time.time() + margin()
    )


def is_expired(record: SlackInstallation) -> bool:
    expires = record.bot_token_expires_at
    return expires is not None and expires.timestamp() <= time.time()


def _reload(pk: int) -> SlackInstallation | None:
    found: SlackInstallation | None = (
        SlackInstallation.objects.select_related("integration")
        .filter(pk=pk, integration__active=True, integration__provider=PROVIDER)
        .first()
    )
    return found


def ensure_fresh(record: SlackInstallation, *, wait: bool = True) -> SlackInstallation | None:
    """``record`` with a token that is not about to expire, refreshing it if this process wins the lease.

    Returns the row as it stands afterwards (``None`` if it was deactivated meanwhile).
    Inside a database transaction nothing is refreshed (the lease and the call to Slack
    must not run in one): the current token is returned.
    """
    if transaction.get_connection().in_atomic_block:
        return record
    deadline = time.monotonic() + (WAIT_SECONDS if wait else 0.0)
    while True:
        if not is_due(record):
            return record
        owner = _take_lease(record)
        if owner is not None:
            return _refresh(record, owner)
        latest = _reload(record.pk)
        if latest is None:
            return None
        if latest.encrypted_bot_token != record.encrypted_bot_token:
            record = latest  # another process refreshed it
            continue
        if not is_expired(latest) or time.monotonic() >= deadline:
            if is_expired(latest):
                logger.warning("slack installation %s: bot token expired, refresh still pending", latest.integration_id)
            return latest
        time.sleep(POLL_SECONDS)
        record = latest


def _take_lease(record: SlackInstallation) -> str | None:
    """Take the row's rotation lease if it is free and the token is still the one read; return the owner."""
    owner = uuid.uuid4().hex
    now = timezone.now()
    taken = (
        SlackInstallation.objects.filter(pk=record.pk, encrypted_bot_token=record.encrypted_bot_token)
        .filter(Q(rotation_lease_until__isnull=True) | Q(rotation_lease_until__lt=now))
        .update(rotation_lease_owner=owner, rotation_lease_until=now + datetime.timedelta(seconds=LEASE_SECONDS))
    )
    return owner if taken else None


def _refresh(record: SlackInstallation, owner: str) -> SlackInstallation | None:
    """Call Slack with the refresh token and save the new tokens (the caller holds the lease)."""
    slack = conf.SLACK
    pk = record.integration_id
    if not slack.get("CLIENT_ID") or not slack.get("CLIENT_SECRET"):
        logger.error("slack installation %s: cannot refresh its token without SLACK CLIENT_ID and CLIENT_SECRET", pk)
        return record
    rotator = TokenRotator(
        client_id=str(slack["CLIENT_ID"]),
        client_secret=str(slack["CLIENT_SECRET"]),
        client=WebClient(base_url=str(slack["API_URL"]), timeout=REFRESH_TIMEOUT),
    )
    try:
        refreshed = rotator.perform_bot_token_rotation(
            bot=bot_of(record), minutes_before_expiration=math.ceil(margin() / 60) + 1
        )
    except SlackTokenRotationError as exc:
        error = exc.api_error.response.get("error") if exc.api_error is not None else None
        logger.error("slack installation %s: token refresh failed: %s", pk, error or "unknown error")
        return record
    except (SlackClientError, OSError) as exc:
        logger.error("slack installation %s: token refresh failed: %s", pk, type(exc).__name__)
        return record
    if refreshed is None or not refreshed.bot_token:
        logger.error("slack installation %s: token refresh answered no bot token", pk)
        return record
    expires_at = refreshed.bot_token_expires_at
    saved = SlackInstallation.objects.filter(pk=record.pk, encrypted_bot_token=record.encrypted_bot_token).update(
        encrypted_bot_token=encryption.encrypt(refreshed.bot_token),
        encrypted_bot_refresh_token=encryption.encrypt(refreshed.bot_refresh_token or ""),
        bot_token_expires_at=(
            datetime.datetime.fromtimestamp(expires_at, tz=datetime.UTC) if expires_at is not None else None
        ),
        rotation_lease_owner="",
        rotation_lease_until=None,
        updated_at=timezone.now(),
    )
    if saved:
        logger.info("slack installation %s: bot token refreshed", pk)
    else:
        # Deactivated (tokens wiped) or re-installed meanwhile: what is stored now wins.
        logger.warning("slack installation %s changed during its token refresh; the new token was dropped", pk)
    return _reload(record.pk)


def rotate_expiring_tokens() -> int:
    """Refresh every active installation's bot token that expires within the margin; return how many changed."""
    due_before = timezone.now() + datetime.timedelta(seconds=margin())
    pks = list(
        SlackInstallation.objects.filter(
            integration__active=True, integration__provider=PROVIDER, bot_token_expires_at__lte=due_before
        )
        .exclude(encrypted_bot_token="")
        .exclude(encrypted_bot_refresh_token="")
        .values_list("pk", flat=True)
    )
    changed = 0
    for pk in pks:
        record = _reload(pk)
        if record is None:
            continue
        fresh = ensure_fresh(record, wait=False)
        if fresh is not None and fresh.encrypted_bot_token != record.encrypted_bot_token:
            changed += 1
    return changed


def rotate_due_tokens() -> int:
    """:func:`rotate_expiring_tokens` in a span (``silo_router.control.rotate_tokens``) with the count."""
    with tracing.stage("control", "rotate_tokens", "rotate expiring tokens", provider=PROVIDER) as span:
        rotated = rotate_expiring_tokens()
        span.set(rotated=rotated)
    return rotated
