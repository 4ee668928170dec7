"""Node.js for the tests that run npm packages (tests/compat/js, tests/sso/js)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest


def node_with_packages(js_dir: Path, *, needed_for: str) -> str:
    """The `node` executable, once `npm ci` has installed `js_dir`'s lock file
    (CI already ran it: .ci/run). Skips only when Node.js is not installed;
    a failing install fails the test."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        pytest.skip(f"Node.js and npm are not installed: {needed_for} cannot run")
    installed = js_dir / "node_modules" / ".package-lock.json"
    lock = js_dir / "package-lock.json"
    if not installed.exists() or installed.stat().st_mtime < lock.stat().st_mtime:
        done = subprocess.run(
            [npm, "ci", "--no-audit", "--no-fund"],
            cwd=js_dir,
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert done.returncode == 0, f"npm ci failed:\n{done.stderr}"
    return node
