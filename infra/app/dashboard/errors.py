"""Errors of the dashboard package."""

from __future__ import annotations

from infra.errors import ModelBusError


class DashboardError(ModelBusError):
    """A filter value or dashboard definition is not usable; the message says which and why."""
