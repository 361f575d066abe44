"""Operator options: typed, validated, edited in the admin, seen by every process fast.

An option is declared once (:data:`DEFINITIONS`) with a type, a default and a help
text. Its value lives in the ``Option`` table. Each process keeps an in-memory snapshot
of all values and reloads it with one query at most every
``OPTIONS_REFRESH_INTERVAL`` seconds (1 s by default), so a change in the admin is seen
everywhere within about that long, with no restart and no query per request.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

from django.db import DatabaseError

from silo_router.conf import conf

logger = logging.getLogger("silo_router.options")


def _validate_bool(value: Any) -> bool:
    if not isinstance(value, bool):
        raise ValueError("must be true or false")
    return value


def _validate_str_list(value: Any) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) and v.strip() for v in value):
        raise ValueError("must be a list of non-empty strings")
    cleaned = [v.strip() for v in value]
    if len(set(cleaned)) != len(cleaned):
        raise ValueError("must not repeat an entry")
    return cleaned


VALIDATORS: dict[str, Callable[[Any], Any]] = {"bool": _validate_bool, "str_list": _validate_str_list}


@dataclasses.dataclass(frozen=True)
class OptionDefinition:
    """One operator-editable option."""

    key: str
    type: str
    default: Any
    help_text: str

    def validate(self, value: Any) -> Any:
        """Return the cleaned value or raise ``ValueError`` saying what is wrong."""
        return VALIDATORS[self.type](value)


CONTROL_RESPONSES_ENABLED = "slack.control_responses.enabled"
CONTROL_RESPONSE_ACTIONS = "slack.control_responses.actions"

DEFINITIONS: dict[str, OptionDefinition] = {
    d.key: d
    for d in (
        OptionDefinition(
            key=CONTROL_RESPONSES_ENABLED,
            type="bool",
            default=False,
            help_text="Answer the listed Slack actions in the control silo at once (a Loading modal), "
            "then forward them to the region.",
        ),
        OptionDefinition(
            key=CONTROL_RESPONSE_ACTIONS,
            type="str_list",
            default=[],
            help_text="Slack action ids (or shortcut/command callback ids) that get a control response, one per "
            "line. Write 'action_id=handler' to pick a handler other than slack.loading_modal.",
        ),
    )
}


class OptionStore:
    """Per-process snapshot of option values, refreshed at most once an interval."""

    def __init__(self) -> None:
        self._values: Mapping[str, Any] = {}
        self._loaded_at = float("-inf")
        self._has_snapshot = False
        self._lock = threading.Lock()

    def get(self, key: str) -> Any:
        """The current value of ``key`` (its default if unset or invalid)."""
        definition = DEFINITIONS[key]
        if time.monotonic() - self._loaded_at >= conf.OPTIONS_REFRESH_INTERVAL:
            self._refresh()
        return self._values.get(key, definition.default)

    def invalidate(self) -> None:
        """Make the next ``get`` reload (used after a change in this process)."""
        self._loaded_at = float("-inf")

    def _refresh(self) -> None:
        # With a snapshot, a thread that finds another one refreshing uses the snapshot it
        # has. Without one (the first read of the process), it waits for the first load:
        # the defaults are not the operator's values.
        waited = not self._has_snapshot
        if not self._lock.acquire(blocking=waited):
            return
        try:
            if waited and self._has_snapshot:
                return  # the thread we waited for loaded it
            from .models import Option

            values: dict[str, Any] = {}
            for key, raw in Option.objects.filter(key__in=DEFINITIONS).values_list("key", "value"):
                try:
                    values[key] = DEFINITIONS[key].validate(raw)
                except ValueError:
                    logger.error("option %s holds an invalid value; using its default", key)
            self._values = values
            self._has_snapshot = True
            self._loaded_at = time.monotonic()
        except DatabaseError:
            logger.exception("could not load options; keeping the previous values")
            self._has_snapshot = True  # the defaults, until the database answers again
            self._loaded_at = time.monotonic()
        finally:
            self._lock.release()


options = OptionStore()


def create_option_rows(**kwargs: Any) -> None:
    """``post_migrate``: make a row for every defined option so the admin lists them all."""
    from .models import Option

    using = kwargs.get("using", "default")
    for definition in DEFINITIONS.values():
        Option.objects.using(using).get_or_create(key=definition.key, defaults={"value": definition.default})
