"""``manage.py silo_router_map``: map a workspace to an organization (and its region) without the admin.

::

    manage.py silo_router_map T0123ABCD --organization acme --region us
    manage.py silo_router_map E0123ABCD --organization acme          # an org-wide Enterprise Grid install
    manage.py silo_router_map T0123ABCD --organization acme --remove
    manage.py silo_router_map --list

The organization is named by its slug. One that does not exist yet is created in
``--region`` (its id in the region is ``--organization-id``, or the slug); one that
exists keeps its region, and a ``--region`` naming another is refused rather than
moving its data's routing behind an operator's back. Running a mapping twice changes
nothing. Regions and providers are checked as the admin checks them.
"""

from __future__ import annotations

import re
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import transaction

from silo_router.control.models import Integration, OrganizationMapping
from silo_router.control.validation import unknown_provider, unknown_region

#: A Slack workspace (T...) or Enterprise Grid organization (E...) id.
SLACK_ID = re.compile(r"^[TE][A-Z0-9]{2,63}$")


class Command(BaseCommand):
    help = "Map a provider installation (a Slack workspace or Grid org) to an organization; --list shows the mappings."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "external_id",
            nargs="?",
            help="Slack: the team id (T...), or the enterprise id (E...) of an org-wide install",
        )
        parser.add_argument("--organization", help="the organization's slug")
        parser.add_argument("--region", help="the organization's region (required when it is new)")
        parser.add_argument("--organization-id", help="the organization's id in its region (default: the slug)")
        parser.add_argument("--organization-name", default="", help="a display name for a new organization")
        parser.add_argument(
            "--enterprise", default="", help="the Enterprise Grid id (E...) of a workspace in a Grid org"
        )
        parser.add_argument("--app-id", default="", help="the Slack app id, when several apps share the installation")
        parser.add_argument("--provider", default="slack")
        parser.add_argument("--remove", action="store_true", help="unmap the organization from the installation")
        parser.add_argument("--list", action="store_true", help="print every installation and its organizations")

    def handle(self, *args: Any, **options: Any) -> None:
        if options["list"]:
            self._list()
            return
        external_id, slug = options["external_id"], options["organization"]
        if not external_id or not slug:
            raise CommandError("give the installation's id and --organization (or --list)")
        provider = options["provider"]
        problem = unknown_provider(provider)
        if problem:
            raise CommandError(problem)
        if provider == "slack":
            for value, what in ((external_id, "installation id"), (options["enterprise"], "--enterprise")):
                if value and not SLACK_ID.match(value):
                    raise CommandError(f"{value!r} is not a Slack team (T...) or enterprise (E...) id ({what})")
        if options["remove"]:
            self._remove(provider, external_id, options["app_id"], slug)
            return
        with transaction.atomic():
            organization = self._organization(slug, options)
            integration = self._integration(provider, external_id, options)
            mapped = integration.organizations.filter(pk=organization.pk).exists()
            if not mapped:
                integration.organizations.add(organization)
        state = "already mapped" if mapped else "mapped"
        self.stdout.write(f"{integration} -> {organization.slug} (region {organization.region}): {state}")

    def _organization(self, slug: str, options: dict[str, Any]) -> OrganizationMapping:
        region = options["region"]
        problem = unknown_region(region) if region is not None else None
        if problem:
            raise CommandError(problem)
        organization = OrganizationMapping.objects.filter(slug=slug).first()
        if organization is not None:
            if region is not None and region != organization.region:
                raise CommandError(
                    f"organization {slug!r} is in region {organization.region!r}, not {region!r}: "
                    "change its region in the admin if its data moved"
                )
            return organization
        if region is None:
            raise CommandError(f"organization {slug!r} does not exist yet: give its --region")
        organization_id = options["organization_id"] or slug
        if OrganizationMapping.objects.filter(organization_id=organization_id).exists():
            raise CommandError(f"another organization already has the id {organization_id!r}")
        return OrganizationMapping.objects.create(
            slug=slug, organization_id=organization_id, region=region, name=options["organization_name"]
        )

    def _integration(self, provider: str, external_id: str, options: dict[str, Any]) -> Integration:
        org_wide = provider == "slack" and external_id.startswith("E")
        enterprise = external_id if org_wide else options["enterprise"]
        integration, created = Integration.objects.get_or_create(
            provider=provider,
            external_id=external_id,
            app_id=options["app_id"],
            defaults={"enterprise_id": enterprise, "is_enterprise_install": org_wide},
        )
        if not created and enterprise and integration.enterprise_id != enterprise:
            if integration.enterprise_id:
                raise CommandError(
                    f"{integration} belongs to enterprise {integration.enterprise_id!r}, not {enterprise!r}"
                )
            integration.enterprise_id = enterprise
            integration.save(update_fields=["enterprise_id"])
        return integration

    def _remove(self, provider: str, external_id: str, app_id: str, slug: str) -> None:
        integration = Integration.objects.filter(provider=provider, external_id=external_id, app_id=app_id).first()
        organization = OrganizationMapping.objects.filter(slug=slug).first()
        if (
            integration is None
            or organization is None
            or not integration.organizations.filter(pk=organization.pk).exists()
        ):
            raise CommandError(f"{provider}:{external_id} is not mapped to {slug!r}")
        integration.organizations.remove(organization)
        self.stdout.write(f"{integration} -> {slug}: removed")

    def _list(self) -> None:
        integrations = Integration.objects.prefetch_related("organizations").order_by(
            "provider", "external_id", "app_id"
        )
        for integration in integrations:
            organizations = ", ".join(f"{o.slug} ({o.region})" for o in integration.organizations.all()) or "(none)"
            app = f" app {integration.app_id}" if integration.app_id else ""
            inactive = "" if integration.active else " [deactivated]"
            self.stdout.write(f"{integration}{app}{inactive} -> {organizations}")
