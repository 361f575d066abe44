"""Action ids of the demo's buttons and the assignment notification's name (no Django import: the demo reads them)."""

from __future__ import annotations

#: The buttons of an assignment notification.
ACKNOWLEDGE_ACTION, ESCALATE_ACTION = "assignment_acknowledge", "assignment_escalate"
#: What kind of notification an assignment is (the funnel groups by it).
ASSIGNMENT_NOTIFICATION = "ticket_assigned"
#: A button of the benchmarks: its handler records when it started (``issues_effect``).
LEDGER_CLICK_ACTION = "ledger_click"
