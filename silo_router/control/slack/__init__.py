"""Slack installations held by the control silo: storage, encryption, authorization, lifecycle."""
