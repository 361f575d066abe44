"""Tests for example_project.fake_slack."""
