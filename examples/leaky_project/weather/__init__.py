"""A tiny client for a weather API: the code under test."""

from .client import WeatherClient

__all__ = ["WeatherClient"]
