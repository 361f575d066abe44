"""Tests for provider integrations."""
