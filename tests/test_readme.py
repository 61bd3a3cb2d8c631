"""The README is for a new user: the settings table must match the code, and commands must exist."""

import re
from pathlib import Path

from consumer.cli import build_parser
from consumer.config import markdown_table

README = (Path(__file__).resolve().parents[1] / "README.md").read_text()


def test_configuration_table_matches_the_config():
    block = README.split("<!-- config-table:start -->")[1].split("<!-- config-table:end -->")[0].strip()
    assert block == markdown_table(), "regenerate with: .venv/bin/python -m consumer.config"


def test_every_documented_command_exists():
    commands = set(build_parser()._subparsers._group_actions[0].choices)
    documented = set(re.findall(r"`streamrank ([a-z][a-z-]*)", README))
    assert documented <= commands, documented - commands


def test_the_two_commands_are_there():
    assert "make demo" in README and "make test" in README
