"""The modal views the library shows by itself: loading, done and failed."""

from __future__ import annotations

from typing import Any

LOADING_TEXT = "Working on it..."


def _modal(title: str, text: str, *, external_id: str | None = None) -> dict[str, Any]:
    view: dict[str, Any] = {
        "type": "modal",
        "title": {"type": "plain_text", "text": title[:24]},
        "close": {"type": "plain_text", "text": "Close"},
        "blocks": [{"type": "section", "text": {"type": "mrkdwn", "text": text}}],
    }
    if external_id:
        view["external_id"] = external_id
    return view


def loading_view(external_id: str) -> dict[str, Any]:
    """Shown by the control silo while the region does the work."""
    return _modal("Loading", f":hourglass_flowing_sand: {LOADING_TEXT}", external_id=external_id)


def failed_view(reason: str) -> dict[str, Any]:
    """Replaces the loading modal when the region failed or did not answer in time."""
    return _modal("Something went wrong", f":warning: {reason}")


def done_view() -> dict[str, Any]:
    """Replaces a loading modal that the handler left untouched after succeeding."""
    return _modal("Done", ":white_check_mark: Done.")
