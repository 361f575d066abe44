"""Route integration webhooks from a Django control silo to region silos."""

__version__ = "0.1.0"
