"""The Django app of fluxus: ``"fluxus.contrib.django"`` in ``INSTALLED_APPS``."""

from __future__ import annotations

from typing import ClassVar

from django.apps import AppConfig
from django.core import checks


class FluxusConfig(AppConfig):  # type: ignore[misc] # Django ships no annotations
    """Registers the system checks and the ``fluxus_dlq`` management command."""

    name: ClassVar[str] = "fluxus.contrib.django"
    label: ClassVar[str] = "fluxus"
    verbose_name: ClassVar[str] = "fluxus"
    default: ClassVar[bool] = True

    def ready(self) -> None:
        """Register the checks of the ``FLUXUS_*`` settings and the middleware."""
        from fluxus.contrib.django import _checks  # noqa: PLC0415 - apps are ready

        checks.register(_checks.check_settings, checks.Tags.compatibility)
        checks.register(_checks.check_middleware, checks.Tags.compatibility)
