"""Example project: a runnable control silo, region silos and a fake Slack."""
