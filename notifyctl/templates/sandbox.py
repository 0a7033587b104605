"""The Jinja2 sandbox templates render in: immutable, StrictUndefined, and guarded against blow-ups.

The stock SandboxedEnvironment stops attribute escapes (`''.__class__`), not templates that
allocate gigabytes. The guards here refuse, before allocating: repeats (`'x' * 10**9`), huge
powers, ranges over MAX_RANGE, paddings and widths (`ljust`, `center`, `indent`, `'%999999999s'`,
`'{:>999999999}'`), and `replace` that would explode; and after the fact, any `+` or `~` result
over MAX_STRING_LENGTH, which stops exponential doubling in recursive macros. What is not
covered by those, a loop printing a long string 10,000 times, `join` over big lists and slow
nested loops, is stopped by a deadline per render (`render_deadline`, checked every few loop
iterations, at every call and between output chunks) and by `join` refusing results over
MAX_STRING_LENGTH as it goes; the renderer also caps each part's output while it is generated.
"""

from __future__ import annotations

import json
import math
import re
import string
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

from jinja2 import DictLoader, StrictUndefined, Undefined, nodes, pass_eval_context
from jinja2 import exceptions as jinja_errors
from jinja2.compiler import CodeGenerator, Frame
from jinja2.filters import do_center, do_format, do_indent, do_join, do_replace, make_attrgetter
from jinja2.nodes import EvalContext
from jinja2.runtime import Context
from jinja2.sandbox import ImmutableSandboxedEnvironment
from markupsafe import Markup

MAX_STRING_LENGTH = 100_000
MAX_RANGE = 10_000
RENDER_TIMEOUT_S = 0.5
_DEADLINE_EVERY = 64  # loop iterations between two clock reads

_deadline: ContextVar[float] = ContextVar("notifyctl_render_deadline", default=math.inf)


class RenderTimeout(jinja_errors.SecurityError):
    """A render ran past its deadline."""


def _refuse(message: str) -> None:
    raise jinja_errors.SecurityError(message)


def check_deadline() -> None:
    """Stop the current render once its deadline has passed."""
    deadline = _deadline.get()
    if deadline != math.inf and time.monotonic() > deadline:
        raise RenderTimeout("render time limit exceeded")


@contextmanager
def render_deadline(timeout_s: float) -> Iterator[None]:
    """Renders inside this block must finish within `timeout_s` seconds (wall clock)."""
    token = _deadline.set(time.monotonic() + timeout_s)
    try:
        yield
    finally:
        _deadline.reset(token)


def _loop_guard(items: Iterable[Any]) -> Iterator[Any]:
    """Every `{% for %}` iterates through this, so nested loops that print nothing still stop."""
    for index, item in enumerate(items):
        if index % _DEADLINE_EVERY == 0:
            check_deadline()
        yield item


def _bounded(items: Iterable[Any], separator_chars: int) -> Iterator[Any]:
    """The items of a join, refused as soon as the joined result would be too long."""
    total = 0
    for index, item in enumerate(items):
        total += len(str(item)) + separator_chars
        if total > MAX_STRING_LENGTH:
            _refuse(f"join result longer than {MAX_STRING_LENGTH} characters")
        if index % _DEADLINE_EVERY == 0:
            check_deadline()
        yield item


def _check_length(value: Any) -> None:
    if isinstance(value, str | list | tuple) and len(value) > MAX_STRING_LENGTH:
        _refuse(f"result longer than {MAX_STRING_LENGTH} items")


def _check_number(digits: str | None) -> None:
    if digits is not None and (len(digits) > 6 or int(digits) > MAX_STRING_LENGTH):
        _refuse(f"width or precision over {MAX_STRING_LENGTH}")


def _check_repeat(left: Any, right: Any) -> None:
    for seq, times in ((left, right), (right, left)):
        if isinstance(seq, str | list | tuple) and isinstance(times, int) and len(seq) * times > MAX_STRING_LENGTH:
            _refuse(f"repetition longer than {MAX_STRING_LENGTH} items")
    if isinstance(left, int) and isinstance(right, int) and left.bit_length() + right.bit_length() > MAX_STRING_LENGTH:
        _refuse("number too large")


def _check_power(base: Any, exponent: Any) -> None:
    if not (isinstance(base, int) and isinstance(exponent, int)) or abs(base) <= 1 or exponent <= 0:
        return
    if exponent * abs(base).bit_length() > MAX_STRING_LENGTH:
        _refuse("number too large")


_PRINTF_SPEC = re.compile(r"%(?:\([^)]*\))?[#0\- +]*(\*|\d+)?(?:\.(\*|\d+))?[hlL]?[a-zA-Z%]")


def _check_printf(fmt: str) -> None:
    for match in _PRINTF_SPEC.finditer(fmt):
        for digits in match.groups():
            if digits == "*":
                _refuse("'*' widths are not allowed in templates")
            _check_number(digits)


def _check_format_string(fmt: str) -> None:
    try:
        fields = list(string.Formatter().parse(fmt))
    except ValueError:
        return  # the format call itself reports the malformed string
    for _, _, spec, _ in fields:
        if spec and "{" in spec:
            _refuse("nested format specs are not allowed in templates")
        for digits in re.findall(r"\d+", spec or ""):
            _check_number(digits)


def _check_str_method(owner: str, method: str, args: tuple[Any, ...]) -> None:
    """Refuse str method calls whose result would be huge, before they allocate it."""
    if method in ("center", "ljust", "rjust", "zfill") and args and isinstance(args[0], int):
        if args[0] > MAX_STRING_LENGTH:
            _refuse(f"width over {MAX_STRING_LENGTH}")
    elif method == "expandtabs" and args and isinstance(args[0], int):
        if args[0] * owner.count("\t") > MAX_STRING_LENGTH:
            _refuse(f"result longer than {MAX_STRING_LENGTH} characters")
    elif method == "replace" and len(args) >= 2 and isinstance(args[0], str) and isinstance(args[1], str):
        hits = len(owner) + 1 if args[0] == "" else owner.count(args[0])
        if len(owner) + hits * (len(args[1]) - len(args[0])) > MAX_STRING_LENGTH:
            _refuse(f"result longer than {MAX_STRING_LENGTH} characters")


@pass_eval_context
def _guarded_join(eval_ctx: EvalContext, value: Iterable[Any], d: str = "", attribute: str | int | None = None) -> str:
    if attribute is not None:
        value = map(make_attrgetter(eval_ctx.environment, attribute), value)
    joined: str = do_join(eval_ctx, _bounded(value, len(str(d))), d)
    return joined


def _guarded_range(*args: int) -> range:
    numbers = range(*args)
    if len(numbers) > MAX_RANGE:
        _refuse(f"range() larger than {MAX_RANGE}")
    return numbers


def _guarded_center(value: str, width: int = 80) -> str:
    _check_str_method(str(value), "center", (width,))
    return do_center(value, width)


def _guarded_format(value: str, *args: Any, **kwargs: Any) -> str:
    _check_printf(str(value))
    return do_format(value, *args, **kwargs)


def _guarded_indent(value: str, width: int | str = 4, first: bool = False, blank: bool = False) -> str:
    if isinstance(width, int) and width > MAX_STRING_LENGTH:
        _refuse(f"width over {MAX_STRING_LENGTH}")
    return do_indent(value, width, first, blank)


@pass_eval_context
def _guarded_replace(eval_ctx: EvalContext, value: str, old: str, new: str, count: int | None = None) -> str:
    _check_str_method(str(value), "replace", (str(old), str(new)))
    return do_replace(eval_ctx, value, old, new, count)


class _TemplateJSON(json.JSONEncoder):
    """JSON for `|tojson`: an undefined variable anywhere in the value is reported by name."""

    def default(self, o: Any) -> Any:
        if isinstance(o, Undefined):
            o._fail_with_undefined_error()  # UndefinedError: "'first_name' is undefined"
        return super().default(o)


_TOJSON = _TemplateJSON(sort_keys=True)  # built once: json.dumps(sort_keys=True) builds one per call


def _tojson(value: Any, indent: int | None = None) -> Markup:
    """Jinja's `|tojson` (sorted keys, `<`, `>`, `&` and `'` escaped for HTML), from one shared
    encoder, and naming an undefined variable instead of failing on its type."""
    text = (
        _TOJSON.encode(value) if indent is None else json.dumps(value, cls=_TemplateJSON, sort_keys=True, indent=indent)
    )
    return Markup(text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026").replace("'", "\\u0027"))


class _GuardedCodeGenerator(CodeGenerator):
    """Routes `~` through the environment so that doubling a string in a recursive macro stops."""

    def visit_Concat(self, node: nodes.Concat, frame: Frame) -> None:
        self.write("environment.checked_concat(")
        super().visit_Concat(node, frame)
        self.write(")")


class TemplateSandbox(ImmutableSandboxedEnvironment):
    """The immutable sandbox, plus guards against outputs that grow without bound."""

    code_generator_class = _GuardedCodeGenerator
    intercepted_binops = frozenset({"+", "*", "**", "%"})

    def __init__(self, loader: DictLoader, *, autoescape: bool) -> None:
        # A constant autoescape, not a per-name callable: Jinja calls that one on every render.
        super().__init__(
            loader=loader,
            undefined=StrictUndefined,
            autoescape=autoescape,
            trim_blocks=True,
            lstrip_blocks=True,
            auto_reload=False,
            cache_size=-1,
        )
        self.globals["range"] = _guarded_range
        del self.globals["lipsum"]  # lipsum(n=10**7) is a blow-up nobody needs in a notification
        self.filters["center"] = _guarded_center
        self.filters["format"] = _guarded_format
        self.filters["indent"] = _guarded_indent
        self.filters["join"] = _guarded_join
        self.filters["loop_guard"] = _loop_guard
        self.filters["replace"] = _guarded_replace
        self.filters["tojson"] = _tojson

    def call_binop(self, context: Context, operator: str, left: Any, right: Any) -> Any:
        if operator == "*":
            _check_repeat(left, right)
        elif operator == "**":
            _check_power(left, right)
        elif operator == "%" and isinstance(left, str):
            _check_printf(left)
        result = super().call_binop(context, operator, left, right)
        if operator == "+":
            _check_length(result)
        return result

    def checked_concat(self, value: str) -> str:
        _check_length(value)
        return value

    def _parse(self, source: str, name: str | None, filename: str | None) -> nodes.Template:
        ast = super()._parse(source, name, filename)
        for loop in ast.find_all(nodes.For):
            loop.iter = nodes.Filter(loop.iter, "loop_guard", [], [], None, None, lineno=loop.lineno)
        return ast

    def call(self, context: Context, obj: Any, /, *args: Any, **kwargs: Any) -> Any:
        # Every macro call passes here: exponential recursion that prints nothing still stops.
        check_deadline()
        owner = getattr(obj, "__self__", None)
        if isinstance(owner, str):
            method = getattr(obj, "__name__", "")
            if method == "join" and args:
                args = (_bounded(args[0], len(owner)), *args[1:])
            _check_str_method(owner, method, args)
        return super().call(context, obj, *args, **kwargs)

    def wrap_str_format(self, value: Any) -> Callable[..., str] | None:
        wrapped = super().wrap_str_format(value)
        if wrapped is not None:
            _check_format_string(value.__self__)
        return wrapped
