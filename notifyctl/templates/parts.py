"""A template's part files compiled in the sandbox, with the variables each one reads.

Compiling happens once per template version (at load time); rendering reuses the compiled
parts. HTML parts autoescape, others do not. JSON parts must print every value through
`|tojson`, so data can never inject keys: that is checked here, on the parsed template.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from jinja2 import DictLoader, meta, nodes
from jinja2 import Template as JinjaTemplate
from jinja2 import exceptions as jinja_errors

from notifyctl.errors import TemplateError
from notifyctl.templates.locales import locale_display, locale_key
from notifyctl.templates.manifest import CHANNEL_PARTS, REQUIRED_PARTS, is_html, is_json, split_part_file
from notifyctl.templates.sandbox import TemplateSandbox


@dataclass(frozen=True)
class Part:
    channel: str
    part: str  # "subject", "data.json"
    locale: str | None  # lookup key, None for the default file
    label: str  # "email/subject", "email/subject.fr-CA": what errors and problems call it
    compiled: JinjaTemplate
    variables: frozenset[str]


# {part name: {locale lookup key, or None for the default file: compiled part}}
ChannelParts = dict[str, dict[str | None, Part]]


def decode_sources(name: str, files: Mapping[str, bytes]) -> dict[str, str]:
    """The text of every `.j2` file of template `name` (parts and partials)."""
    sources: dict[str, str] = {}
    for path, raw in files.items():
        if path.endswith(".j2"):
            try:
                sources[path] = raw.decode("utf-8-sig")
            except UnicodeDecodeError as exc:
                raise TemplateError(f"not valid UTF-8: {exc}", template=name, part=path) from exc
    return sources


def check_json_outputs(name: str, label: str, ast: nodes.Template) -> None:
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


class PartCompiler:
    """Compiles the parts of one template's channels; `locales` collects the variants seen."""

    def __init__(self, name: str, sources: dict[str, str]) -> None:
        self.name = name
        self._sources = sources
        loader = DictLoader(sources)
        self.env = TemplateSandbox(loader, autoescape=False)
        self._html_env = TemplateSandbox(loader, autoescape=True)
        self._ignored_names = frozenset(self.env.globals)
        self._file_variables: dict[str, frozenset[str]] = {}
        self.locales: dict[str, str] = {}  # lookup key → display tag

    def load_channel(self, channel: str) -> ChannelParts:
        """Every part file of `channel`, compiled; TemplateError for a stray file or a missing part."""
        parts: ChannelParts = {}
        prefix = channel + "/"
        for path in sorted(p for p in self._sources if p.startswith(prefix)):
            filename = path.removeprefix(prefix)
            if filename.startswith("_"):
                continue
            split = split_part_file(channel, filename)
            if split is None:
                raise TemplateError(
                    f"unexpected file; {channel} parts are {', '.join(CHANNEL_PARTS[channel])} "
                    "(NAME.j2 or NAME.LOCALE.j2; partials start with '_')",
                    template=self.name,
                    part=path,
                )
            part, tag = split
            key = None if tag is None else locale_key(tag)
            label = f"{channel}/{part}" + ("" if tag is None else f".{locale_display(tag)}")
            if key in parts.setdefault(part, {}):
                raise TemplateError("two files for the same part and locale", template=self.name, part=path)
            if key is not None:
                self.locales[key] = locale_display(tag or "")
            compiled = self._compile(path, label)
            parts[part][key] = Part(channel, part, key, label, compiled, self._variables_of(path, label))
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
            return (self._html_env if is_html(path) else self.env).get_template(path)
        except jinja_errors.TemplateSyntaxError as exc:
            where = f"{exc.name}, line {exc.lineno}" if exc.name and exc.name != path else f"line {exc.lineno}"
            raise TemplateError(f"syntax error ({where}): {exc.message}", template=self.name, part=label) from exc

    def _variables_of(self, path: str, label: str, seen: frozenset[str] = frozenset()) -> frozenset[str]:
        """Undeclared names of a file and of the partials it includes (which meta does not follow)."""
        cached = self._file_variables.get(path)
        if cached is not None:
            return cached
        try:
            ast = self.env.parse(self._sources[path], name=path)
        except jinja_errors.TemplateSyntaxError as exc:
            raise TemplateError(
                f"syntax error (line {exc.lineno}): {exc.message}", template=self.name, part=path
            ) from exc
        if is_json(path):
            check_json_outputs(self.name, label, ast)
        names = set(meta.find_undeclared_variables(ast)) - self._ignored_names
        for included in meta.find_referenced_templates(ast):
            if included is None or included in seen:
                continue
            if included not in self._sources:
                raise TemplateError(f"includes '{included}', which does not exist", template=self.name, part=label)
            names |= self._variables_of(included, label, seen | {path})
        self._file_variables[path] = frozenset(names)
        return self._file_variables[path]
