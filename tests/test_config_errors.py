"""Config errors that help (issue 17.5): every key is validated, provider options included, with
"did you mean"; a wrong value from the environment names the variable; constraint errors read as
sentences; doctor reports the same errors."""

from __future__ import annotations

import re
from pathlib import Path

import orjson
import pytest

from notifyctl.providers.base import PROVIDER_TYPES
from notifyctl.providers.options import PROVIDER_OPTIONS
from notifyctl.settings import ProviderSettings
from tests.workspace import REPO, Workspace, make_workspace


def _said(text: str) -> str:
    return " ".join(text.split())


@pytest.mark.parametrize(
    ("provider", "key", "meant"),
    [
        pytest.param({"webhook": {"timout_s": 2}}, "providers.webhook.timout_s", "timeout_s", id="common-key"),
        pytest.param({"outbox": {"from_adress": "a@b.io"}}, "providers.outbox.from_adress", "from_address", id="own"),
        pytest.param({"webhook": {"allow_host": ["x"]}}, "providers.webhook.allow_host", "allow_hosts", id="list"),
    ],
)
def test_a_misspelt_provider_option_is_refused_with_the_likely_key(
    tmp_path: Path, provider: dict[str, dict[str, object]], key: str, meant: str
) -> None:
    name, options = next(iter(provider.items()))
    base = {
        "webhook": {"type": "webhook", "allow_hosts": ["127.0.0.1"]},
        "outbox": {"type": "outbox", "path": "outbox"},
        "inapp": {"type": "inapp"},
    }
    ws = make_workspace(tmp_path, providers={name: {**base[name], **options}})
    result = ws.cli("runs", "list")
    assert result.exit_code == 2
    said = _said(result.stderr)
    assert f"unknown key '{key.rsplit('.', 1)[1]}'" in said and f"did you mean '{meant}'?" in said
    assert f"key '{key}'" in said and str(ws.config) in said
    doctor = ws.cli("doctor", "--offline", "--json")
    assert doctor.exit_code == 1
    (check,) = [c for c in orjson.loads(doctor.stdout)["checks"] if c["status"] == "fail"]
    assert f"did you mean '{meant}'?" in check["message"] and f"key '{key}'" in check["message"]


@pytest.mark.parametrize(
    ("top", "extra", "expected"),
    [
        pytest.param("processes = 0", "", "processes must be at least 1, or 'auto' (got 0)", id="union"),
        pytest.param("", "[server]\nbacklog = 0\n", "backlog must be at least 1 (got 0)", id="ge"),
        pytest.param('in_doubt = "maybe"', "", "in_doubt must be one of 'hold' or 'resend'", id="literal"),
        pytest.param("databse = 'x.db'", "", "unknown key 'databse' (did you mean 'database'?)", id="top-typo"),
        pytest.param("", "[quiet_hourz]\n", "unknown key 'quiet_hourz' (did you mean 'quiet_hours'?)", id="table"),
    ],
)
def test_constraint_errors_read_as_sentences(tmp_path: Path, top: str, extra: str, expected: str) -> None:
    ws = make_workspace(tmp_path, top=top, extra=extra)
    result = ws.cli("runs", "list")
    assert result.exit_code == 2
    said = _said(result.stderr)
    assert expected in said and str(ws.config) in said
    assert "constrained-int" not in said and "literal[" not in said and "Input should" not in said


@pytest.mark.parametrize(
    ("variable", "value", "expected"),
    [
        pytest.param("NOTIFYCTL_PROVIDERS__WEBHOOK__RATE", "abc", "rate must be a number (got 'abc')", id="type"),
        pytest.param("NOTIFYCTL_PROVIDERS__WEBHOOK__TIMOUT_S", "3", "did you mean 'timeout_s'?", id="option-typo"),
        pytest.param("NOTIFYCTL_RETRY__MAX_ATTEMPS", "3", "did you mean 'max_attempts'?", id="typo"),
    ],
)
def test_an_error_from_the_environment_names_the_variable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, variable: str, value: str, expected: str
) -> None:
    ws = make_workspace(tmp_path)
    monkeypatch.setenv(variable, value)
    result = ws.cli("runs", "list")
    assert result.exit_code == 2
    said = _said(result.stderr)
    assert expected in said and f"from the environment variable {variable}" in said
    assert str(ws.config) not in said  # the file is not to blame


def test_the_example_configuration_and_the_defaults_still_load(tmp_path: Path) -> None:
    ws = Workspace(tmp_path)
    ws.config.write_text((REPO / "notifyctl.example.toml").read_text())
    shown = ws.cli("config", "show", "--json")  # loads every key (a read command makes no database)
    assert shown.exit_code == 0, shown.output


def test_every_option_a_provider_reads_is_declared() -> None:
    """The declared options (providers/options.py) cover what each provider's code reads."""
    reads = re.compile(
        r"""settings(?:\.get)?[(\[]\s*["'](\w+)["']|(?:_positive|_setting|_number)\(settings, ["'](\w+)["']"""
    )
    common = set(ProviderSettings.model_fields)
    assert set(PROVIDER_OPTIONS) == set(PROVIDER_TYPES)
    for type_name, target in PROVIDER_TYPES.items():
        source = (REPO / (target.split(":")[0].replace(".", "/") + ".py")).read_text()
        used = {a or b for a, b in reads.findall(source)}
        assert used, type_name
        assert used <= set(PROVIDER_OPTIONS[type_name].model_fields) | common, (type_name, used)
