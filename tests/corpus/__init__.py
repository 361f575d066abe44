"""Recorded-style Slack requests shared by the test suites (``tests/corpus/slack/*.json``).

Each file holds ``description``, ``content_type``, the raw ``body`` exactly as Slack
sends it (JSON text, or an urlencoded form whose ``payload`` field is urlencoded
JSON) and ``expect`` (``type``, ``name``, ``team_id``, ``enterprise_id``, ``app_id``,
``organization_hint``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

SLACK_CORPUS_DIR = Path(__file__).resolve().parent / "slack"


def load_slack_corpus() -> list[dict[str, Any]]:
    """Every Slack corpus entry, sorted by file name, each with a ``file`` key added."""
    entries = []
    for path in sorted(SLACK_CORPUS_DIR.glob("*.json")):
        entry = json.loads(path.read_text(encoding="utf-8"))
        entry["file"] = path.name
        entries.append(entry)
    return entries
