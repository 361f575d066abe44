"""Slack installations and OAuth states in the control database, behind slack_sdk's interfaces.

:class:`DjangoInstallationStore` is a slack_sdk ``InstallationStore``: Bolt's
``App(installation_store=DjangoInstallationStore(), ...)`` and its OAuth flow work
against it. Each installation is one ``Integration`` row (the one that ties it to its
organizations) with one ``SlackInstallation`` holding its credentials, encrypted.
:class:`DjangoOAuthStateStore` is a slack_sdk ``OAuthStateStore`` whose states are
signed, single-use and expiring, and can name the organization an install is for.
"""

from __future__ import annotations

import dataclasses
import datetime
import enum
import hashlib
import logging
import secrets
from typing import Any

from django.core import signing
from django.db import IntegrityError, transaction
from django.utils import timezone
from slack_sdk.oauth.installation_store import Bot, Installation, InstallationStore
from slack_sdk.oauth.state_store import OAuthStateStore

from silo_router.conf import conf

from ..models import Integration, OAuthState, OrganizationMapping, SlackInstallation

logger = logging.getLogger("silo_router.control")

PROVIDER = "slack"
STATE_SALT = "silo_router.slack.oauth_state"
#: What ``deactivate`` records when Bolt's code deletes an installation.
DELETED = "deleted"


def _datetime(unix: int | float | None) -> datetime.datetime | None:
    if unix is None:
        return None
    return datetime.datetime.fromtimestamp(unix, tz=datetime.UTC)


def _scopes(value: Any) -> str:
    if not value:
        return ""
    return value if isinstance(value, str) else ",".join(value)


def external_id_of(*, enterprise_id: str | None, team_id: str | None, is_enterprise_install: bool) -> str | None:
    """The ``Integration.external_id`` of an installation: the enterprise id when org-wide, else the team id."""
    return enterprise_id if is_enterprise_install else team_id


class DjangoInstallationStore(InstallationStore):
    """Installations as ``Integration`` + ``SlackInstallation`` rows (tokens encrypted).

    Lookups follow Bolt's stores: an org-wide install is found by its enterprise id
    (``is_enterprise_install`` or no team id), a workspace install by its team id; only
    active installations are found. One row per installation: a re-install updates it
    (and reactivates it). An install without a bot token (a user-scopes-only install by
    another user) updates only the installing user and the user token. ``app_id``
    narrows lookups to one app where several share the database (rows that match every
    app also qualify).
    """

    def __init__(self, *, app_id: str | None = None, logger: logging.Logger | None = None) -> None:
        self.app_id = app_id or None
        self._logger = logger or logging.getLogger("silo_router.control")

    @property
    def logger(self) -> logging.Logger:
        return self._logger

    # -- saving ---------------------------------------------------------------------------

    def save(self, installation: Installation) -> None:
        self.save_for(installation, organization=None)

    def save_bot(self, bot: Bot) -> None:
        """Update the bot credentials of the bot's installation (creating it if needed)."""
        installation = Installation(
            app_id=bot.app_id,
            enterprise_id=bot.enterprise_id,
            enterprise_name=bot.enterprise_name,
            team_id=bot.team_id,
            team_name=bot.team_name,
            bot_token=bot.bot_token,
            bot_id=bot.bot_id,
            bot_user_id=bot.bot_user_id,
            bot_scopes=bot.bot_scopes,
            bot_refresh_token=bot.bot_refresh_token,
            bot_token_expires_at=bot.bot_token_expires_at,
            user_id="",
            is_enterprise_install=bot.is_enterprise_install,
            installed_at=bot.installed_at,
        )
        self._save(installation, organization=None, installer=False)

    def save_for(self, installation: Installation, *, organization: OrganizationMapping | None) -> Integration:
        """Create or update the installation's rows, reactivate it, and link ``organization``.

        Organizations already linked stay linked: one workspace may serve organizations
        in several regions.
        """
        return self._save(installation, organization=organization, installer=True)

    def _save(
        self, installation: Installation, *, organization: OrganizationMapping | None, installer: bool
    ) -> Integration:
        external_id = external_id_of(
            enterprise_id=installation.enterprise_id,
            team_id=installation.team_id,
            is_enterprise_install=bool(installation.is_enterprise_install),
        )
        if not external_id:
            raise ValueError("an installation names a team id or, when org-wide, an enterprise id")
        for attempt in range(2):
            try:
                with transaction.atomic():
                    integration = self._locked_integration(external_id, installation.app_id or "")
                    self._update(integration, installation, installer=installer)
                    if organization is not None:
                        integration.organizations.add(organization)
                    return integration
            except IntegrityError:
                if attempt:
                    raise
        raise AssertionError("unreachable")

    @staticmethod
    def _locked_integration(external_id: str, app_id: str) -> Integration:
        """The installation's row, locked: the app's own, else an app-agnostic row with no
        credentials yet (one an operator created for routing), else a new one."""
        rows = list(
            Integration.objects.select_for_update(of=("self",))
            .filter(provider=PROVIDER, external_id=external_id, app_id__in={app_id, ""})
            .select_related("slack_installation")
        )
        for row in rows:
            if row.app_id == app_id:
                return row
        for row in rows:
            if not hasattr(row, "slack_installation"):
                return row
        return Integration.objects.create(provider=PROVIDER, external_id=external_id, app_id=app_id)

    @staticmethod
    def _update(integration: Integration, installation: Installation, *, installer: bool) -> None:
        org_wide = bool(installation.is_enterprise_install)
        record: SlackInstallation | None = getattr(integration, "slack_installation", None)
        new = record is None
        if record is None:
            record = SlackInstallation(integration=integration, installed_at=timezone.now())
        bot = new or installation.bot_token is not None
        integration.app_id = installation.app_id or ""
        integration.enterprise_id = installation.enterprise_id or ""
        integration.is_enterprise_install = org_wide
        integration.name = (installation.enterprise_name if org_wide else installation.team_name) or integration.name
        integration.active = True
        integration.deactivated_at = None
        integration.deactivation_reason = ""
        integration.save()
        if bot:
            record.team_name = installation.team_name or ""
            record.enterprise_name = installation.enterprise_name or ""
            record.enterprise_url = installation.enterprise_url or ""
            record.bot_id = installation.bot_id or ""
            record.bot_user_id = installation.bot_user_id or ""
            record.bot_scopes = _scopes(installation.bot_scopes)
            record.bot_token = installation.bot_token
            record.bot_refresh_token = installation.bot_refresh_token
            record.bot_token_expires_at = _datetime(installation.bot_token_expires_at)
            record.rotation_lease_owner = ""
            record.rotation_lease_until = None
            record.installed_at = _datetime(installation.installed_at) or timezone.now()
        if installer:
            record.user_id = installation.user_id or ""
            record.user_scopes = _scopes(installation.user_scopes)
            record.user_token = installation.user_token
            record.user_refresh_token = installation.user_refresh_token
            record.user_token_expires_at = _datetime(installation.user_token_expires_at)
            if bot:
                record.incoming_webhook_url = installation.incoming_webhook_url
                record.incoming_webhook_channel = installation.incoming_webhook_channel or ""
                record.incoming_webhook_channel_id = installation.incoming_webhook_channel_id or ""
                record.incoming_webhook_configuration_url = installation.incoming_webhook_configuration_url or ""
                record.token_type = installation.token_type or ""
        record.save()

    # -- finding --------------------------------------------------------------------------

    def _find(
        self,
        *,
        enterprise_id: str | None,
        team_id: str | None,
        is_enterprise_install: bool | None,
        with_bot_token: bool,
    ) -> SlackInstallation | None:
        org_wide = bool(is_enterprise_install) or not team_id
        external_id = external_id_of(enterprise_id=enterprise_id, team_id=team_id, is_enterprise_install=org_wide)
        if not external_id:
            return None
        rows = SlackInstallation.objects.select_related("integration").filter(
            integration__provider=PROVIDER,
            integration__external_id=external_id,
            integration__is_enterprise_install=org_wide,
            integration__active=True,
        )
        if with_bot_token:
            rows = rows.exclude(encrypted_bot_token="")
        if self.app_id:
            rows = rows.filter(integration__app_id__in=[self.app_id, ""])
        ranked = sorted(rows, key=lambda r: (r.integration.app_id == "", -r.installed_at.timestamp(), r.pk))
        return ranked[0] if ranked else None

    def find_bot(
        self,
        *,
        enterprise_id: str | None,
        team_id: str | None,
        is_enterprise_install: bool | None = False,
    ) -> Bot | None:
        record = self._find(
            enterprise_id=enterprise_id,
            team_id=team_id,
            is_enterprise_install=is_enterprise_install,
            with_bot_token=True,
        )
        return bot_of(record) if record is not None else None

    def find_installation(
        self,
        *,
        enterprise_id: str | None,
        team_id: str | None,
        user_id: str | None = None,
        is_enterprise_install: bool | None = False,
    ) -> Installation | None:
        """The installation; with ``user_id``, only when that user installed it (else ``None``, as Bolt expects)."""
        record = self._find(
            enterprise_id=enterprise_id,
            team_id=team_id,
            is_enterprise_install=is_enterprise_install,
            with_bot_token=False,
        )
        if record is None or (user_id is not None and record.user_id != user_id):
            return None
        return installation_of(record)

    # -- deleting -------------------------------------------------------------------------

    def delete_bot(self, *, enterprise_id: str | None, team_id: str | None) -> None:
        """Forget the bot token (the installation stays, and is no longer authorized)."""
        record = self._find_any(enterprise_id=enterprise_id, team_id=team_id)
        if record is not None:
            record.bot_token = None
            record.bot_refresh_token = None
            record.bot_token_expires_at = None
            record.save()

    def delete_installation(
        self, *, enterprise_id: str | None, team_id: str | None, user_id: str | None = None
    ) -> None:
        """With ``user_id``: forget that user's token. Without: deactivate the installation."""
        record = self._find_any(enterprise_id=enterprise_id, team_id=team_id)
        if record is None:
            return
        if user_id is None:
            self.deactivate(record.integration, reason=DELETED)
        elif record.user_id == user_id:
            wipe_user_token(record)

    def delete_all(self, *, enterprise_id: str | None, team_id: str | None) -> None:
        """Deactivate the installation (its row stays: it records why requests are unroutable)."""
        self.delete_installation(enterprise_id=enterprise_id, team_id=team_id)

    def _find_any(self, *, enterprise_id: str | None, team_id: str | None) -> SlackInstallation | None:
        # Bolt deletes with the ids of the event: a team id inside an org-wide install
        # means the org-wide row when there is no row for the team itself.
        return self._find(
            enterprise_id=enterprise_id, team_id=team_id, is_enterprise_install=False, with_bot_token=False
        ) or self._find(enterprise_id=enterprise_id, team_id=None, is_enterprise_install=True, with_bot_token=False)

    def deactivate(self, integration: Integration, *, reason: str) -> None:
        """Mark the installation inactive and wipe its tokens.

        Deactivating an inactive installation keeps the first reason and time (Slack
        retries events, and sends ``tokens_revoked`` alongside ``app_uninstalled``).
        """
        with transaction.atomic():
            row = Integration.objects.select_for_update().get(pk=integration.pk)
            if row.active:
                row.active = False
                row.deactivated_at = timezone.now()
                row.deactivation_reason = reason[:200]
                row.save(update_fields=["active", "deactivated_at", "deactivation_reason"])
            record = SlackInstallation.objects.select_for_update().filter(integration=row).first()
            if record is not None:
                for name in SlackInstallation.ENCRYPTED_FIELDS:
                    setattr(record, name, "")
                record.bot_token_expires_at = None
                record.user_token_expires_at = None
                record.rotation_lease_owner = ""
                record.rotation_lease_until = None
                record.save()
        integration.refresh_from_db()


def wipe_user_token(record: SlackInstallation) -> None:
    """Forget the installing user's token (revoked, or the user was removed)."""
    record.user_token = None
    record.user_refresh_token = None
    record.user_token_expires_at = None
    record.save(update_fields=["encrypted_user_token", "encrypted_user_refresh_token", "user_token_expires_at"])


def installation_of(record: SlackInstallation) -> Installation:
    """The slack_sdk ``Installation`` of a row, tokens decrypted (for in-process use)."""
    integration = record.integration
    org_wide = integration.is_enterprise_install
    return Installation(
        app_id=integration.app_id or None,
        enterprise_id=integration.enterprise_id or None,
        enterprise_name=record.enterprise_name or None,
        enterprise_url=record.enterprise_url or None,
        team_id=None if org_wide else integration.external_id,
        team_name=record.team_name or None,
        bot_token=record.bot_token,
        bot_id=record.bot_id or None,
        bot_user_id=record.bot_user_id or None,
        bot_scopes=record.bot_scopes,
        bot_refresh_token=record.bot_refresh_token,
        bot_token_expires_at=record.bot_token_expires_at,
        user_id=record.user_id,
        user_token=record.user_token,
        user_scopes=record.user_scopes,
        user_refresh_token=record.user_refresh_token,
        user_token_expires_at=record.user_token_expires_at,
        incoming_webhook_url=record.incoming_webhook_url,
        incoming_webhook_channel=record.incoming_webhook_channel or None,
        incoming_webhook_channel_id=record.incoming_webhook_channel_id or None,
        incoming_webhook_configuration_url=record.incoming_webhook_configuration_url or None,
        is_enterprise_install=org_wide,
        token_type=record.token_type or None,
        installed_at=record.installed_at,
    )


def bot_of(record: SlackInstallation) -> Bot:
    """The slack_sdk ``Bot`` of a row, its token decrypted (for in-process use)."""
    integration = record.integration
    org_wide = integration.is_enterprise_install
    return Bot(
        app_id=integration.app_id or None,
        enterprise_id=integration.enterprise_id or None,
        enterprise_name=record.enterprise_name or None,
        team_id=None if org_wide else integration.external_id,
        team_name=record.team_name or None,
        bot_token=record.bot_token or "",
        bot_id=record.bot_id,
        bot_user_id=record.bot_user_id,
        bot_scopes=record.bot_scopes,
        bot_refresh_token=record.bot_refresh_token,
        bot_token_expires_at=record.bot_token_expires_at,
        is_enterprise_install=org_wide,
        installed_at=record.installed_at,
    )


class StateOutcome(enum.StrEnum):
    """How checking an OAuth state ended."""

    OK = "ok"
    INVALID = "invalid"
    EXPIRED = "expired"
    USED = "used"


@dataclasses.dataclass(frozen=True)
class StateCheck:
    """The outcome of checking a state, and the organization it was issued for."""

    outcome: StateOutcome
    organization: OrganizationMapping | None = None

    @property
    def ok(self) -> bool:
        return self.outcome is StateOutcome.OK


def _state_hash(state: str) -> str:
    return hashlib.sha256(state.encode()).hexdigest()


class DjangoOAuthStateStore(OAuthStateStore):
    """OAuth states: signed (``django.core.signing``), single-use (a row), expiring.

    The state holds a random nonce and the id of the organization the install is for;
    only its SHA-256 is stored. ``SLACK["STATE_EXPIRATION"]`` bounds its age.
    """

    def __init__(self, *, expiration_seconds: int | None = None, logger: logging.Logger | None = None) -> None:
        self._expiration = expiration_seconds
        self._logger = logger or logging.getLogger("silo_router.control")

    @property
    def logger(self) -> logging.Logger:
        return self._logger

    @property
    def expiration_seconds(self) -> int:
        return int(self._expiration if self._expiration is not None else conf.SLACK["STATE_EXPIRATION"])

    def issue(self, *args: Any, organization: OrganizationMapping | None = None, **kwargs: Any) -> str:
        """A new state (for the install of ``organization``, if given)."""
        now = timezone.now()
        lifetime = datetime.timedelta(seconds=self.expiration_seconds)
        organization_id = organization.organization_id if organization is not None else None
        state = signing.dumps({"n": secrets.token_urlsafe(24), "o": organization_id}, salt=STATE_SALT)
        OAuthState.objects.filter(expires_at__lt=now - lifetime).delete()
        OAuthState.objects.create(state_hash=_state_hash(state), organization=organization, expires_at=now + lifetime)
        return state

    def consume(self, state: str) -> bool:
        return self.check_and_consume(state).ok

    def check_and_consume(self, state: str) -> StateCheck:
        """Check ``state`` and use it up: ``ok`` once, then ``used``."""
        try:
            data = signing.loads(state, salt=STATE_SALT, max_age=self.expiration_seconds)
        except signing.SignatureExpired:
            return StateCheck(StateOutcome.EXPIRED)
        except signing.BadSignature:
            return StateCheck(StateOutcome.INVALID)
        if not isinstance(data, dict):
            return StateCheck(StateOutcome.INVALID)
        now = timezone.now()
        digest = _state_hash(state)
        rows = OAuthState.objects.filter(state_hash=digest)
        if not rows.filter(consumed_at__isnull=True, expires_at__gt=now).update(consumed_at=now):
            row = rows.values("consumed_at", "expires_at").first()
            if row is None:
                return StateCheck(StateOutcome.INVALID)
            return StateCheck(StateOutcome.USED if row["consumed_at"] is not None else StateOutcome.EXPIRED)
        row_state = rows.select_related("organization").get()
        organization = row_state.organization
        if (organization.organization_id if organization else None) != data.get("o"):
            return StateCheck(StateOutcome.INVALID)
        return StateCheck(StateOutcome.OK, organization)
