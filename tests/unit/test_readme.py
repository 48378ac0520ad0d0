"""The README stays true: every setting is documented, and the test command is what CI runs."""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path

from models.settings import ENV_PREFIX, Settings

REPO = Path(__file__).resolve().parents[2]
README = (REPO / "README.md").read_text()


def test_every_setting_is_documented_with_its_default():
    for f in fields(Settings):
        default = "(empty)" if f.default == "" else f.default
        assert f"| `{ENV_PREFIX}{f.name.upper()}` | `{default}` |" in README, f.name


def test_ci_runs_the_test_command_the_readme_gives():
    assert "make test" in README
    assert "make test" in (REPO / ".ci" / "run").read_text()
