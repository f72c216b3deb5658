"""The client, with one bug of the kind poolwatch's pytest plugin finds."""

from __future__ import annotations

from typing import Any

import requests


class WeatherClient:
    """Reads forecasts from ``base_url`` through a ``requests.Session``."""

    def __init__(self, base_url: str, session: requests.Session | None = None) -> None:
        self.base_url = base_url
        self.session = session if session is not None else requests.Session()

    def forecast(self, city: str) -> dict[str, Any]:
        """The forecast for ``city`` (the body is read, so the connection is reused)."""
        response = self.session.get(f"{self.base_url}/forecast/{city}", timeout=5)
        response.raise_for_status()
        data: dict[str, Any] = response.json()
        return data

    def is_up(self) -> bool:
        """Whether the API answers.

        The bug: the response is streamed to look at its status only, and is
        never read nor closed, so its connection stays checked out until the
        garbage collector finds it.
        """
        response = self.session.get(f"{self.base_url}/health", stream=True, timeout=5)
        return response.status_code == 200
