"""Control-silo models: where installations live, what operators toggle, what is in flight."""

from __future__ import annotations

import uuid

from django.conf import settings
from django.db import models

from .slack import encryption


class OrganizationMapping(models.Model):
    """An organization and the region silo that holds its data."""

    organization_id = models.CharField(max_length=64, unique=True, help_text="Id of the organization in its region.")
    slug = models.SlugField(max_length=100, unique=True)
    name = models.CharField(max_length=200, blank=True)
    region = models.CharField(max_length=64, db_index=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["id"]

    def __str__(self) -> str:
        return f"{self.slug} ({self.region})"


class Integration(models.Model):
    """A provider installation (a Slack workspace or Enterprise Grid org) and its organizations."""

    provider = models.CharField(max_length=32)
    external_id = models.CharField(
        max_length=64, help_text="Slack: the team id (T...) or, for an org-wide install, the enterprise id (E...)."
    )
    enterprise_id = models.CharField(max_length=64, blank=True, db_index=True)
    app_id = models.CharField(max_length=64, blank=True, help_text="Empty matches every app.")
    name = models.CharField(max_length=200, blank=True)
    is_enterprise_install = models.BooleanField(
        default=False, help_text="An org-wide install of an Enterprise Grid org (external_id is the enterprise id)."
    )
    active = models.BooleanField(default=True, help_text="Deactivated installations route nothing and hold no token.")
    deactivated_at = models.DateTimeField(null=True, blank=True)
    deactivation_reason = models.CharField(max_length=200, blank=True)
    organizations = models.ManyToManyField(OrganizationMapping, related_name="integrations", blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["provider", "external_id", "app_id"], name="silo_router_integration_unique")
        ]
        ordering = ["id"]

    def __str__(self) -> str:
        return f"{self.provider}:{self.external_id}"


class SlackInstallation(models.Model):
    """The Slack credentials and facts of one installation (its ``Integration``).

    Columns named ``encrypted_*`` hold Fernet tokens (:mod:`silo_router.control.slack.encryption`),
    never plaintext; the properties of the same name without the prefix encrypt and
    decrypt. An empty column means no such secret.
    """

    ENCRYPTED_FIELDS = (
        "encrypted_bot_token",
        "encrypted_bot_refresh_token",
        "encrypted_user_token",
        "encrypted_user_refresh_token",
        "encrypted_incoming_webhook_url",
    )

    integration = models.OneToOneField(Integration, on_delete=models.CASCADE, related_name="slack_installation")
    team_name = models.CharField(max_length=200, blank=True)
    enterprise_name = models.CharField(max_length=200, blank=True)
    enterprise_url = models.CharField(max_length=500, blank=True)
    bot_id = models.CharField(max_length=64, blank=True)
    bot_user_id = models.CharField(max_length=64, blank=True)
    bot_scopes = models.TextField(blank=True, help_text="Comma-separated, as Slack sends them.")
    encrypted_bot_token = models.TextField(blank=True)
    encrypted_bot_refresh_token = models.TextField(blank=True)
    bot_token_expires_at = models.DateTimeField(null=True, blank=True, help_text="Set when token rotation is on.")
    user_id = models.CharField(max_length=64, blank=True, help_text="The user who installed the app.")
    user_scopes = models.TextField(blank=True)
    encrypted_user_token = models.TextField(blank=True)
    encrypted_user_refresh_token = models.TextField(blank=True)
    user_token_expires_at = models.DateTimeField(null=True, blank=True)
    encrypted_incoming_webhook_url = models.TextField(blank=True)
    incoming_webhook_channel = models.CharField(max_length=200, blank=True)
    incoming_webhook_channel_id = models.CharField(max_length=64, blank=True)
    incoming_webhook_configuration_url = models.CharField(max_length=500, blank=True)
    token_type = models.CharField(max_length=32, blank=True)
    installed_at = models.DateTimeField()
    updated_at = models.DateTimeField(auto_now=True)
    rotation_lease_owner = models.CharField(max_length=64, blank=True)
    rotation_lease_until = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["id"]
        indexes = [models.Index(fields=["bot_token_expires_at"], name="silo_router_slack_expiry")]

    def __str__(self) -> str:
        return f"Slack installation of {self.integration}"

    @staticmethod
    def _read(ciphertext: str) -> str | None:
        return encryption.decrypt(ciphertext) if ciphertext else None

    @staticmethod
    def _write(plaintext: str | None) -> str:
        return encryption.encrypt(plaintext) if plaintext else ""

    @property
    def bot_token(self) -> str | None:
        return self._read(self.encrypted_bot_token)

    @bot_token.setter
    def bot_token(self, value: str | None) -> None:
        self.encrypted_bot_token = self._write(value)

    @property
    def bot_refresh_token(self) -> str | None:
        return self._read(self.encrypted_bot_refresh_token)

    @bot_refresh_token.setter
    def bot_refresh_token(self, value: str | None) -> None:
        self.encrypted_bot_refresh_token = self._write(value)

    @property
    def user_token(self) -> str | None:
        return self._read(self.encrypted_user_token)

    @user_token.setter
    def user_token(self, value: str | None) -> None:
        self.encrypted_user_token = self._write(value)

    @property
    def user_refresh_token(self) -> str | None:
        return self._read(self.encrypted_user_refresh_token)

    @user_refresh_token.setter
    def user_refresh_token(self, value: str | None) -> None:
        self.encrypted_user_refresh_token = self._write(value)

    @property
    def incoming_webhook_url(self) -> str | None:
        return self._read(self.encrypted_incoming_webhook_url)

    @incoming_webhook_url.setter
    def incoming_webhook_url(self, value: str | None) -> None:
        self.encrypted_incoming_webhook_url = self._write(value)

    @property
    def has_bot_token(self) -> bool:
        return bool(self.encrypted_bot_token)


class OAuthState(models.Model):
    """One issued OAuth ``state``: only its SHA-256 is stored; consumed once, before it expires."""

    state_hash = models.CharField(max_length=64, unique=True)
    organization = models.ForeignKey(
        OrganizationMapping, null=True, blank=True, on_delete=models.CASCADE, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    expires_at = models.DateTimeField(db_index=True)
    consumed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"OAuth state {self.state_hash[:12]}..."


class Option(models.Model):
    """The stored value of a registered option (see ``silo_router.control.options``)."""

    key = models.CharField(max_length=128, unique=True)
    value = models.JSONField(null=True)
    updated_at = models.DateTimeField(auto_now=True)
    updated_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )

    class Meta:
        ordering = ["key"]

    def __str__(self) -> str:
        return self.key


class OptionChange(models.Model):
    """An audit record: who changed which option, when, from what to what."""

    key = models.CharField(max_length=128, db_index=True)
    old_value = models.JSONField(null=True)
    new_value = models.JSONField(null=True)
    changed_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    changed_by_repr = models.CharField(max_length=200, blank=True)
    changed_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        ordering = ["-changed_at", "-id"]

    def __str__(self) -> str:
        return f"{self.key}: {self.old_value!r} -> {self.new_value!r}"


class Payload(models.Model):
    """One envelope for one region, committed before the provider is acknowledged.

    The row is the source of truth; broker messages only carry its id. ``in_flight``
    rows hold a lease (``lease_owner``, ``lease_until``): a worker that dies mid-attempt
    leaves a lease that expires, and the sweeper makes the row pending again.
    """

    class State(models.TextChoices):
        PENDING = "pending"
        IN_FLIGHT = "in_flight"
        DELIVERED = "delivered"
        FAILED = "failed"
        UNROUTABLE = "unroutable"

    class LoadingView(models.TextChoices):
        """Where the Loading modal a control response opened for this payload stands."""

        NONE = "", "none"
        OPEN = "open", "showing Loading"
        TIMED_OUT = "timed_out", "showing taking longer"
        CLOSED = "closed", "final outcome shown"

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    idempotency_key = models.CharField(max_length=200, db_index=True)
    provider = models.CharField(max_length=32)
    kind = models.CharField(max_length=200, db_index=True)
    region = models.CharField(max_length=64, blank=True)
    strategy = models.CharField(max_length=32)
    envelope = models.TextField(help_text="The serialized envelope (unsigned; it is signed at each attempt).")
    state = models.CharField(max_length=16, choices=State.choices, default=State.PENDING)
    attempts = models.PositiveIntegerField(default=0)
    replays = models.PositiveIntegerField(default=0)
    last_error = models.TextField(blank=True)
    ordering_key = models.CharField(
        max_length=200, blank=True, help_text="Set for kinds delivered in strict order: one at a time per key."
    )
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    updated_at = models.DateTimeField(auto_now=True)
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    enqueued_at = models.DateTimeField(null=True, blank=True)
    last_attempt_at = models.DateTimeField(null=True, blank=True)
    delivered_at = models.DateTimeField(null=True, blank=True)
    lease_owner = models.CharField(max_length=64, blank=True)
    lease_until = models.DateTimeField(null=True, blank=True)
    loading_view = models.CharField(max_length=16, choices=LoadingView.choices, default=LoadingView.NONE, blank=True)
    loading_check_at = models.DateTimeField(
        null=True, blank=True, help_text="When the sweeper must look at the Loading modal this payload opened."
    )
    loading_view_hash = models.CharField(
        max_length=128, blank=True, help_text="Slack's hash of the modal as last shown, for the next views.update."
    )
    trace_id = models.CharField(
        max_length=32, blank=True, help_text="The trace of the request that stored it (from the envelope)."
    )

    class Meta:
        # Each index matches queries (docs/retention.md lists them with their plans). Partial
        # indexes hold only the rows their queries look for, so they stay small however many
        # delivered rows pile up.
        indexes = [
            # Due pending rows of a region, oldest first: the sweeper, batch claims, a region's release.
            models.Index(
                fields=["region", "created_at", "next_attempt_at", "enqueued_at"],
                condition=models.Q(state="pending"),
                name="silo_router_payload_pending",
            ),
            # Leases that ran out (expire_leases).
            models.Index(
                fields=["lease_until"], condition=models.Q(state="in_flight"), name="silo_router_payload_lease"
            ),
            # Loading modals whose check is due (followups.run_due_checks).
            models.Index(
                fields=["loading_check_at"],
                condition=models.Q(loading_check_at__isnull=False),
                name="silo_router_payload_loading",
            ),
            # Counts per region and state, and the oldest active row (the admin's region status).
            models.Index(fields=["region", "state", "created_at"], name="silo_router_payload_region"),
            # Strict-order keys: predecessors and the next one.
            models.Index(fields=["ordering_key", "created_at"], name="silo_router_payload_order"),
            # Retention (oldest rows of a state) and the admin's state filter.
            models.Index(fields=["state", "created_at"], name="silo_router_payload_state"),
            # Delivered rows that still hold their body (BODY_RETENTION): a stored envelope is
            # canonical JSON with sorted keys, so it begins with its body; a stub does not.
            models.Index(
                fields=["delivered_at"],
                condition=models.Q(state="delivered", envelope__startswith='{"body":'),
                name="silo_router_payload_body",
            ),
        ]
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.kind} -> {self.region or '?'} [{self.state}]"


class PayloadAttempt(models.Model):
    """One attempt to deliver a payload, for its timeline in the admin.

    Written once, after the attempt (never inside a transaction held across the call);
    pruned by the sweeper after ``ATTEMPT_RETENTION`` seconds. ``error`` is a short
    reason, never a URL or a token.
    """

    #: A UUID, not an autoincrement: on SQLite an insert then leaves alone the sqlite_sequence
    #: table that every other autoincrement insert writes too (no lock taken from them).
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    payload = models.ForeignKey(Payload, on_delete=models.CASCADE, related_name="attempt_log")
    number = models.PositiveIntegerField(help_text="The attempt's number since the payload was stored or replayed.")
    replay = models.PositiveIntegerField(default=0, help_text="How many times the payload had been replayed.")
    started_at = models.DateTimeField(db_index=True)
    duration_ms = models.FloatField(default=0.0)
    outcome = models.CharField(max_length=32)
    error = models.CharField(max_length=500, blank=True)
    receipt = models.CharField(max_length=16, blank=True, help_text="What the region said: handled, queued...")
    confirmed_at = models.DateTimeField(
        null=True, blank=True, help_text="When the region confirmed an envelope its queue had taken."
    )
    trace_id = models.CharField(max_length=32, blank=True)
    span_id = models.CharField(max_length=16, blank=True)

    class Meta:
        indexes = [models.Index(fields=["payload", "started_at"], name="silo_router_attempt_payload")]
        ordering = ["started_at", "id"]

    def __str__(self) -> str:
        return f"attempt {self.number} of {self.payload_id}: {self.outcome}"


class RegionCircuit(models.Model):
    """The circuit breaker of one region: closed (deliver), open (hold), half-open (one probe)."""

    class State(models.TextChoices):
        CLOSED = "closed"
        OPEN = "open"
        HALF_OPEN = "half_open"

    region = models.CharField(max_length=64, unique=True)
    state = models.CharField(max_length=16, choices=State.choices, default=State.CLOSED)
    failures = models.PositiveIntegerField(default=0, help_text="Consecutive failed attempts.")
    openings = models.PositiveIntegerField(default=0, help_text="Consecutive openings; each doubles the wait.")
    retry_at = models.DateTimeField(null=True, blank=True, help_text="When an open circuit lets one probe through.")
    last_error = models.TextField(blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["region"]

    def __str__(self) -> str:
        return f"{self.region}: {self.state}"
