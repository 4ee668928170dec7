"""The examples of docs/clients.md work as written, against a real daphne."""

from __future__ import annotations

import os
import re
import subprocess
import sys

from tests.client.conftest import ROOT

DOC = (ROOT / "docs" / "clients.md").read_text()


def test_the_python_example_asks_and_answers_the_question(embedded):
    (code,) = re.findall(r"```python\n(# example: ask\n.*?)```", DOC, re.S)
    env = {
        **os.environ,
        "PARLEY_URL": embedded.url,
        "PARLEY_TOKEN": embedded.tokens["owner"],
        "PARLEY_THREAD": embedded.new_thread(),
    }

    result = subprocess.run(
        [sys.executable, "-c", code],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert result.returncode == 0, result.stderr
    assert result.stdout == "You answered: Ada\n"


def test_the_documented_exit_codes_are_the_clis():
    from parley_client import cli

    documented = {int(n) for n in re.findall(r"^\| (\d+) \|", DOC, re.M)}
    assert documented == {
        cli.EXIT_OK,
        cli.EXIT_RUN_FAILED,
        cli.EXIT_USAGE,
        cli.EXIT_CLOSED,
        cli.EXIT_LOST,
        cli.EXIT_INTERRUPTED,
    }
