"""Create a silo's database and its demo data: ``python -m example_project.seed control|region``.

``DJANGO_SETTINGS_MODULE`` picks the silo. Control gets the organizations, the
control-response options (with the flag left off) and a staff superuser ``operator``;
a region gets a few issues for its organizations. No Slack workspace is installed here:
workspaces are installed through the OAuth flow once the silos run
(``Cluster.install``), as a real one is.
"""

from __future__ import annotations

import argparse
import os
import sys

#: organization slug -> (organization id, region)
ORGANIZATIONS: dict[str, tuple[str, str]] = {"acme": ("101", "us"), "globex": ("201", "eu")}
#: region -> (organization id, issue number, title)
ISSUES: dict[str, tuple[tuple[str, int, str], ...]] = {
    "us": (
        ("101", 1, "Login page returns 500"),
        ("101", 2, "Checkout times out on large carts"),
        ("101", 3, "Typo in the invoice footer"),
        ("101", 4, "Search ignores accents"),
    ),
    "eu": (
        ("201", 1, "GDPR export misses attachments"),
        ("201", 2, "Invoice PDF shows the wrong VAT"),
        ("201", 3, "Dark mode contrast too low"),
    ),
}
CONTROL_RESPONSE_ACTIONS = ["resolve_dialog", "archive_dialog"]
OPERATOR = "operator"


def seed_control(operator_password: str) -> None:
    """Organizations, options and the operator account."""
    from django.contrib.auth import get_user_model

    from silo_router.control.models import Option, OrganizationMapping
    from silo_router.control.options import CONTROL_RESPONSE_ACTIONS as ACTIONS_KEY
    from silo_router.control.options import CONTROL_RESPONSES_ENABLED

    for slug, (org_id, region) in ORGANIZATIONS.items():
        OrganizationMapping.objects.update_or_create(
            slug=slug, defaults={"organization_id": org_id, "region": region, "name": slug.title()}
        )
    Option.objects.update_or_create(key=ACTIONS_KEY, defaults={"value": CONTROL_RESPONSE_ACTIONS})
    Option.objects.update_or_create(key=CONTROL_RESPONSES_ENABLED, defaults={"value": False})
    user_model = get_user_model()
    operator = user_model.objects.filter(username=OPERATOR).first() or user_model(username=OPERATOR)
    operator.is_staff = operator.is_superuser = True
    operator.set_password(operator_password)
    operator.save()


def seed_region(region: str) -> None:
    """The issues of ``region``'s organizations, all open."""
    from example_project.issues.models import Issue

    for organization_id, number, title in ISSUES.get(region, ()):
        Issue.objects.update_or_create(
            organization_id=organization_id, number=number, defaults={"title": title, "status": Issue.Status.OPEN}
        )


def main(argv: list[str] | None = None) -> int:
    """Migrate this silo's database, then seed it."""
    parser = argparse.ArgumentParser(prog="python -m example_project.seed", description=__doc__)
    parser.add_argument("silo", choices=["control", "region"])
    parser.add_argument("--operator-password", default=os.environ.get("SILO_DEMO_OPERATOR_PASSWORD", "demo-operator"))
    args = parser.parse_args(argv)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "example_project.settings.control")

    import django
    from django.conf import settings
    from django.core.management import call_command

    settings.VAR_DIR.mkdir(parents=True, exist_ok=True)
    django.setup()
    call_command("migrate", interactive=False, verbosity=0)
    if args.silo == "control":
        seed_control(args.operator_password)
    else:
        seed_region(str(settings.SILO_ROUTER["REGION"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
