"""The OpenAI example of docs/clients.md works as written, against a real daphne."""

from __future__ import annotations

import os
import re
import subprocess
import sys

from tests.integration.conftest import ROOT

DOC = (ROOT / "docs" / "clients.md").read_text()


def test_the_openai_example_prints_both_replies(parley):
    (code,) = re.findall(r"```python\n(# example: openai\n.*?)```", DOC, re.S)
    env = {
        **os.environ,
        "PARLEY_URL": parley.url,
        "PARLEY_TOKEN": parley.tokens["owner"],
    }

    result = subprocess.run(
        [sys.executable, "-c", code],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert result.returncode == 0, result.stderr
    models, first, second = result.stdout.splitlines()
    assert "'echo'" in models and "'retired'" not in models
    assert (first, second) == ("Hello, Parley", "and again")
