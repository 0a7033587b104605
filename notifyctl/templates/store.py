"""The template store: one folder per template under a root, compiled templates cached per version.

A template's version is a hash of its files' contents, and compiled templates are cached per
version: compile once at load time, render many times. A cheap stat of the folder's files
tells whether anything changed since the last load; symlinks and oversized files are refused.
The folder's layout is described in notifyctl/templates/manifest.py.
"""

from __future__ import annotations

import builtins
import hashlib
import os
import re
from collections.abc import Collection, Mapping
from pathlib import Path

from notifyctl.errors import TemplateError
from notifyctl.templates.sandbox import RENDER_TIMEOUT_S
from notifyctl.templates.template import Template, TemplateInfo

SOURCE_MAX_BYTES = 1024 * 1024
_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")


class TemplateStore:
    """The template folders under `root`; compiled templates cached per content version."""

    def __init__(
        self, root: Path, render_timeout_s: float = RENDER_TIMEOUT_S, categories: Collection[str] | None = None
    ) -> None:
        """`categories`: the defined ones; a template naming another is refused (None: no check)."""
        self.root = Path(root)
        self.render_timeout_s = render_timeout_s
        self.categories = None if categories is None else frozenset(categories)
        self._cache: dict[str, tuple[tuple[tuple[str, int, int, int], ...], Template]] = {}

    def names(self) -> builtins.list[str]:
        if not self.root.is_dir():
            return []
        return sorted(
            entry.name
            for entry in self.root.iterdir()
            if _NAME_RE.fullmatch(entry.name) and (entry / "manifest.toml").is_file()
        )

    def list(self) -> builtins.list[TemplateInfo]:
        """Every template, loaded and checked; a broken one raises TemplateError."""
        return [self.get(name).info for name in self.names()]

    def get(self, name: str) -> Template:
        folder = self.root / name
        if not _NAME_RE.fullmatch(name) or not (folder / "manifest.toml").is_file():
            known = ", ".join(self.names()) or f"none in {self.root}"
            raise TemplateError(f"unknown template (known: {known})", template=name)
        stats = _stat_files(name, folder)
        cached = self._cache.get(name)
        if cached is not None and cached[0] == stats:
            return cached[1]
        files = {path: (folder / path).read_bytes() for path, *_ in stats}
        version = content_version(files)
        unchanged = cached is not None and cached[1].version == version
        template = (
            cached[1] if cached is not None and unchanged else Template(name, files, version, self.render_timeout_s)
        )
        self._cache[name] = (stats, template)
        if self.categories is not None and template.category not in self.categories:
            raise TemplateError(
                f"category '{template.category}' is not defined in the configuration "
                f"(known: {', '.join(sorted(self.categories))})",
                template=name,
            )
        return template


def content_version(files: Mapping[str, bytes]) -> str:
    """First 16 hex digits of sha256 over the sorted (relative path, bytes) pairs."""
    digest = hashlib.sha256()
    for path in sorted(files):
        raw = files[path]
        digest.update(path.encode() + b"\0" + len(raw).to_bytes(8, "big"))
        digest.update(raw)
    return digest.hexdigest()[:16]


def _stat_files(name: str, folder: Path) -> tuple[tuple[str, int, int, int], ...]:
    """(relative path, size, mtime, inode) of every file: a cheap check that nothing changed since the last load."""
    found: builtins.list[tuple[str, int, int, int]] = []
    for directory, subdirs, filenames in os.walk(folder):
        for filename in subdirs + filenames:
            path = Path(directory) / filename
            relative = path.relative_to(folder).as_posix()
            if path.is_symlink():
                raise TemplateError("symlinks are not allowed in template folders", template=name, part=relative)
            if filename in subdirs:
                continue
            stat = path.stat()
            if stat.st_size > SOURCE_MAX_BYTES:
                raise TemplateError(f"file over {SOURCE_MAX_BYTES // 1024} KiB", template=name, part=relative)
            found.append((relative, stat.st_size, stat.st_mtime_ns, stat.st_ino))
    return tuple(sorted(found))
