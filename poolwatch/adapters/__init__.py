"""Adapters that put poolwatch under ``requests`` and ``httpx``; each imports
its client library, so import them only when needed."""
