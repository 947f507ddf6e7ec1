"""Which version a user's code is recorded under (compute.user.module_version)."""

from __future__ import annotations

import importlib.metadata
import sys

import pytest

from compute import user


@pytest.fixture
def no_scan(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail if the ~1 s scan of every installed distribution runs."""
    def scan() -> dict[str, list[str]]:
        raise AssertionError("packages_distributions() was called")

    monkeypatch.setattr(importlib.metadata, "packages_distributions", scan)
    user.module_version.cache_clear()


def test_code_on_the_path_is_its_source_hash_without_scanning_installed_packages(
    tmp_path, monkeypatch, no_scan
):
    (tmp_path / "plain_nets.py").write_text("def make():\n    return 1\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    __import__("plain_nets")
    try:
        version = user.module_version("plain_nets")
    finally:
        sys.modules.pop("plain_nets", None)
    assert version.startswith("sha256:") and len(version) == len("sha256:") + 16


def test_a_package_named_like_its_distribution_gets_the_distributions_version(no_scan):
    import sqlalchemy

    assert user.module_version("sqlalchemy.orm") == f"SQLAlchemy {sqlalchemy.__version__}"
