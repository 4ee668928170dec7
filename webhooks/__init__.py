"""Webhooks: programs that hold no connection learn that a run ended (docs/clients.md)."""
