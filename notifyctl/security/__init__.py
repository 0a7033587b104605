"""Signing, the SSRF guard, redaction, unsubscribe tokens."""
