"""The demo app of the region silos: issues that Slack buttons resolve or archive."""
