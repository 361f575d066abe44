"""Run the fake Slack as a process: ``python -m example_project.fake_slack --port N ...``."""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from types import FrameType

from example_project.fake_slack.server import DEFAULT_CLIENT_ID, DEFAULT_CLIENT_SECRET, FakeSlack


def _workspace(value: str) -> tuple[str, str | None]:
    """``T...`` or ``T...:E...`` (a workspace in an enterprise)."""
    team_id, _, enterprise_id = value.partition(":")
    if not team_id.startswith("T") or (enterprise_id and not enterprise_id.startswith("E")):
        raise argparse.ArgumentTypeError(f"expected T... or T...:E..., not {value!r}")
    return team_id, enterprise_id or None


def _channel(value: str) -> tuple[str, str]:
    """``T...:C...`` (a channel of a workspace)."""
    team_id, _, channel_id = value.partition(":")
    if not team_id.startswith("T") or not channel_id:
        raise argparse.ArgumentTypeError(f"expected T...:C..., not {value!r}")
    return team_id, channel_id


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(prog="python -m example_project.fake_slack", description=__doc__)
    parser.add_argument("--port", type=int, default=0, help="TCP port on 127.0.0.1 (0: any free port)")
    parser.add_argument("--signing-secret", required=True, help="the app's Slack signing secret")
    parser.add_argument("--bot-token", default=None, help="a single-workspace bot token valid for every workspace")
    parser.add_argument("--trigger-ttl", type=float, default=3.0, help="trigger_id lifetime in seconds")
    parser.add_argument("--response-url-ttl", type=float, default=1800.0, help="response_url lifetime in seconds")
    parser.add_argument("--client-id", default=DEFAULT_CLIENT_ID, help="the app's OAuth client id")
    parser.add_argument("--client-secret", default=DEFAULT_CLIENT_SECRET, help="the app's OAuth client secret")
    parser.add_argument("--redirect-uri", default=None, help="the app's default OAuth redirect URL")
    parser.add_argument("--token-rotation", action="store_true", help="issue expiring tokens with refresh tokens")
    parser.add_argument("--token-ttl", type=float, default=43200.0, help="access token lifetime with rotation (s)")
    parser.add_argument(
        "--workspace", type=_workspace, action="append", default=[], help="T... or T...:E... (repeatable)"
    )
    parser.add_argument("--channel", type=_channel, action="append", default=[], help="T...:C... (repeatable)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Serve until SIGTERM or SIGINT, then stop cleanly."""
    args = _parse_args(argv)
    fake = FakeSlack(
        signing_secret=args.signing_secret,
        bot_token=args.bot_token,
        trigger_ttl=args.trigger_ttl,
        response_url_ttl=args.response_url_ttl,
        port=args.port,
        client_id=args.client_id,
        client_secret=args.client_secret,
        token_rotation=args.token_rotation,
        token_ttl=args.token_ttl,
        redirect_uri=args.redirect_uri,
    )
    for team_id, enterprise_id in args.workspace:
        fake.add_workspace(team_id, enterprise_id=enterprise_id)
    for team_id, channel_id in args.channel:
        fake.add_workspace(team_id, channels=[channel_id])
    stopping = threading.Event()

    def _on_signal(signum: int, frame: FrameType | None) -> None:
        """Ask the main loop to stop."""
        stopping.set()

    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
    fake.start()
    try:
        print(f"fake-slack listening on {fake.base_url}", flush=True)
        while not stopping.wait(0.2):
            pass
    finally:
        fake.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
