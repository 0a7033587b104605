"""Standard input kept in a file, so that it can be read twice (validated, then sent) and resumed."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import BinaryIO


def spool_stdin(stream: BinaryIO, directory: Path | None = None) -> Path:
    """Copy a stream to a private temporary file (the caller deletes it) so it can be read twice."""
    with tempfile.NamedTemporaryFile(
        "wb", prefix="notifyctl-stdin-", suffix=".input", dir=directory, delete=False
    ) as spool:
        shutil.copyfileobj(stream, spool, 1 << 20)
    return Path(spool.name)
