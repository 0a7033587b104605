"""Template render limits: time and output size per render, with errors naming template and part."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from notifyctl.errors import TemplateError
from notifyctl.templates.store import TemplateStore
from tests.test_templates import write_template

SLOW_OR_HUGE = [
    pytest.param(
        "{% for i in range(10000) %}{{ 'x' * 90000 }}{% endfor %}", "output over", id="loop-printing-long-strings"
    ),
    pytest.param(
        "{{ range(10000)|map('center', 99999)|join }}", "join result longer", id="join-filter-over-huge-items"
    ),
    pytest.param("{{ ''.join(range(10000)|map('center', 99999)) }}", "join result longer", id="str-join-method"),
    pytest.param(
        "{% for i in range(10000) %}{% for j in range(10000) %}{% endfor %}{% endfor %}",
        "render took longer than 0.2 s",
        id="nested-loops-printing-nothing",
    ),
    pytest.param(
        "{% macro f(n) %}{% if n %}{{ f(n - 1) }}{{ f(n - 1) }}{% endif %}{% endmacro %}{{ f(40) }}",
        "render took longer than 0.2 s",
        id="exponential-macro-recursion",
    ),
    pytest.param(
        "{% for i in range(10000) %}{% for j in range(10000) %}{{ j }}{% endfor %}{% endfor %}",
        "",
        id="nested-loops-printing-numbers",
    ),
]


@pytest.mark.parametrize(("source", "message"), SLOW_OR_HUGE)
def test_render_limits_stop_blowups_quickly(tmp_path: Path, source: str, message: str) -> None:
    write_template(tmp_path, {"sms/text.j2": "hi", "email/subject.j2": "s", "email/text.j2": source})
    template = TemplateStore(tmp_path, render_timeout_s=0.2).get("t")
    started = time.monotonic()
    with pytest.raises(TemplateError) as caught:
        template.render("email", None, {})
    elapsed = time.monotonic() - started
    assert elapsed < 2.0, f"took {elapsed:.1f}s"
    assert caught.value.template == "t"
    assert caught.value.part == "email/text"
    assert "template 't', part 'email/text'" in str(caught.value)
    assert message in str(caught.value)


def test_the_deadline_is_per_render_not_per_template(tmp_path: Path) -> None:
    """Many fast renders in a row never add up to a timeout."""
    write_template(tmp_path, {"sms/text.j2": "{% for i in range(200) %}{{ i }}{% endfor %} {{ name|join(',') }}"})
    template = TemplateStore(tmp_path, render_timeout_s=0.2).get("t")
    started = time.monotonic()
    renders = 0
    while time.monotonic() - started < 0.6:  # three times the limit, in many small renders
        assert template.render("sms", None, {"name": ["a", "b"]})["text"].endswith("a,b")
        renders += 1
    assert renders > 3


CONTEXT = {"items": ["a", "b", "c"], "pairs": {"a": 1}, "people": [{"name": "Ada"}, {"name": "Bo"}]}


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        pytest.param("{{ items|join(', ') }}", "a, b, c", id="join"),
        pytest.param("{{ people|join(', ', attribute='name') }}", "Ada, Bo", id="join-attribute"),
        pytest.param("{{ '-'.join(items) }}", "a-b-c", id="str-join"),
        pytest.param("{% for i in items %}{{ loop.index }}{{ i }}{% if not loop.last %},{% endif %}{% endfor %}",
                     "1a,2b,3c", id="loop-variables"),
        pytest.param("{% for i in items %}{% else %}none{% endfor %}{{ items|length }}", "3", id="for-else"),
        pytest.param("{% for k, v in pairs.items() %}{{ k }}={{ v }};{% endfor %}", "a=1;", id="dict-items"),
    ],
)  # fmt: skip
def test_guards_keep_ordinary_templates_working(tmp_path: Path, source: str, expected: str) -> None:
    write_template(tmp_path, {"sms/text.j2": source + "."})
    text = TemplateStore(tmp_path).get("t").render("sms", None, CONTEXT)["text"]
    assert text == expected + "."
