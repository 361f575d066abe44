"""A click on a notification names it; a malformed or foreign id is ignored, never a 500."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest
from django.test import Client

from example_project.fake_slack import FakeSlack
from silo_router.providers.registry import get_provider
from silo_router.providers.slack.parsing import strip_notification
from silo_router.region.handlers import slack

from ..slack_signing import block_actions, interactive_body, post_slack
from ..workspaces.conftest import T1, Installed
from .conftest import send

pytestmark = pytest.mark.django_db(transaction=True)

ID = "3f2b8c1d9e7a4b6c8d0e1f2a3b4c5d6e"


def parsed(payload: dict[str, Any]) -> Any:
    return get_provider("slack").parse(body=interactive_body(payload), headers={})


def test_a_click_on_the_notification_parses_its_id(fake: FakeSlack, workspaces: dict[str, Installed]) -> None:
    sent = send(workspaces[T1])
    click = fake.message_click(channel=sent.channel, ts=str(sent.ts), action_id="acknowledge")
    assert parsed(click).notification_id == sent.id
    assert strip_notification(click["actions"][0]["block_id"]) == "incident"


def test_the_id_is_read_without_metadata_and_without_the_block_mark(
    fake: FakeSlack, workspaces: dict[str, Installed]
) -> None:
    sent = send(workspaces[T1])
    bare = fake.message_click(channel=sent.channel, ts=str(sent.ts), action_id="escalate", include_metadata=False)
    assert "metadata" not in bare["message"]
    assert parsed(bare).notification_id == sent.id, "the block_id carries it when the payload has no metadata"
    with_metadata = fake.message_click(channel=sent.channel, ts=str(sent.ts), action_id="escalate")
    with_metadata["actions"][0]["block_id"] = "incident"
    assert parsed(with_metadata).notification_id == sent.id, "the metadata carries it when the block_id does not"


def test_a_modal_opened_from_a_notification_can_carry_it() -> None:
    view = {"id": "V1", "callback_id": "escalation", "private_metadata": json.dumps({"notification_id": ID})}
    submission = {"type": "view_submission", "team": {"id": "T0US00001"}, "user": {"id": "U1"}, "view": view}
    assert parsed(submission).notification_id == ID


def _with_block_id(block_id: Any) -> dict[str, Any]:
    payload = block_actions()
    payload["actions"][0]["block_id"] = block_id
    return payload


def _with_metadata(metadata: Any) -> dict[str, Any]:
    payload = block_actions()
    payload["message"] = {"type": "message", "ts": "1700000000.000100", "metadata": metadata}
    return payload


def _with_private_metadata(text: Any) -> dict[str, Any]:
    view = {"callback_id": "c", "private_metadata": text}
    return {"type": "view_submission", "team": {"id": "T0US00001"}, "view": view}


MALFORMED = {
    "no mark": _with_block_id(ID),
    "too short": _with_block_id(f"b~notification:{ID[:31]}"),
    "too long": _with_block_id(f"b~notification:{ID}0"),
    "upper case": _with_block_id(f"b~notification:{ID.upper()}"),
    "all zero": _with_block_id(f"b~notification:{'0' * 32}"),
    "not hex": _with_block_id(f"b~notification:{'g' * 32}"),
    "uuid with dashes": _with_block_id("b~notification:3f2b8c1d-9e7a-4b6c-8d0e-1f2a3b4c5d6e"),
    "block_id not a string": _with_block_id(12345),
    "another app's metadata": _with_metadata({"event_type": "task_created", "event_payload": {"notification_id": ID}}),
    "metadata payload not an object": _with_metadata({"event_type": "silo_router_notification", "event_payload": ID}),
    "metadata id not a string": _with_metadata(
        {"event_type": "silo_router_notification", "event_payload": {"notification_id": int(ID, 16)}}
    ),
    "metadata not an object": _with_metadata([ID]),
    "private_metadata not JSON": _with_private_metadata(f"{{notification_id: {ID}"),
    "private_metadata a list": _with_private_metadata(json.dumps([ID])),
    "private_metadata id malformed": _with_private_metadata(json.dumps({"notification_id": ID + "00"})),
}


@pytest.mark.parametrize("payload", MALFORMED.values(), ids=MALFORMED.keys())
def test_a_malformed_or_foreign_id_is_ignored(payload: dict[str, Any]) -> None:
    assert parsed(payload).notification_id is None


def test_a_click_with_a_malformed_id_is_still_handled(client: Client, installations: Any) -> None:
    seen: list[Any] = []

    @slack.action("resolve_dialog")
    def resolve(request: Any) -> None:
        seen.append(request.notification_id)

    payload = copy.deepcopy(MALFORMED["too long"])
    payload["message"] = {"metadata": {"event_type": "silo_router_notification", "event_payload": {"x": ID}}}
    response = post_slack(client, interactive_body(payload))
    assert response.status_code == 200
    assert seen == [None]


def test_the_handler_knows_which_notification_it_answers(
    client: Client, fake: FakeSlack, workspaces: dict[str, Installed]
) -> None:
    seen: list[Any] = []

    @slack.action("acknowledge")
    def acknowledge(request: Any) -> None:
        seen.append((request.notification_id, request.action["value"]))

    sent = send(workspaces[T1])
    click = fake.message_click(channel=sent.channel, ts=str(sent.ts), action_id="acknowledge")
    assert post_slack(client, interactive_body(click)).status_code == 200
    assert seen == [(sent.id, "7")]
