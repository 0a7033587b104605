"""Email to a local folder: one RFC 5322 `.eml` file per message, written atomically.

The default email provider when nothing else is configured, so `notifyctl send` works on a
laptop. A file appears whole or not at all (temp file, fsync, rename), and writing the same
message again replaces it with the same content, so a re-send is harmless.
"""

from __future__ import annotations

import asyncio
import errno
import os
import re
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

from notifyctl.errors import ConfigError, PermanentError, ProviderError, TransientError
from notifyctl.models import Envelope, SendResult
from notifyctl.providers.base import Capabilities, ProviderContext
from notifyctl.providers.email.mime import build_message_bytes, domain_of

DEFAULT_FROM = "notifyctl <notifications@example.com>"

# A full disk or a flaky device may recover; permission or path problems will not.
_TRANSIENT_ERRNOS = frozenset({errno.ENOSPC, errno.EIO, errno.EDQUOT, errno.EAGAIN, errno.EINTR})
_SAFE_FILE_STEM = re.compile(r"[A-Za-z0-9_=+-][A-Za-z0-9._=+-]*")


@contextmanager
def _mapped_errors() -> Iterator[None]:
    """The one place where library exceptions become provider errors."""
    try:
        yield
    except ProviderError:
        raise
    except OSError as exc:
        detail = f"{exc.strerror or exc} ({errno.errorcode.get(exc.errno or 0, 'unknown')})"
        if exc.errno in _TRANSIENT_ERRNOS:
            raise TransientError(f"outbox write failed: {detail}", code="io") from exc
        raise PermanentError(f"outbox write failed: {detail}", code="io") from exc


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomically(folder: Path, name: str, content: bytes) -> Path:
    """Write `folder/name` with mode 0600 so that it appears whole or not at all."""
    fd, temp_name = tempfile.mkstemp(dir=folder, prefix=f".{name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(content)
            handle.flush()
            os.fsync(handle.fileno())
        target = folder / name
        os.replace(temp_name, target)
    except BaseException:
        with suppress(OSError):
            os.unlink(temp_name)
        raise
    # The rename is durable only once the directory entry is on disk.
    _fsync_dir(folder)
    return target


class OutboxProvider:
    """Writes each email to `<path>/<message_id>.eml`."""

    capabilities = Capabilities(channels=("email",), supports_html=True, idempotent=True)

    def __init__(self, context: ProviderContext) -> None:
        self.name = context.name
        settings = context.settings
        self.folder = context.base_dir / str(settings.get("path", "outbox"))
        self.from_address = str(settings.get("from_address", DEFAULT_FROM))
        try:
            domain = domain_of(self.from_address)
        except PermanentError as exc:
            raise ConfigError(f"invalid from address: {exc}", key=f"providers.{self.name}.from_address") from exc
        self.message_id_domain = str(settings.get("message_id_domain") or domain)

    async def open(self) -> None:
        with _mapped_errors():
            await asyncio.to_thread(self._create_folder)

    def _create_folder(self) -> None:
        if not self.folder.is_dir():
            self.folder.mkdir(mode=0o700, parents=True, exist_ok=True)
            # mkdir's mode is filtered by the umask; the outbox holds personal data.
            self.folder.chmod(0o700)

    async def close(self) -> None:
        return None

    async def send(self, envelope: Envelope) -> SendResult:
        with _mapped_errors():
            if not _SAFE_FILE_STEM.fullmatch(envelope.message_id):
                raise PermanentError(
                    f"message id {envelope.message_id!r} cannot be used as a file name", code="bad_message_id"
                )
            content = build_message_bytes(envelope, self.from_address, self.message_id_domain)
            file_name = f"{envelope.message_id}.eml"
            # fsync can take milliseconds; keep it off the event loop.
            await asyncio.to_thread(write_atomically, self.folder, file_name, content)
        return SendResult(provider=self.name, provider_message_id=file_name)
