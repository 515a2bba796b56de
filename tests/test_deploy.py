"""The shipped deployment files (docs/deploy) are valid for the tools that
read them: ``haproxy -c`` on haproxy.cfg with its environment set,
``promtool check config`` on prometheus.yml beside a targets file, and
``promtool check rules`` on the alerting rules.  tests/test_hosts.py runs
these same files."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
from support.hosts import DEPLOY, check_haproxy_config, haproxy_environment


def promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        pytest.fail("promtool is not installed: run sh tools/install-system-deps.sh")
    return path


def promtool_check(kind: str, path: Path) -> str:
    """``promtool check KIND PATH``, which must succeed; its output."""
    done = subprocess.run(
        [promtool(), "check", kind, str(path)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout + done.stderr


def test_haproxy_config_is_valid() -> None:
    environment = haproxy_environment("192.0.2.5:8000", ["192.0.2.11", "192.0.2.12", "192.0.2.13"])
    check_haproxy_config(environment, DEPLOY / "haproxy.cfg")


def test_haproxy_config_needs_its_environment() -> None:
    """Without the addresses HAProxy refuses the file (no silent default)."""
    with pytest.raises(AssertionError, match="bind"):
        check_haproxy_config({}, DEPLOY / "haproxy.cfg")


def test_prometheus_config_is_valid(tmp_path: Path) -> None:
    for name in ("prometheus.yml", "trioecho-alerts.yml"):
        shutil.copyfile(DEPLOY / name, tmp_path / name)
    targets = [{"targets": ["192.0.2.11:9100", "192.0.2.12:9100"]}]
    (tmp_path / "trioecho-hosts.json").write_text(json.dumps(targets))
    output = promtool_check("config", tmp_path / "prometheus.yml")
    assert "WARNING" not in output, output
    assert "1 rule files found" in output


def test_alerting_rules_are_valid() -> None:
    assert "SUCCESS: 4 rules found" in promtool_check("rules", DEPLOY / "trioecho-alerts.yml")
