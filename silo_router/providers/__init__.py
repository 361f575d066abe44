"""Provider integrations: each verifies, parses and answers one platform's webhooks."""
