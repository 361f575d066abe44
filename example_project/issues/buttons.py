"""The action ids of the assignment notification's buttons, and its name (no Django import: the demo reads them)."""

from __future__ import annotations

#: The buttons of an assignment notification.
ACKNOWLEDGE_ACTION, ESCALATE_ACTION = "assignment_acknowledge", "assignment_escalate"
#: What kind of notification an assignment is (the funnel groups by it).
ASSIGNMENT_NOTIFICATION = "ticket_assigned"
