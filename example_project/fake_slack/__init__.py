"""A fake Slack for tests and the demo: a loopback Web API server and a signed-request sender."""

from example_project.fake_slack.client import FakeSlackEndpoints, Sent, SlackSender
from example_project.fake_slack.server import Call, FakeSlack, SlackError, Workspace

__all__ = ["Call", "FakeSlack", "FakeSlackEndpoints", "Sent", "SlackError", "SlackSender", "Workspace"]
