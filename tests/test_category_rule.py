"""The one rule every front door applies to a caller's category (policy/categories.py): the
template's category decides; an override is accepted only when it is defined and of the same kind
or of the marketing kind, never critical unless the template's is, and never turning off a
protection the template's category keeps. The front doors themselves: tests/test_consent_front_doors.py."""

from __future__ import annotations

from pathlib import Path

import pytest

from notifyctl.errors import InputError
from notifyctl.policy.categories import choose_category
from notifyctl.settings import load_settings
from tests.test_consent_front_doors import CATEGORIES

OVERRIDES = [
    # template's category, requested, the category used (None: refused, with this in the message)
    pytest.param("marketing", None, "marketing", None, id="no-override"),
    pytest.param("marketing", "marketing", "marketing", None, id="its-own"),
    pytest.param("marketing", "newsletter", "newsletter", None, id="marketing-as-marketing"),
    pytest.param("marketing", "transactional", None, "template's kind (marketing)", id="marketing-as-transactional"),
    pytest.param("marketing", "receipts", None, "the template's kind (marketing)", id="marketing-as-receipts"),
    pytest.param("marketing", "security", None, "only a critical template", id="marketing-as-critical"),
    pytest.param("marketing", "digest", None, "turns off quiet_hours", id="marketing-losing-quiet-hours"),
    pytest.param("marketing", "whatever", None, "category 'whatever' is not defined", id="undefined"),
    pytest.param("transactional", "receipts", "receipts", None, id="transactional-as-transactional"),
    pytest.param("transactional", "marketing", "marketing", None, id="transactional-as-marketing"),
    pytest.param("transactional", "digest", "digest", None, id="transactional-as-marketing-kind"),
    pytest.param("transactional", "alarms", None, "only a critical template", id="transactional-as-critical"),
    pytest.param("security", "alarms", "alarms", None, id="critical-as-critical"),
    pytest.param("security", "newsletter", "newsletter", None, id="critical-as-marketing"),
    pytest.param("security", "transactional", None, "the template's kind (critical)", id="critical-as-transactional"),
    pytest.param("digest", "marketing", "marketing", None, id="gaining-a-protection"),
    pytest.param("bulk", None, None, "category 'bulk' is not defined", id="template-undefined"),
]  # fmt: skip


@pytest.mark.parametrize(("template_category", "requested", "used", "refusal"), OVERRIDES)
def test_the_template_s_category_decides_and_an_override_may_only_add_protection(
    tmp_path: Path, template_category: str, requested: str | None, used: str | None, refusal: str | None
) -> None:
    path = tmp_path / "notifyctl.toml"
    path.write_text(CATEGORIES, encoding="utf-8")
    settings = load_settings(path, environ={})
    if used is not None:
        assert choose_category(settings, "t", template_category, requested) == used
        return
    with pytest.raises(InputError) as caught:
        choose_category(settings, "t", template_category, requested)
    assert refusal is not None and refusal in str(caught.value)
    if "not defined" in refusal:
        known = "alarms (critical), digest (marketing), marketing (marketing), newsletter (marketing), "
        assert f"(known: {known}receipts (transactional), security (critical), transactional (transactional))" in str(
            caught.value
        )
