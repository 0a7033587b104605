"""Templates: locale fallback, versions, the sandbox, variable checks, size caps, the examples."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from jinja2 import DictLoader
from jinja2.utils import htmlsafe_json_dumps

from notifyctl.errors import TemplateError
from notifyctl.templates.locales import locale_chain
from notifyctl.templates.sandbox import TemplateSandbox
from notifyctl.templates.store import TemplateStore
from notifyctl.templates.template import BUILTIN_VARIABLES, Template

EXAMPLES = Path(__file__).resolve().parent.parent / "templates"

EXAMPLE_CONTEXT: dict[str, Any] = {
    "user_id": "u_42",
    "email": "ada@example.com",
    "phone": "+14155550100",
    "locale": "en",
    "timezone": "Europe/Paris",
    "unsubscribe_url": "https://notify.example.com/u/tok?a=1&b=2",
    "run_id": "run_1",
    "event_id": "evt_1",
    "template": "example",
    "first_name": "Ada",
    "product_name": "Acme Cloud",
    "order_id": "A-1042",
    "carrier": "UPS",
    "tracking_url": "https://track.example.com/1Z999?lang=en&ref=mail",
}


def write_template(root: Path, files: dict[str, str], *, name: str = "t", manifest: str | None = None) -> Template:
    """Write a template folder under root and load it through a store."""
    folder = root / name
    if manifest is None:
        channels = sorted({path.split("/")[0] for path in files})
        manifest = f'category = "transactional"\nchannels = {json.dumps(channels)}\n'
    for relative, text in {"manifest.toml": manifest, **files}.items():
        path = folder / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return TemplateStore(root).get(name)


def render_error(template: Template, channel: str, context: dict[str, Any]) -> TemplateError:
    with pytest.raises(TemplateError) as caught:
        template.render(channel, None, context)
    return caught.value


# --- locales -----------------------------------------------------------------------------------

LOCALIZED = {
    "sms/text.j2": "default",
    "sms/text.fr.j2": "fr",
    "sms/text.fr-CA.j2": "fr-CA",
    "email/subject.j2": "subject default",
    "email/subject.fr.j2": "subject fr",
    "email/text.j2": "body default",
}


@pytest.mark.parametrize(
    ("locale", "sms", "subject"),
    [
        pytest.param("fr-CA", "fr-CA", "subject fr", id="exact-then-language"),
        pytest.param("fr_CA", "fr-CA", "subject fr", id="underscore"),
        pytest.param("FR-ca", "fr-CA", "subject fr", id="case-insensitive"),
        pytest.param("fr_CA.UTF-8", "fr-CA", "subject fr", id="posix-locale"),
        pytest.param("fr", "fr", "subject fr", id="language"),
        pytest.param("fr-BE", "fr", "subject fr", id="region-falls-back-to-language"),
        pytest.param("de-DE", "default", "subject default", id="unknown-falls-back-to-default"),
        pytest.param("en", "default", "subject default", id="default-locale"),
        pytest.param(None, "default", "subject default", id="no-locale"),
        pytest.param("", "default", "subject default", id="empty-locale"),
    ],
)
def test_locale_fallback_part_by_part(tmp_path: Path, locale: str | None, sms: str, subject: str) -> None:
    template = write_template(tmp_path, LOCALIZED)
    assert template.render("sms", locale, {}) == {"text": sms}
    email = template.render("email", locale, {})
    assert email["subject"] == subject
    assert email["text"] == "body default"


def test_locales_are_listed_in_bcp47_case(tmp_path: Path) -> None:
    template = write_template(tmp_path, {**LOCALIZED, "sms/text.pt_br.j2": "pt-BR"})
    assert template.info.locales == ["en", "fr", "fr-CA", "pt-BR"]
    assert template.render("sms", "pt-br", {}) == {"text": "pt-BR"}


def test_locale_chain() -> None:
    assert locale_chain("zh_Hant_TW") == ("zh-hant-tw", "zh-hant", "zh")
    assert locale_chain(None) == ()


# --- versions and the store --------------------------------------------------------------------


def test_version_follows_content(tmp_path: Path) -> None:
    store = TemplateStore(tmp_path)
    write_template(tmp_path, {"sms/text.j2": "Hello {{ first_name }}"})
    first = store.get("t")
    assert len(first.version) == 16
    assert store.get("t") is first, "an unchanged folder is served from the cache"

    (tmp_path / "t" / "sms" / "text.j2").write_text("Hi there, {{ first_name }}", encoding="utf-8")
    second = store.get("t")
    assert second.version != first.version
    assert second.render("sms", None, {"first_name": "Ada"}) == {"text": "Hi there, Ada"}

    (tmp_path / "t" / "sms" / "text.j2").write_text("Hello {{ first_name }}", encoding="utf-8")
    assert store.get("t").version == first.version, "the version is a content hash, not a counter"

    (tmp_path / "t" / "notes.txt").write_text("any file in the folder counts", encoding="utf-8")
    assert store.get("t").version != first.version


def test_same_content_same_version_in_another_folder(tmp_path: Path) -> None:
    files = {"sms/text.j2": "Hello"}
    assert write_template(tmp_path / "a", files).version == write_template(tmp_path / "b", files).version


@pytest.mark.parametrize("name", ["nope", "../t", "", "t/sms"])
def test_unknown_template_lists_known_ones(tmp_path: Path, name: str) -> None:
    write_template(tmp_path, {"sms/text.j2": "Hello"})
    with pytest.raises(TemplateError, match=r"unknown template \(known: t\)"):
        TemplateStore(tmp_path).get(name)


def test_list_returns_info(tmp_path: Path) -> None:
    write_template(tmp_path, {"sms/text.j2": "Hello"}, name="b")
    write_template(
        tmp_path,
        {"email/subject.j2": "s", "email/text.j2": "t"},
        name="a",
        manifest='category = "marketing"\nchannels = ["email"]\ndescription = "A"\n',
    )
    infos = TemplateStore(tmp_path).list()
    assert [(i.name, i.category, i.channels, i.description, i.locales) for i in infos] == [
        ("a", "marketing", ["email"], "A", ["en"]),
        ("b", "transactional", ["sms"], "", ["en"]),
    ]


# --- load-time errors --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("files", "manifest_channels", "part"),
    [
        pytest.param({"email/text.j2": "t"}, ["email"], "email/subject", id="email-without-subject"),
        pytest.param({"email/subject.j2": "s"}, ["email"], "email/text", id="email-without-body"),
        pytest.param({"sms/text.fr.j2": "t"}, ["sms"], "sms/text", id="sms-with-only-a-locale-variant"),
        pytest.param({"push/title.j2": "t"}, ["push"], "push/body", id="push-without-body"),
        pytest.param({"inapp/body.j2": "b"}, ["inapp"], "inapp/title", id="inapp-without-title"),
        pytest.param({"sms/text.j2": "t"}, ["sms", "webhook"], "webhook/body.json", id="webhook-folder-missing"),
    ],
)
def test_missing_required_part(tmp_path: Path, files: dict[str, str], manifest_channels: list[str], part: str) -> None:
    manifest = f'category = "transactional"\nchannels = {json.dumps(manifest_channels)}\n'
    with pytest.raises(TemplateError, match="is missing") as caught:
        write_template(tmp_path, files, manifest=manifest)
    assert (caught.value.template, caught.value.part) == ("t", part)
    assert "template 't'" in str(caught.value)


@pytest.mark.parametrize(
    ("manifest", "message"),
    [
        pytest.param('channels = ["sms"]\n', "'category'", id="no-category"),
        pytest.param('category = "x"\nchannels = []\n', "'channels'", id="no-channels"),
        pytest.param('category = "x"\nchannels = ["fax"]\n', "unknown channel 'fax'", id="unknown-channel"),
        pytest.param('category = "x"\nchannels = ["sms"]\nchanels = 1\n', "unknown keys", id="unknown-key"),
        pytest.param('category = "x"\nchannels = ["sms"]\ndefault_locale = "??"\n', "default_locale", id="bad-locale"),
        pytest.param('category = "x\nchannels = ["sms"]\n', "not valid TOML", id="bad-toml"),
    ],
)
def test_bad_manifest(tmp_path: Path, manifest: str, message: str) -> None:
    with pytest.raises(TemplateError, match=message) as caught:
        write_template(tmp_path, {"sms/text.j2": "t"}, manifest=manifest)
    assert caught.value.part == "manifest.toml"


@pytest.mark.parametrize(
    ("files", "message", "part"),
    [
        pytest.param({"sms/text.j2": "{% if %}"}, "syntax error", "sms/text", id="syntax-error"),
        pytest.param({"sms/txt.j2": "t", "sms/text.j2": "t"}, "unexpected file", "sms/txt.j2", id="typo-in-name"),
        pytest.param(
            {"webhook/body.json.j2": '{"name": "{{ first_name }}"}'},
            r"\|tojson",
            "webhook/body.json",
            id="json-no-tojson",
        ),
        pytest.param({"sms/text.j2": "{% include 'sms/_nope.j2' %}"}, "does not exist", "sms/text", id="bad-include"),
    ],
)
def test_bad_part_at_load(tmp_path: Path, files: dict[str, str], message: str, part: str) -> None:
    with pytest.raises(TemplateError, match=message) as caught:
        write_template(tmp_path, files)
    assert (caught.value.template, caught.value.part) == ("t", part)


# --- the sandbox -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "source",
    [
        pytest.param("{{ ''.__class__ }}", id="class"),
        pytest.param("{{ ''.__class__.__mro__ }}", id="mro"),
        pytest.param("{{ ''.__class__.__mro__[1].__subclasses__() }}", id="subclasses"),
        pytest.param("{{ cycler.__init__.__globals__ }}", id="globals-via-cycler"),
        pytest.param("{{ joiner.__init__.__globals__['os'] }}", id="globals-via-joiner"),
        pytest.param("{{ '{0.__class__}'.format('') }}", id="format-attribute"),
        pytest.param("{{ [].append(1) }}", id="mutating-a-list"),
        pytest.param("{{ 'x' * 200000 }}", id="string-repeat"),
        pytest.param("{{ [1] * 200000 }}", id="list-repeat"),
        pytest.param("{{ 10 ** 100000000 }}", id="huge-power"),
        pytest.param("{{ range(20000)|list|length }}", id="huge-range"),
        pytest.param("{{ 'x'.ljust(1000000000) }}", id="ljust"),
        pytest.param("{{ 'x'|center(1000000000) }}", id="center-filter"),
        pytest.param("{{ 'x'|indent(1000000000, true) }}", id="indent-filter"),
        pytest.param("{{ '{:>999999999}'.format('x') }}", id="format-width"),
        pytest.param("{{ '%999999999s' % 'x' }}", id="printf-width"),
        pytest.param("{{ '%999999999s'|format('x') }}", id="format-filter-width"),
        pytest.param("{{ ('x' * 1000).replace('', 'y' * 1000) }}", id="replace-explosion"),
        pytest.param(
            "{% macro twice(s, n) %}{{ twice(s ~ s, n - 1) if n else s }}{% endmacro %}{{ twice('x', 40) }}",
            id="doubling-with-tilde",
        ),
        pytest.param(
            "{% macro twice(s, n) %}{{ twice(s + s, n - 1) if n else s }}{% endmacro %}{{ twice('x', 40) }}",
            id="doubling-with-plus",
        ),
    ],
)
def test_sandbox_refuses(tmp_path: Path, source: str) -> None:
    template = write_template(tmp_path, {"sms/text.j2": source})
    error = render_error(template, "sms", {})
    assert (error.template, error.part) == ("t", "sms/text")
    assert "unsafe operation refused" in str(error)


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        pytest.param("{{ '-' * 10 }}", "----------", id="small-repeat"),
        pytest.param("{% for i in range(3) %}{{ i }}{% endfor %}", "012", id="small-range"),
        pytest.param("{{ 2 ** 10 }}", "1024", id="small-power"),
        pytest.param("{{ '%05.1f' % 3.14159 }}", "003.1", id="printf"),
        pytest.param("{{ '{:*>6}'.format('ab') }}", "****ab", id="format"),
        pytest.param("{{ 'a-b'.replace('-', ' to ') }}", "a to b", id="replace"),
        pytest.param("{{ 'ab' ~ 'cd' ~ 1 }}", "abcd1", id="concat"),
        pytest.param("{{ 7 % 3 }}", "1", id="modulo"),
    ],
)
def test_sandbox_allows_ordinary_use(tmp_path: Path, source: str, expected: str) -> None:
    template = write_template(tmp_path, {"sms/text.j2": source})
    assert template.render("sms", None, {}) == {"text": expected}


def test_undefined_variable_names_template_and_part(tmp_path: Path) -> None:
    template = write_template(
        tmp_path,
        {"email/subject.j2": "Hi {{ first_name }}", "email/subject.fr.j2": "Salut {{ prenom }}", "email/text.j2": "x"},
    )
    error = render_error(template, "email", {})
    assert (error.template, error.part) == ("t", "email/subject")
    assert "'first_name' is undefined" in str(error)
    with pytest.raises(TemplateError, match="'prenom' is undefined") as caught:
        template.render("email", "fr", {"first_name": "Ada"})
    assert caught.value.part == "email/subject.fr"


def test_runtime_exceptions_become_template_errors(tmp_path: Path) -> None:
    template = write_template(tmp_path, {"sms/text.j2": "{{ 1 / n }}"})
    error = render_error(template, "sms", {"n": 0})
    assert "ZeroDivisionError" in str(error)
    assert error.part == "sms/text"


def test_html_part_autoescapes_and_text_does_not(tmp_path: Path) -> None:
    template = write_template(
        tmp_path,
        {
            "email/subject.j2": "About {{ name }}",
            "email/text.j2": "Hello {{ name }}",
            "email/html.j2": "<p>Hello {{ name }}</p>{% include 'email/_footer.html.j2' %}",
            "email/_footer.html.j2": "<footer>{{ name }}</footer>",
        },
    )
    email = template.render("email", None, {"name": "<script>alert(1)</script>"})
    assert email["text"] == "Hello <script>alert(1)</script>"
    assert email["subject"] == "About <script>alert(1)</script>"
    assert email["html"] == (
        "<p>Hello &lt;script&gt;alert(1)&lt;/script&gt;</p><footer>&lt;script&gt;alert(1)&lt;/script&gt;</footer>"
    )
    assert "<script>" not in email["html"]


def test_subject_is_one_stripped_line(tmp_path: Path) -> None:
    template = write_template(tmp_path, {"email/subject.j2": "  Hi {{ name }}  \n", "email/text.j2": "body\n"})
    email = template.render("email", None, {"name": "Ada\r\nBcc: everyone@example.com"})
    assert email["subject"] == "Hi Ada Bcc: everyone@example.com"
    assert email["html"] is None


# --- variables ---------------------------------------------------------------------------------

VARIABLES = {
    "email/subject.j2": "Hi {{ first_name }}",
    "email/subject.fr.j2": "Salut {{ first_name }}, {{ surnom }}",
    "email/text.j2": "{{ greeting }} {% include 'email/_sig.j2' %} {{ unsubscribe_url }}",
    "email/_sig.j2": "{{ signature }}",
    "sms/text.j2": "{% set n = 3 %}{{ n }} {{ order_id }} {{ range(2)|list }}",
}


def test_required_variables(tmp_path: Path) -> None:
    template = write_template(tmp_path, VARIABLES)
    assert template.required_variables("sms") == {"order_id"}
    assert template.required_variables("email") == {"first_name", "surnom", "greeting", "signature", "unsubscribe_url"}
    assert template.required_variables() == template.required_variables("email") | {"order_id"}


def test_check_variables_reports_missing_columns(tmp_path: Path) -> None:
    template = write_template(tmp_path, VARIABLES)
    unprovided = "is not provided (not an audience column, campaign data key or user attribute)"
    assert template.check_variables({"greeting"}, ["email", "sms", "push"]) == [
        f"email/subject: variable 'first_name' {unprovided}",
        f"email/subject.fr: variable 'surnom' {unprovided}",
        f"email/text: variable 'signature' {unprovided}",
        f"sms/text: variable 'order_id' {unprovided}",
        "push: template 't' has no push channel",
    ]
    everything = {"first_name", "surnom", "greeting", "signature", "order_id"}
    assert template.check_variables(everything, ["email", "sms"]) == []
    assert "unsubscribe_url" in BUILTIN_VARIABLES


# --- size caps and JSON ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("length", "ok"),
    [pytest.param(1600, True, id="at-cap"), pytest.param(1601, False, id="over-cap")],
)
def test_sms_cap(tmp_path: Path, length: int, ok: bool) -> None:
    template = write_template(tmp_path, {"sms/text.j2": "{{ body }}\n"})
    context = {"body": "é" * length}
    if ok:
        assert len(template.render("sms", None, context)["text"]) == length
    else:
        assert "over the 1600 cap" in str(render_error(template, "sms", context))


@pytest.mark.parametrize(
    ("length", "ok"),
    [pytest.param(3900, True, id="under-cap"), pytest.param(4100, False, id="over-cap")],
)
def test_push_cap(tmp_path: Path, length: int, ok: bool) -> None:
    template = write_template(
        tmp_path,
        {"push/title.j2": "Title", "push/body.j2": "Body", "push/data.json.j2": '{"blob": {{ blob|tojson }}}'},
    )
    context = {"blob": "x" * length}
    if ok:
        assert template.render("push", None, context)["data"] == {"blob": "x" * length}
    else:
        error = render_error(template, "push", context)
        assert "4096-byte cap" in str(error)
        assert error.template == "t"


def test_part_output_cap(tmp_path: Path) -> None:
    template = write_template(
        tmp_path, {"email/subject.j2": "s", "email/text.j2": "{% for i in range(10000) %}{{ chunk }}{% endfor %}"}
    )
    error = render_error(template, "email", {"chunk": "y" * 30})
    assert "over 256 KiB" in str(error)
    assert error.part == "email/text"


def test_webhook_body_parses(tmp_path: Path) -> None:
    template = write_template(
        tmp_path,
        {
            "webhook/body.json.j2": (
                '{"type": "t", "name": {{ name|tojson }}, "n": {{ n|tojson }}, "tags": {{ tags|tojson }}}'
            )
        },
    )
    body = template.render("webhook", None, {"name": 'Ada "</script>', "n": 3, "tags": ["a", "b"]})["body"]
    assert body == {"type": "t", "name": 'Ada "</script>', "n": 3, "tags": ["a", "b"]}


def test_webhook_body_undefined_variable_in_tojson_is_named(tmp_path: Path) -> None:
    template = write_template(
        tmp_path, {"webhook/body.json.j2": '{"name": {{ first_name|tojson }}, "tags": {{ [1, nope]|tojson }}}'}
    )
    error = render_error(template, "webhook", {})
    assert "'first_name' is undefined" in str(error)
    assert error.part == "webhook/body.json"
    error = render_error(template, "webhook", {"first_name": "Ada"})
    assert "'nope' is undefined" in str(error)


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)


@settings(max_examples=200, deadline=None)
@given(value=JSON_VALUES, indent=st.sampled_from([None, 2]))
def test_tojson_is_jinjas_tojson(value: Any, indent: int | None) -> None:
    """The sandbox's own `|tojson` (one shared encoder) prints exactly what Jinja's does."""
    ours = TemplateSandbox(DictLoader({}), autoescape=False).filters["tojson"]
    assert ours(value, indent) == htmlsafe_json_dumps(value, sort_keys=True, indent=indent)


@pytest.mark.parametrize(
    ("source", "message"),
    [
        pytest.param('{"a": 1,}', "valid JSON", id="trailing-comma"),
        pytest.param('{"a": 1, "a": 2}', "duplicate key 'a'", id="duplicate-key"),
        pytest.param('{"a": NaN}', "NaN is not valid JSON", id="nan"),
        pytest.param("{{ 3|tojson }}", "JSON object or array", id="scalar"),
    ],
)
def test_webhook_body_must_be_json(tmp_path: Path, source: str, message: str) -> None:
    template = write_template(tmp_path, {"webhook/body.json.j2": source})
    error = render_error(template, "webhook", {})
    assert message in str(error)
    assert error.part == "webhook/body.json"


def test_push_data_must_be_an_object(tmp_path: Path) -> None:
    template = write_template(tmp_path, {"push/title.j2": "T", "push/body.j2": "B", "push/data.json.j2": "[1, 2]"})
    assert "JSON object" in str(render_error(template, "push", {}))


def test_unknown_channel_at_render(tmp_path: Path) -> None:
    template = write_template(tmp_path, {"sms/text.j2": "t"})
    with pytest.raises(TemplateError, match=r"has no push channel \(it has: sms\)"):
        template.render("push", None, {})


# --- the example templates ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def examples() -> TemplateStore:
    """One store for the module, so each example compiles once."""
    return TemplateStore(EXAMPLES)


EXAMPLE_RENDERS = [
    pytest.param(name, channel, locale, id=f"{name}-{channel}-{locale}")
    for name, channels in (
        ("welcome", ("email", "inapp", "webhook")),
        ("order_shipped", ("email", "sms", "push", "inapp", "webhook")),
    )
    for channel in channels
    for locale in (None, "en", "fr", "fr-CA", "de")
]


@pytest.mark.parametrize(("name", "channel", "locale"), EXAMPLE_RENDERS)
def test_example_templates_render(examples: TemplateStore, name: str, channel: str, locale: str | None) -> None:
    template = examples.get(name)
    parts = template.render(channel, locale, EXAMPLE_CONTEXT)
    assert all(value not in ("", None) for value in parts.values()), parts
    assert "\n" not in parts.get("subject", "") + parts.get("title", "")
    if channel == "email" and name == "welcome":
        assert EXAMPLE_CONTEXT["unsubscribe_url"] in parts["text"]
        assert "https://notify.example.com/u/tok?a=1&amp;b=2" in parts["html"]
    if channel == "webhook":
        assert parts["body"]["user_id"] == "u_42"


def test_example_templates_metadata(examples: TemplateStore) -> None:
    infos = {info.name: info for info in examples.list()}
    assert infos["welcome"].category == "marketing"
    assert infos["welcome"].channels == ["email", "inapp", "webhook"]
    assert infos["order_shipped"].category == "transactional"
    assert infos["order_shipped"].channels == ["email", "sms", "push", "inapp", "webhook"]
    assert infos["order_shipped"].locales == ["en", "fr", "fr-CA"]


@pytest.mark.parametrize(
    ("name", "available"),
    [
        pytest.param("welcome", {"first_name", "product_name"}, id="welcome"),
        pytest.param("order_shipped", {"first_name", "order_id", "carrier", "tracking_url"}, id="order_shipped"),
    ],
)
def test_example_templates_need_only_their_documented_variables(
    examples: TemplateStore, name: str, available: set[str]
) -> None:
    template = examples.get(name)
    assert template.check_variables(available, template.channels) == []
    assert template.check_variables(set(), template.channels) != []


def test_order_shipped_localizes(examples: TemplateStore) -> None:
    template = examples.get("order_shipped")
    sms = {locale: template.render("sms", locale, EXAMPLE_CONTEXT)["text"] for locale in ("en", "fr", "fr-CA")}
    assert len(set(sms.values())) == 3, "fr-CA has its own SMS text"
    assert sms["fr"].startswith("Bonjour Ada")
    assert template.render("email", "fr-CA", EXAMPLE_CONTEXT)["subject"] == "Votre commande A-1042 est en route"
    assert template.render("push", "fr-CA", EXAMPLE_CONTEXT)["data"]["order_id"] == "A-1042"
