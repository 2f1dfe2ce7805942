"""The ``[defender]`` section: its defaults, its lists, and the problems it reports."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest

from ftplb.balancing.defender import DefenderPolicy
from ftplb.config.load import ConfigError, load_config, load_config_text
from ftplb.config.schema import Config
from tests.config_texts import ONE_SERVER


def test_without_the_section_there_is_no_defender() -> None:
    assert load_config_text(ONE_SERVER).defender is None


def test_an_empty_section_gets_the_documented_defaults() -> None:
    defender = load_config_text(ONE_SERVER + "[defender]\n").defender
    assert defender is not None
    assert defender.policy() == DefenderPolicy(
        max_failures=5, window=60.0, ban_time=600.0, ban_time_max=86400.0
    )


def test_the_issue_example_and_its_policy() -> None:
    text = ONE_SERVER + (
        '[defender]\nmax_failures = 5\nwindow = "1m"\nban_time = "10m"\n'
        'ban_time_max = "1d"\nallow = ["10.0.0.0/8"]\n'
        'deny = ["192.0.2.0/24", "2001:db8::/32", "198.51.100.7"]\n'
    )
    config = load_config_text(text)
    assert config.defender is not None
    assert config.defender.policy() == DefenderPolicy(
        max_failures=5,
        window=60.0,
        ban_time=600.0,
        ban_time_max=86400.0,
        allow=(ipaddress.ip_network("10.0.0.0/8"),),
        deny=(
            ipaddress.ip_network("192.0.2.0/24"),
            ipaddress.ip_network("2001:db8::/32"),
            ipaddress.ip_network("198.51.100.7/32"),
        ),
    )
    assert Config.model_validate(config.model_dump()) == config
    assert Config.model_validate(config.model_dump(mode="json")) == config


@pytest.mark.parametrize(
    ("line", "message"),
    [
        (
            'allow = ["10.0.0.1/8"]',
            'defender.allow[0]: invalid network "10.0.0.1/8": 10.0.0.1/8 has host bits set',
        ),
        ('deny = ["example.com"]', 'defender.deny[0]: invalid network "example.com"'),
        ("deny = [7]", "defender.deny[0]: invalid network 7: not a string"),
        (
            'deny = ["::ffff:10.0.0.0/104"]',
            "an IPv4-mapped network: write it as IPv4",
        ),
        ("max_failures = 0", "defender.max_failures: Input should be greater than or equal to 1"),
        ('window = "0s"', "defender.window: Input should be greater than 0"),
        ('ban_time = "soon"', 'defender.ban_time: invalid duration "soon"'),
        ("bantime = 5", 'defender.bantime: unknown key "bantime"; did you mean "ban_time"?'),
        (
            'ban_time = "2h"\nban_time_max = "1h"',
            "defender.ban_time_max: 3600 s is shorter than ban_time (7200 s)",
        ),
    ],
)
def test_problems_name_file_line_and_key(tmp_path: Path, line: str, message: str) -> None:
    path = tmp_path / "ftplb.toml"
    text = ONE_SERVER + "[defender]\n" + line + "\n"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError) as raised:
        load_config(path)
    line_number = text.splitlines().index(line.splitlines()[-1]) + 1
    assert any(
        problem.startswith(f"{path}:{line_number}: ") and message in problem
        for problem in raised.value.problems
    ), raised.value.problems


ROOT = Path(__file__).resolve().parents[2]


def _documented_sections() -> list[str]:
    """Every [defender] example: the docs' TOML blocks, and the example file's commented one."""
    found = []
    for page in ("docs/security.md", "docs/configuration.md"):
        text = (ROOT / page).read_text(encoding="utf-8")
        found += [
            block.split("```", 1)[0]
            for block in text.split("```toml\n")[1:]
            if block.startswith("[defender]")
        ]
    example = (ROOT / "examples" / "ftplb.toml").read_text(encoding="utf-8")
    commented = example[example.index("# [defender]") :]
    found.append("\n".join(line.removeprefix("# ") for line in commented.splitlines()))
    return found


def test_every_documented_example_is_valid() -> None:
    sections = _documented_sections()
    assert len(sections) == 3
    for section in sections:
        defender = load_config_text(ONE_SERVER + section).defender
        assert defender is not None and defender.max_failures == 5
