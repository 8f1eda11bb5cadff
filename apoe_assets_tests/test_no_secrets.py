"""No secret in a tracked file, and nothing that binds every interface.

Credentials belong in the environment (``env:`` in YAML, ``dg.EnvVar``, ``${VAR}``), never in
the repository: a connection URL with a password, a ``password:``/``token =`` value in a
configuration or document file, a private key or an AWS access key fails here, naming file and
line. Servers in the project and its tests listen on 127.0.0.1, so ``0.0.0.0`` fails too."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CONFIG_SUFFIXES = {".yaml", ".yml", ".toml", ".ini", ".cfg", ".env", ".conf", ".json", ".md",
                   ".sh", ".txt"}
CONFIG_NAMES = {"Makefile", "Dockerfile", "run"}
ENV_REFERENCE = re.compile(r"^(\$|\{|<|env\b|EnvVar|os\.environ)")
CHECKS: list[tuple[str, re.Pattern[str], bool]] = [
    # (what, pattern, only in configuration and document files)
    ("a URL with a password", re.compile(r"\b[a-z][a-z0-9+.\-]*://[^\s/:@'\"]+:([^\s/@'\"]+)@"),
     False),
    ("a secret value", re.compile(r"(?i)\b(?:password|passwd|secret|api_key|access_key|token)"
                                  r"\b\s*[:=]\s*[\"']?([^\s\"',}]+)"), True),
    ("a private key", re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----()"), False),
    ("an AWS access key", re.compile(r"\b(AKIA[0-9A-Z]{16})\b"), False),
    ("a server on every interface", re.compile(r"\b(0\.0\.0\.0)\b"), False),
]


def tracked_files() -> list[Path]:
    """The repository's tracked files (every file outside the ignored folders when this is
    not a git checkout)."""
    try:
        names = subprocess.run(["git", "ls-files"], cwd=ROOT, check=True, capture_output=True,
                               text=True).stdout.split()
        return [ROOT / n for n in names]
    except (OSError, subprocess.CalledProcessError):
        skip = {".venv", ".apoe", ".git", "node_modules"}
        return [p for p in ROOT.rglob("*") if p.is_file()
                and not skip & set(p.relative_to(ROOT).parts)]


def findings(path: Path, root: Path = ROOT) -> list[str]:
    """``file:line: what`` for each secret-looking line of ``path`` (named from ``root``)."""
    try:
        text = path.read_text()
    except (UnicodeDecodeError, OSError):
        return []
    config = path.suffix in CONFIG_SUFFIXES or path.name in CONFIG_NAMES
    found = []
    for number, line in enumerate(text.splitlines(), start=1):
        for what, pattern, config_only in CHECKS:
            if config_only and not config:
                continue
            for match in pattern.finditer(line):
                value = match.group(1)
                if value and ENV_REFERENCE.match(value):
                    continue
                found.append(f"{path.relative_to(root)}:{number}: {what}")
    return found


def test_no_tracked_file_holds_a_secret_or_binds_every_interface() -> None:
    """Every tracked file but this one (its examples below are what the checks catch)."""
    problems = [f for path in tracked_files() if path != Path(__file__).resolve()
                for f in findings(path)]
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize(("line", "name", "caught"), [
    ("url: postgresql://dagster:hunter2@db:5432/dagster", "dagster.yaml", True),
    ("url: postgresql://dagster:${PG_PASSWORD}@db:5432/dagster", "dagster.yaml", False),
    ("password: s3cr3t", "values.yaml", True),
    ("password: {env: DAGSTER_PG_PASSWORD}", "values.yaml", False),
    ("    password:\n      env: DAGSTER_PG_PASSWORD", "dagster.yaml", False),
    ("-----BEGIN RSA PRIVATE KEY-----", "notes.txt", True),
    ("key = 'AKIAABCDEFGHIJKLMNOP'", "deploy.py", True),
    ("mlflow server --host 0.0.0.0", "README.md", True),
    ("token = context.run_id", "tracking.py", False),  # code, not configuration
])
def test_the_checks_catch_what_they_name(tmp_path: Path, line: str, name: str, caught: bool
                                         ) -> None:
    """Each check on a line it must catch, and on its environment-variable form it must
    let pass."""
    path = tmp_path / name
    path.write_text(line + "\n")
    assert bool(findings(path, tmp_path)) is caught
