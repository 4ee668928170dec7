"""Audit: an append-only record of who did what, when and from where."""
