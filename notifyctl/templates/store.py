"""Sandboxed Jinja2 templates: one folder per template, parts per channel, locale fallback.

    templates/NAME/manifest.toml        category, channels, default_locale, description
    templates/NAME/email/subject.j2     email: subject + text and/or html
    templates/NAME/sms/text.j2          sms: text
    templates/NAME/push/title.j2        push, inapp: title + body (+ data.json, a JSON object)
    templates/NAME/webhook/body.json.j2 webhook: body.json (a JSON object or array)

A locale variant sits next to its default (`email/subject.fr-CA.j2`); "fr-CA" falls back to
"fr", then to the unsuffixed file, part by part. Files whose name starts with `_` are partials
for `{% include "email/_footer.html.j2" %}` (paths are relative to the template folder).

A template's version is a hash of its files' contents, and compiled templates are cached per
version: compile once at load time, render many times. Rendering runs in an immutable sandbox
with StrictUndefined; HTML parts autoescape, others do not. JSON parts must print every value
through `|tojson`, so data can never inject keys. The blow-up guards and their known limits are
in notifyctl/templates/sandbox.py.
"""

from __future__ import annotations

import builtins
import functools
import hashlib
import json
import os
import re
import tomllib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import orjson
from jinja2 import DictLoader, meta, nodes
from jinja2 import Template as JinjaTemplate
from jinja2 import exceptions as jinja_errors

from notifyctl.errors import TemplateError
from notifyctl.models import CHANNELS
from notifyctl.templates.sandbox import (
    RENDER_TIMEOUT_S,
    RenderTimeout,
    TemplateSandbox,
    check_deadline,
    render_deadline,
)

BUILTIN_VARIABLES: frozenset[str] = frozenset(
    {"user_id", "email", "phone", "locale", "timezone", "unsubscribe_url", "now", "run_id", "event_id", "template"}
)

# Parts each channel may have, in render order; and what it must have (one name of each group).
CHANNEL_PARTS: dict[str, tuple[str, ...]] = {
    "email": ("subject", "text", "html"),
    "sms": ("text",),
    "push": ("title", "body", "data.json"),
    "inapp": ("title", "body", "data.json"),
    "webhook": ("body.json",),
}
REQUIRED_PARTS: dict[str, tuple[tuple[str, ...], ...]] = {
    "email": (("subject",), ("text", "html")),
    "sms": (("text",),),
    "push": (("title",), ("body",)),
    "inapp": (("title",), ("body",)),
    "webhook": (("body.json",),),
}

SMS_MAX_CHARS = 1600
PUSH_MAX_BYTES = 4096  # FCM's limit for the whole notification + data payload
PART_MAX_BYTES = 256 * 1024
SOURCE_MAX_BYTES = 1024 * 1024
_MANIFEST_KEYS = frozenset({"category", "channels", "default_locale", "description"})
_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
_LOCALE_RE = re.compile(r"[A-Za-z]{2,3}(?:[-_][A-Za-z0-9]{1,8})*")
_UNPROVIDED = "is not provided (not an audience column, campaign data key or user attribute)"


def _is_html(name: str | None) -> bool:
    return name is not None and "html" in PurePosixPath(name).name.split(".")


# --- locales -----------------------------------------------------------------------------------


def _locale_key(tag: str) -> str:
    return tag.replace("_", "-").lower()


def _locale_display(tag: str) -> str:
    """BCP 47 casing: language lower, script title, region upper ("zh-Hant-TW")."""
    subtags = _locale_key(tag).split("-")
    shown = [subtags[0]]
    for subtag in subtags[1:]:
        if len(subtag) == 4 and subtag.isalpha():
            shown.append(subtag.title())
        elif len(subtag) == 2 or (len(subtag) == 3 and subtag.isdigit()):
            shown.append(subtag.upper())
        else:
            shown.append(subtag)
    return "-".join(shown)


@functools.lru_cache(maxsize=4096)
def locale_chain(locale: str | None) -> tuple[str, ...]:
    """Lookup keys for a requested locale, most specific first: "fr_CA.UTF-8" → ("fr-ca", "fr")."""
    if not locale:
        return ()
    tag = _locale_key(locale.strip().split(".", 1)[0].split("@", 1)[0])
    subtags = [s for s in tag.split("-") if s]
    return tuple("-".join(subtags[:n]) for n in range(len(subtags), 0, -1))


# --- the template ------------------------------------------------------------------------------


@dataclass(frozen=True)
class TemplateInfo:
    name: str
    category: str
    channels: list[str]
    default_locale: str
    description: str
    version: str
    locales: list[str]


@dataclass(frozen=True)
class _Part:
    channel: str
    part: str  # "subject", "data.json"
    locale: str | None  # lookup key, None for the default file
    label: str  # "email/subject", "email/subject.fr-CA": what errors and problems call it
    compiled: JinjaTemplate
    variables: frozenset[str]


def _parse_manifest(name: str, raw: bytes) -> dict[str, Any]:
    def fail(message: str) -> TemplateError:
        return TemplateError(message, template=name, part="manifest.toml")

    try:
        manifest = tomllib.loads(raw.decode("utf-8-sig"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise fail(f"not valid TOML: {exc}") from exc
    unknown = sorted(set(manifest) - _MANIFEST_KEYS)
    if unknown:
        raise fail(f"unknown keys {unknown}; allowed: {sorted(_MANIFEST_KEYS)}")
    category = manifest.get("category")
    if not isinstance(category, str) or not category:
        raise fail("'category' must be a non-empty string")
    channels = manifest.get("channels")
    if not isinstance(channels, builtins.list) or not channels:
        raise fail(f"'channels' must be a non-empty list of {builtins.list(CHANNELS)}")
    for channel in channels:
        if channel not in CHANNELS:
            raise fail(f"unknown channel {channel!r}; known: {', '.join(CHANNELS)}")
    if len(set(channels)) != len(channels):
        raise fail("'channels' lists a channel twice")
    default_locale = manifest.get("default_locale", "en")
    if not isinstance(default_locale, str) or not _LOCALE_RE.fullmatch(default_locale):
        raise fail(f'\'default_locale\' must be a locale tag such as "en" or "fr-CA", not {default_locale!r}')
    description = manifest.get("description", "")
    if not isinstance(description, str):
        raise fail("'description' must be a string")
    return {
        "category": category,
        "channels": channels,
        "default_locale": _locale_display(default_locale),
        "description": description,
    }


def _split_part_file(channel: str, filename: str) -> tuple[str, str | None] | None:
    """("subject", "fr-CA") for "subject.fr-CA.j2"; None when the name is not a part of the channel."""
    stem = filename.removesuffix(".j2")
    for part in sorted(CHANNEL_PARTS[channel], key=len, reverse=True):
        if stem == part:
            return part, None
        suffix = stem.removeprefix(part + ".")
        if suffix != stem and _LOCALE_RE.fullmatch(suffix):
            return part, suffix
    return None


def _check_json_outputs(name: str, label: str, ast: nodes.Template) -> None:
    """In JSON parts every printed value goes through |tojson, so data cannot inject keys."""
    for output in ast.find_all(nodes.Output):
        for node in output.nodes:
            if isinstance(node, nodes.TemplateData | nodes.Const):
                continue
            if isinstance(node, nodes.Filter) and node.name == "tojson":
                continue
            raise TemplateError(
                f"line {node.lineno}: JSON parts must print values with |tojson (for example "
                '{"name": {{ first_name|tojson }}})',
                template=name,
                part=label,
            )


class Template:
    """One compiled template version. Build through TemplateStore.get()."""

    def __init__(
        self, name: str, files: Mapping[str, bytes], version: str, render_timeout_s: float = RENDER_TIMEOUT_S
    ) -> None:
        self.name = name
        self.version = version
        self.render_timeout_s = render_timeout_s
        manifest = _parse_manifest(name, files["manifest.toml"])
        self.category: str = manifest["category"]
        self.channels: list[str] = manifest["channels"]
        self.default_locale: str = manifest["default_locale"]
        self.description: str = manifest["description"]

        sources: dict[str, str] = {}
        for path, raw in files.items():
            if path.endswith(".j2"):
                try:
                    sources[path] = raw.decode("utf-8-sig")
                except UnicodeDecodeError as exc:
                    raise TemplateError(f"not valid UTF-8: {exc}", template=name, part=path) from exc
        loader = DictLoader(sources)
        self._env = TemplateSandbox(loader, autoescape=False)
        self._html_env = TemplateSandbox(loader, autoescape=True)
        self._ignored_names = frozenset(self._env.globals)
        self._file_variables: dict[str, frozenset[str]] = {}
        self._parts: dict[str, dict[str, dict[str | None, _Part]]] = {}
        locales: dict[str, str] = {}
        for channel in self.channels:
            self._parts[channel] = self._load_channel(channel, sources, locales)
        default_key = _locale_key(self.default_locale)
        self.locales: list[str] = [self.default_locale, *sorted(v for k, v in locales.items() if k != default_key)]
        self._resolved: dict[tuple[str, tuple[str, ...]], dict[str, _Part]] = {}

    @property
    def info(self) -> TemplateInfo:
        return TemplateInfo(
            name=self.name,
            category=self.category,
            channels=builtins.list(self.channels),
            default_locale=self.default_locale,
            description=self.description,
            version=self.version,
            locales=builtins.list(self.locales),
        )

    def _load_channel(
        self, channel: str, sources: dict[str, str], locales: dict[str, str]
    ) -> dict[str, dict[str | None, _Part]]:
        parts: dict[str, dict[str | None, _Part]] = {}
        prefix = channel + "/"
        for path in sorted(p for p in sources if p.startswith(prefix)):
            filename = path.removeprefix(prefix)
            if filename.startswith("_"):
                continue
            split = _split_part_file(channel, filename)
            if split is None:
                raise TemplateError(
                    f"unexpected file; {channel} parts are {', '.join(CHANNEL_PARTS[channel])} "
                    "(NAME.j2 or NAME.LOCALE.j2; partials start with '_')",
                    template=self.name,
                    part=path,
                )
            part, tag = split
            key = None if tag is None else _locale_key(tag)
            label = f"{channel}/{part}" + ("" if tag is None else f".{_locale_display(tag)}")
            if key in parts.setdefault(part, {}):
                raise TemplateError("two files for the same part and locale", template=self.name, part=path)
            if key is not None:
                locales[key] = _locale_display(tag or "")
            compiled = self._compile(path, label)
            parts[part][key] = _Part(channel, part, key, label, compiled, self._variables_of(path, label))
        for group in REQUIRED_PARTS[channel]:
            if not any(None in parts.get(part, {}) for part in group):
                wanted = " or ".join(f"{channel}/{part}.j2" for part in group)
                raise TemplateError(
                    f"channel '{channel}' is listed in the manifest but {wanted} is missing",
                    template=self.name,
                    part=f"{channel}/{group[0]}",
                )
        return {part: parts[part] for part in CHANNEL_PARTS[channel] if part in parts}

    def _compile(self, path: str, label: str) -> JinjaTemplate:
        try:
            return (self._html_env if _is_html(path) else self._env).get_template(path)
        except jinja_errors.TemplateSyntaxError as exc:
            where = f"{exc.name}, line {exc.lineno}" if exc.name and exc.name != path else f"line {exc.lineno}"
            raise TemplateError(f"syntax error ({where}): {exc.message}", template=self.name, part=label) from exc

    def _variables_of(self, path: str, label: str, seen: frozenset[str] = frozenset()) -> frozenset[str]:
        """Undeclared names of a file and of the partials it includes (which meta does not follow)."""
        cached = self._file_variables.get(path)
        if cached is not None:
            return cached
        source = self._env.loader.get_source(self._env, path)[0]  # type: ignore[union-attr]
        try:
            ast = self._env.parse(source, name=path)
        except jinja_errors.TemplateSyntaxError as exc:
            raise TemplateError(
                f"syntax error (line {exc.lineno}): {exc.message}", template=self.name, part=path
            ) from exc
        if "json" in PurePosixPath(path).name.split("."):
            _check_json_outputs(self.name, label, ast)
        names = set(meta.find_undeclared_variables(ast)) - self._ignored_names
        for included in meta.find_referenced_templates(ast):
            if included is None or included in seen:
                continue
            if included not in self._env.loader.list_templates():  # type: ignore[union-attr]
                raise TemplateError(f"includes '{included}', which does not exist", template=self.name, part=label)
            names |= self._variables_of(included, label, seen | {path})
        self._file_variables[path] = frozenset(names)
        return self._file_variables[path]

    def _channel_parts(self, channel: str) -> dict[str, dict[str | None, _Part]]:
        parts = self._parts.get(channel)
        if parts is None:
            raise TemplateError(
                f"has no {channel} channel (it has: {', '.join(self.channels)})", template=self.name, part=channel
            )
        return parts

    def _all_parts(self, channels: list[str]) -> Iterator[_Part]:
        for channel in channels:
            for variants in self._channel_parts(channel).values():
                yield from variants.values()

    def required_variables(self, channel: str | None = None) -> set[str]:
        """Top-level names the parts of `channel` (default: every channel) read, in any locale."""
        channels = self.channels if channel is None else [channel]
        names: set[str] = set()
        for part in self._all_parts(channels):
            names |= part.variables
        return names

    def check_variables(self, available: set[str], channels: builtins.list[str]) -> builtins.list[str]:
        """Human-readable problems with the variables the template needs; empty when all are there."""
        problems: builtins.list[str] = []
        provided = available | BUILTIN_VARIABLES
        for channel in channels:
            if channel not in self._parts:
                problems.append(f"{channel}: template '{self.name}' has no {channel} channel")
                continue
            for variants in self._parts[channel].values():
                in_default = variants[None].variables if None in variants else frozenset()
                for key in sorted(variants, key=lambda k: k or ""):
                    part = variants[key]
                    missing = part.variables - provided
                    if key is not None:
                        missing -= in_default  # already reported for the default file
                    problems.extend(f"{part.label}: variable '{name}' {_UNPROVIDED}" for name in sorted(missing))
        return problems

    def _resolve(self, channel: str, locale: str | None) -> dict[str, _Part]:
        chain = locale_chain(locale)
        key = (channel, chain)
        resolved = self._resolved.get(key)
        if resolved is None:
            resolved = {}
            for part, variants in self._channel_parts(channel).items():
                for candidate in (*chain, None):
                    if candidate in variants:
                        resolved[part] = variants[candidate]
                        break
            if len(self._resolved) < 1024:  # locales come from user data; keep the memo bounded
                self._resolved[key] = resolved
        return resolved

    def _render_part(self, part: _Part, variables: dict[str, Any]) -> str:
        """Render one part; `variables` already holds the sandbox globals (see render())."""
        try:
            # Template.render() would copy globals and context into a new dict for every part;
            # a shared context built once per message renders about twice as fast.
            chunks: builtins.list[str] = []
            size = 0
            for chunk in part.compiled.root_render_func(part.compiled.new_context(variables, shared=True)):
                # Characters never outnumber UTF-8 bytes: stop as soon as the cap is certainly passed.
                size += len(chunk)
                if size > PART_MAX_BYTES:
                    raise TemplateError(
                        f"output over {PART_MAX_BYTES // 1024} KiB", template=self.name, part=part.label
                    )
                chunks.append(chunk)
                check_deadline()
            output = "".join(chunks)
        except TemplateError:
            raise
        except RenderTimeout as exc:
            raise TemplateError(
                f"render took longer than {self.render_timeout_s:g} s (loops or output too large)",
                template=self.name,
                part=part.label,
            ) from exc
        except jinja_errors.SecurityError as exc:
            raise TemplateError(f"unsafe operation refused: {exc}", template=self.name, part=part.label) from exc
        except jinja_errors.UndefinedError as exc:
            raise TemplateError(f"undefined variable: {exc}", template=self.name, part=part.label) from exc
        except Exception as exc:  # template code is data: whatever it raises is the template's error
            raise TemplateError(
                f"render failed: {type(exc).__name__}: {exc}", template=self.name, part=part.label
            ) from exc
        if len(output) > PART_MAX_BYTES // 4 and len(output.encode("utf-8", "surrogatepass")) > PART_MAX_BYTES:
            raise TemplateError(f"output over {PART_MAX_BYTES // 1024} KiB", template=self.name, part=part.label)
        return output

    def _render_json(self, part: _Part, variables: dict[str, Any]) -> Any:
        text = self._render_part(part, variables)
        try:
            return _JSON_PART.decode(text)
        except ValueError as exc:
            raise TemplateError(f"did not render to valid JSON: {exc}", template=self.name, part=part.label) from exc

    def render(self, channel: str, locale: str | None, context: Mapping[str, Any]) -> dict[str, Any]:
        """The rendered parts of one channel in the best matching locale."""
        parts = self._resolve(channel, locale)
        with render_deadline(self.render_timeout_s):
            return self._shape(channel, parts, {**self._env.globals, **context})

    def _shape(self, channel: str, parts: dict[str, _Part], variables: dict[str, Any]) -> dict[str, Any]:
        def text(name: str) -> str | None:
            return self._render_part(parts[name], variables) if name in parts else None

        def fail(message: str, name: str) -> TemplateError:
            return TemplateError(message, template=self.name, part=parts[name].label)

        if channel == "email":
            subject = _one_line(text("subject") or "")
            if not subject:
                raise fail("subject rendered empty", "subject")
            body_text, body_html = text("text"), text("html")
            if not (body_text or "").strip() and not (body_html or "").strip():
                raise fail("text and html both rendered empty", "text" if "text" in parts else "html")
            return {"subject": subject, "text": body_text, "html": body_html}
        if channel == "sms":
            sms = (text("text") or "").strip()
            if not sms:
                raise fail("rendered empty", "text")
            if len(sms) > SMS_MAX_CHARS:
                raise fail(f"SMS text is {len(sms)} characters, over the {SMS_MAX_CHARS} cap", "text")
            return {"text": sms}
        if channel in ("push", "inapp"):
            data: Any = self._render_json(parts["data.json"], variables) if "data.json" in parts else {}
            if not isinstance(data, dict):
                raise fail("must render to a JSON object", "data.json")
            message = {"title": _one_line(text("title") or ""), "body": (text("body") or "").strip(), "data": data}
            if channel == "push":
                size = len(orjson.dumps(message))
                if size > PUSH_MAX_BYTES:
                    raise fail(
                        f"push payload (title, body, data) is {size} bytes, over the {PUSH_MAX_BYTES}-byte cap", "body"
                    )
            return message
        body = self._render_json(parts["body.json"], variables)
        if not isinstance(body, dict | builtins.list):
            raise fail("must render to a JSON object or array", "body.json")
        return {"body": body}


def _one_line(value: str) -> str:
    """Subjects and titles are single lines; a line break from data must not reach a header."""
    return re.sub(r"\s*[\r\n]+\s*", " ", value.strip())


def _unique_keys(pairs: builtins.list[tuple[str, Any]]) -> dict[str, Any]:
    result = dict(pairs)
    if len(result) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise ValueError(f"duplicate key {key!r}")
            seen.add(key)
    return result


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


# One decoder for every JSON part: `json.loads` with hooks builds a new decoder per call.
_JSON_PART = json.JSONDecoder(object_pairs_hook=_unique_keys, parse_constant=_no_constant)


# --- the store ---------------------------------------------------------------------------------


class TemplateStore:
    """The template folders under `root`; compiled templates cached per content version."""

    def __init__(self, root: Path, render_timeout_s: float = RENDER_TIMEOUT_S) -> None:
        self.root = Path(root)
        self.render_timeout_s = render_timeout_s
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
