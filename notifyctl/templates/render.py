"""Rendering a channel's resolved parts into its message, under the sandbox's deadline and size caps.

Each part's output is capped while it is generated (PART_MAX_BYTES); subjects and titles are
single lines; JSON parts are decoded strictly (no duplicate keys, no NaN); SMS and push have
their providers' size limits. Whatever a template raises while rendering is a TemplateError
naming the template and the part. The blow-up guards and their known limits are in
notifyctl/templates/sandbox.py.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

import orjson
from jinja2 import exceptions as jinja_errors

from notifyctl.errors import TemplateError
from notifyctl.templates.parts import Part
from notifyctl.templates.sandbox import RenderTimeout, check_deadline, render_deadline

SMS_MAX_CHARS = 1600
PUSH_MAX_BYTES = 4096  # FCM's limit for the whole notification + data payload
PART_MAX_BYTES = 256 * 1024


def render_channel(
    template: str, channel: str, parts: Mapping[str, Part], variables: dict[str, Any], timeout_s: float
) -> dict[str, Any]:
    """The message of `channel` from template `template`'s resolved parts; `variables` already
    holds the sandbox globals."""
    with render_deadline(timeout_s):
        return _shape(template, channel, parts, variables, timeout_s)


def render_part(template: str, part: Part, variables: dict[str, Any], timeout_s: float) -> str:
    """Render one part; `variables` already holds the sandbox globals (see render_channel())."""
    try:
        # Template.render() would copy globals and context into a new dict for every part;
        # a shared context built once per message renders about twice as fast.
        chunks: list[str] = []
        size = 0
        for chunk in part.compiled.root_render_func(part.compiled.new_context(variables, shared=True)):
            # Characters never outnumber UTF-8 bytes: stop as soon as the cap is certainly passed.
            size += len(chunk)
            if size > PART_MAX_BYTES:
                raise TemplateError(f"output over {PART_MAX_BYTES // 1024} KiB", template=template, part=part.label)
            chunks.append(chunk)
            check_deadline()
        output = "".join(chunks)
    except TemplateError:
        raise
    except RenderTimeout as exc:
        raise TemplateError(
            f"render took longer than {timeout_s:g} s (loops or output too large)", template=template, part=part.label
        ) from exc
    except jinja_errors.SecurityError as exc:
        raise TemplateError(f"unsafe operation refused: {exc}", template=template, part=part.label) from exc
    except jinja_errors.UndefinedError as exc:
        raise TemplateError(f"undefined variable: {exc}", template=template, part=part.label) from exc
    except Exception as exc:  # template code is data: whatever it raises is the template's error
        raise TemplateError(f"render failed: {type(exc).__name__}: {exc}", template=template, part=part.label) from exc
    if len(output) > PART_MAX_BYTES // 4 and len(output.encode("utf-8", "surrogatepass")) > PART_MAX_BYTES:
        raise TemplateError(f"output over {PART_MAX_BYTES // 1024} KiB", template=template, part=part.label)
    return output


def _render_json(template: str, part: Part, variables: dict[str, Any], timeout_s: float) -> Any:
    text = render_part(template, part, variables, timeout_s)
    try:
        return _JSON_PART.decode(text)
    except ValueError as exc:
        raise TemplateError(f"did not render to valid JSON: {exc}", template=template, part=part.label) from exc


def _shape(
    template: str, channel: str, parts: Mapping[str, Part], variables: dict[str, Any], timeout_s: float
) -> dict[str, Any]:
    def text(name: str) -> str | None:
        return render_part(template, parts[name], variables, timeout_s) if name in parts else None

    def fail(message: str, name: str) -> TemplateError:
        return TemplateError(message, template=template, part=parts[name].label)

    if channel == "email":
        subject = one_line(text("subject") or "")
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
        data: Any = _render_json(template, parts["data.json"], variables, timeout_s) if "data.json" in parts else {}
        if not isinstance(data, dict):
            raise fail("must render to a JSON object", "data.json")
        message = {"title": one_line(text("title") or ""), "body": (text("body") or "").strip(), "data": data}
        if channel == "push":
            size = len(orjson.dumps(message))
            if size > PUSH_MAX_BYTES:
                raise fail(
                    f"push payload (title, body, data) is {size} bytes, over the {PUSH_MAX_BYTES}-byte cap", "body"
                )
        return message
    body = _render_json(template, parts["body.json"], variables, timeout_s)
    if not isinstance(body, dict | list):
        raise fail("must render to a JSON object or array", "body.json")
    return {"body": body}


def one_line(value: str) -> str:
    """Subjects and titles are single lines; a line break from data must not reach a header."""
    return re.sub(r"\s*[\r\n]+\s*", " ", value.strip())


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
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
