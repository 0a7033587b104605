"""`notifyctl templates check`: a template against an audience file, or a campaign as broadcast uses it."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import orjson
import pytest
from typer.testing import CliRunner

from notifyctl.cli import app
from tests.workspace import Workspace


@pytest.fixture
def ws(tmp_path: Path) -> Workspace:
    """A directory made by `notifyctl init`, with the example users imported."""
    workspace = Workspace(tmp_path)
    result = CliRunner().invoke(app, ["init", str(tmp_path)], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert workspace.cli("users", "import", "campaigns/example-users.csv").exit_code == 0
    return workspace


def check(ws: Workspace, *args: str) -> Any:
    cwd = os.getcwd()
    os.chdir(ws.root)
    try:
        return CliRunner().invoke(app, ["--config", str(ws.config), "templates", "check", *args])
    finally:
        os.chdir(cwd)


def test_a_campaign_is_checked_with_its_data_audience_and_channels(ws: Workspace) -> None:
    result = check(ws, "--campaign", "campaigns/welcome.toml")
    assert result.exit_code == 0, result.output
    assert "template 'welcome' fits campaigns/welcome-audience.csv" in result.stdout
    # The same template against the audience alone lacks the campaign's product_name, as before.
    alone = check(ws, "welcome", "--audience", "campaigns/welcome-audience.csv")
    assert alone.exit_code == 2
    assert "variable 'product_name' is not provided" in alone.stderr

    report = orjson.loads(check(ws, "welcome", "--campaign", "campaigns/welcome.toml", "--json").stdout)
    assert report == {
        "template": "welcome",
        "audience": "campaigns/welcome-audience.csv",
        "campaign": "campaigns/welcome.toml",
        "channels": ["email", "inapp"],  # the campaign's, as broadcast sends it
        "fits": True,
        "problems": [],
    }


def test_a_campaign_whose_data_lacks_a_variable_is_refused_by_part(ws: Workspace) -> None:
    ws.write(
        "campaigns/shipped.toml",
        'id = "shipped-1"\ntemplate = "order_shipped"\nchannels = ["email"]\naudience = "welcome-audience.csv"\n'
        '[data]\norder_id = "A-1"\ncarrier = "UPS"\n',
    )
    result = check(ws, "--campaign", "campaigns/shipped.toml", "--json")
    assert result.exit_code == 2
    report = orjson.loads(result.stdout)
    assert report["fits"] is False and report["channels"] == ["email"]
    assert "email/text: variable 'tracking_url' is not provided" in report["problems"][0]
    # --data adds what the campaign lacks; --audience replaces its audience.
    given = check(ws, "--campaign", "campaigns/shipped.toml", "--data", '{"tracking_url": "https://t.example.com/1"}')
    assert given.exit_code == 0, given.output
    missing = check(ws, "--campaign", "campaigns/shipped.toml", "--audience", "nowhere.csv")
    assert missing.exit_code == 2 and "audience file not found: nowhere.csv" in missing.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        pytest.param(
            ["order_shipped", "--campaign", "campaigns/welcome.toml"],
            "sends template 'welcome', not 'order_shipped'",
            id="another-template",
        ),
        pytest.param(["welcome"], "give a template and --audience FILE, or --campaign FILE", id="no-audience"),
        pytest.param(["--campaign", "campaigns/nope.toml"], "campaign file not found", id="no-campaign-file"),
    ],
)
def test_bad_usage_is_exit_2(ws: Workspace, args: list[str], message: str) -> None:
    result = check(ws, *args)
    assert result.exit_code == 2
    assert message in result.stderr
