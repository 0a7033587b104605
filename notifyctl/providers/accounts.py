"""Opening a configured provider account (the engine and the scale-out worker both do it)."""

from __future__ import annotations

from notifyctl.providers.base import Provider, ProviderContext, build_provider
from notifyctl.settings import Settings


async def open_account(settings: Settings, name: str) -> Provider:
    """The provider configured as [providers.NAME], built and opened."""
    conf = settings.providers[name]
    context = ProviderContext(
        name=name,
        settings={**conf.options, "timeout_s": conf.timeout_s, "concurrency": conf.concurrency},
        db_path=settings.database_path,
        base_dir=settings.base_dir,
    )
    provider = build_provider(conf.type, context)
    await provider.open()
    return provider
