"""Run the fake Slack as a process: ``python -m example_project.fake_slack --port N ...``."""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from types import FrameType

from example_project.fake_slack.server import FakeSlack


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(prog="python -m example_project.fake_slack", description=__doc__)
    parser.add_argument("--port", type=int, default=0, help="TCP port on 127.0.0.1 (0: any free port)")
    parser.add_argument("--signing-secret", required=True, help="the app's Slack signing secret")
    parser.add_argument("--bot-token", required=True, help="the only bot token the Web API accepts")
    parser.add_argument("--trigger-ttl", type=float, default=3.0, help="trigger_id lifetime in seconds")
    parser.add_argument("--response-url-ttl", type=float, default=1800.0, help="response_url lifetime in seconds")
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
    )
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
