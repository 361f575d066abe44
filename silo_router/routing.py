"""The routing vocabulary: how control answers a request kind, and how far it fans out.

A core module (it imports nothing from the apps), so settings checks can validate
``ROUTES`` and ``FANOUT`` without importing the control app.
"""

from __future__ import annotations

import enum


class Strategy(enum.StrEnum):
    """How the control silo answers a request."""

    #: Answered in control, never forwarded (url_verification, ssl_check).
    CONTROL_ONLY = "control_only"
    #: Stored, acknowledged at once with an empty 200, delivered by a worker. A control
    #: response (a Loading modal) may run first when the admin options say so.
    ASYNC = "async"
    #: Forwarded while Slack waits, within the remaining deadline; the region's answer
    #: becomes the HTTP body. On timeout: the provider's fallback answer.
    SYNC = "sync"
    #: Acknowledged with 200 and neither stored nor forwarded.
    IGNORE = "ignore"


class Fanout(enum.StrEnum):
    """How many regions a request goes to when its installation spans several."""

    ALL = "all"
    ONE = "one"
