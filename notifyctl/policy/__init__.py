"""Preferences, suppression, consent, quiet hours: send, skip or defer."""
