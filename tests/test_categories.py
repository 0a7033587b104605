"""Categories hold their protections when someone configures something: configured ones merge with
the built-in ones, every one has a kind, a marketing-kind one turns a protection off only by
naming it in `protections_off` (and `doctor` lists it), and the keys of earlier releases are read
where they agree with the kind and refused, saying what to write, where they do not."""

from __future__ import annotations

from pathlib import Path

import pytest

from notifyctl.app.doctor import Check, check_config, diagnose
from notifyctl.errors import ConfigError
from notifyctl.settings import Settings, load_settings
from tests.workspace import make_workspace

MARKETING = {"opt_in_required": ("sms",), "quiet_hours": True, "list_unsubscribe": True, "critical": False}


def settings_of(tmp_path: Path, text: str, environ: dict[str, str] | None = None) -> Settings:
    path = tmp_path / "notifyctl.toml"
    path.write_text(text, encoding="utf-8")
    return load_settings(path, environ=environ or {})


def protections(settings: Settings, name: str) -> dict[str, object]:
    rule = settings.category(name)
    return {key: getattr(rule, key) for key in MARKETING}


def test_a_configured_category_is_merged_with_the_built_in_ones(tmp_path: Path) -> None:
    settings = settings_of(tmp_path, '[categories.newsletter]\nkind = "marketing"\n')

    assert sorted(settings.categories) == ["marketing", "newsletter", "security", "transactional"]
    assert protections(settings, "marketing") == MARKETING  # not dropped by the file's own table
    assert protections(settings, "newsletter") == MARKETING  # a marketing kind has every protection
    assert settings.category("security").critical and settings.category("transactional").priority == "high"


def test_a_built_in_category_is_tuned_key_by_key(tmp_path: Path) -> None:
    settings = settings_of(tmp_path, '[categories.marketing]\npriority = "normal"\n')

    assert settings.category("marketing").priority == "normal"
    assert protections(settings, "marketing") == MARKETING


@pytest.mark.parametrize(
    ("name", "kind", "critical"),
    [
        pytest.param("marketing", "marketing", False, id="marketing"),
        pytest.param("transactional", "transactional", False, id="transactional"),
        pytest.param("security", "critical", True, id="security-is-critical"),
    ],
)
def test_the_built_in_categories_keep_their_kinds(tmp_path: Path, name: str, kind: str, critical: bool) -> None:
    settings = settings_of(tmp_path, "")
    assert settings.categories[name].kind == kind and settings.category(name).critical is critical
    other = "transactional" if kind != "transactional" else "marketing"
    with pytest.raises(ConfigError, match=f'the built-in category is of kind "{kind}"'):
        settings_of(tmp_path, f'[categories.{name}]\nkind = "{other}"\n')


def test_a_configured_category_without_a_kind_names_the_key_and_the_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        settings_of(tmp_path, '[categories.newsletter]\npriority = "low"\n')
    assert caught.value.key == "categories.newsletter.kind"
    assert caught.value.path == str(tmp_path / "notifyctl.toml")
    assert 'every category needs kind = "marketing", "transactional" or "critical"' in str(caught.value)


def test_an_environment_variable_cannot_make_a_category_without_a_kind(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="every category needs kind") as caught:
        settings_of(tmp_path, "", {"NOTIFYCTL_CATEGORIES__PROMO__PRIORITY": '"low"'})
    assert caught.value.key == "categories.promo.kind"


@pytest.mark.parametrize(
    ("off", "expected"),
    [
        pytest.param(["sms_opt_in"], {"opt_in_required": ()}, id="sms_opt_in"),
        pytest.param(["quiet_hours"], {"quiet_hours": False}, id="quiet_hours"),
        pytest.param(["list_unsubscribe"], {"list_unsubscribe": False}, id="list_unsubscribe"),
        pytest.param(["quiet_hours", "list_unsubscribe"], {"quiet_hours": False, "list_unsubscribe": False}, id="two"),
    ],
)
def test_a_protection_is_turned_off_only_by_name_and_doctor_lists_it(
    tmp_path: Path, off: list[str], expected: dict[str, object]
) -> None:
    listed = ", ".join(f'"{p}"' for p in off)
    settings = settings_of(tmp_path, f'[categories.digest]\nkind = "marketing"\nprotections_off = [{listed}]\n')

    assert protections(settings, "digest") == {**MARKETING, **expected}
    assert protections(settings, "marketing") == MARKETING
    warnings = [c.message for c in check_config(settings) if c.message.startswith("category ")]
    assert warnings == [f"category digest (marketing) has protections off: {', '.join(off)}"]


@pytest.mark.parametrize(
    ("table", "message"),
    [
        pytest.param('kind = "transactional"\nprotections_off = ["quiet_hours"]', "no marketing protection to turn off",
                     id="protections-off-on-transactional"),
        pytest.param('kind = "marketing"\nprotections_off = ["consent"]', "protections_off.0", id="unknown-protection"),
        pytest.param('kind = "bulk"', "kind", id="unknown-kind"),
    ],
)  # fmt: skip
def test_protections_off_and_kind_take_known_values(tmp_path: Path, table: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        settings_of(tmp_path, f"[categories.digest]\n{table}\n")


# --- the keys of earlier releases -----------------------------------------------------------------


def test_an_earlier_release_s_categories_load_unchanged(tmp_path: Path) -> None:
    """The upgrade fixture's tables, and the contract suite's (tests/contract/world.py)."""
    settings = settings_of(
        tmp_path,
        '[categories.marketing]\nquiet_hours = true\n\n[categories.transactional]\npriority = "high"\n'
        "[categories.security]\ncritical = true\n",
    )
    assert protections(settings, "marketing") == MARKETING
    assert settings.category("security").critical
    assert not [c for c in check_config(settings) if "protections off" in c.message]


def test_an_old_key_turning_a_marketing_protection_off_is_read_and_doctor_asks_for_the_new_spelling(
    tmp_path: Path,
) -> None:
    settings = settings_of(
        tmp_path,
        '[categories.marketing]\nopt_in_required = ["sms"]\nquiet_hours = false\nlist_unsubscribe = true\n',
    )
    assert protections(settings, "marketing") == {**MARKETING, "quiet_hours": False}
    [warning] = [c for c in check_config(settings) if "protections off" in c.message]
    assert warning == Check(
        "config",
        "warn",
        "category marketing (marketing) has protections off: quiet_hours (said with quiet_hours of an "
        'earlier release: write protections_off = ["quiet_hours"] instead)',
    )


@pytest.mark.parametrize(
    ("table", "message"),
    [
        pytest.param('kind = "transactional"\nquiet_hours = true',
                     'quiet_hours: only marketing-kind categories have the marketing protections '
                     '\\(write kind = "marketing"\\)', id="quiet-hours-on-transactional"),
        pytest.param('kind = "transactional"\nopt_in_required = ["sms"]', 'write kind = "marketing"',
                     id="opt-in-on-transactional"),
        pytest.param('kind = "transactional"\ncritical = true', 'write kind = "critical"', id="critical-flag"),
        pytest.param('kind = "critical"\ncritical = false', 'write kind = "transactional"', id="not-critical"),
        pytest.param('kind = "marketing"\nopt_in_required = ["sms", "email"]',
                     "only marketing SMS needs an explicit opt-in; email cannot", id="opt-in-on-email"),
        pytest.param('kind = "marketing"\nquiet_hours = true\nprotections_off = ["quiet_hours"]',
                     "quiet_hours contradicts protections_off", id="both-spellings"),
    ],
)  # fmt: skip
def test_an_old_key_contradicting_the_kind_says_what_to_write(tmp_path: Path, table: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as caught:
        settings_of(tmp_path, f"[categories.digest]\n{table}\n")
    assert caught.value.key == "categories.digest"


def test_an_undefined_category_at_the_hot_path_gets_every_marketing_protection(tmp_path: Path) -> None:
    """Only rows written before the configuration changed can still carry one: the front doors
    refuse it (tests/test_consent_front_doors.py)."""
    settings = settings_of(tmp_path, "")
    assert protections(settings, "whatever") == MARKETING
    assert settings.category("whatever") is settings.category("anything")  # one shared rule, nothing per message


async def test_doctor_lists_protections_off_and_stays_all_good(tmp_path: Path) -> None:
    ws = make_workspace(
        tmp_path, extra='[categories.digest]\nkind = "marketing"\nprotections_off = ["list_unsubscribe"]\n'
    )
    checks = await diagnose(ws.config, environ={}, probe_providers=False)
    assert not [c for c in checks if c.status == "fail"]
    assert Check("config", "warn", "category digest (marketing) has protections off: list_unsubscribe") in checks
    assert [c.message for c in checks if c.message.startswith("category ")] == [
        "category digest (marketing) has protections off: list_unsubscribe"
    ]


def test_the_example_configuration_says_what_this_release_reads() -> None:
    settings = load_settings(Path(__file__).parent.parent / "notifyctl.example.toml", environ={})
    assert {name: conf.kind for name, conf in settings.categories.items()} == {
        "marketing": "marketing",
        "transactional": "transactional",
        "security": "critical",
    }
    assert protections(settings, "marketing") == MARKETING
    assert settings.unsubscribe_secret is None and settings.public_url is None  # the installation's own secret
    assert not [c for c in check_config(settings) if c.status == "fail"]
