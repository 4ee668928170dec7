"""Seeds Parley for a benchmark run: three users and the bench agents.

Run inside Parley's environment: ``python -m bench.parley_setup PASSWORD USER...``
(the first user is staff and owns the threads; with BENCH_FAKE_OPENAI_URL set, the
`openai` agents bench-openai and bench-openai-tools are seeded too). Uses only the ORM models the
contract names (users, ``agents.models.AgentConfig``), so it survives refactors.
"""

import os
import sys

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

import django  # noqa: E402

django.setup()

from django.contrib.auth import get_user_model  # noqa: E402

from agents.models import AgentConfig  # noqa: E402

STAMP = {"timestamp_tokens": True}
AGENTS = {
    # the capacity agent: the 50 tokens/s, default chunking
    "bench-echo": {"extra_params": {"tokens_per_second": 50, **STAMP}},
    # resume: as fast as possible, one event per token
    "bench-fast": {
        "extra_params": {"tokens_per_second": 0, **STAMP},
        "buffer_chunks": False,
    },
    # stalled reader: large tokens, fast
    "bench-busy": {"extra_params": {"tokens_per_second": 200, **STAMP}},
}
# The real provider path: the `openai` provider streaming from bench/fake_openai.py
# (its URL in BENCH_FAKE_OPENAI_URL), which paces and stamps the words itself;
# tokens_per_second reaches it in the request body.
FAKE_OPENAI_URL = os.environ.get("BENCH_FAKE_OPENAI_URL")
if FAKE_OPENAI_URL:
    AGENTS["bench-openai"] = {
        "provider": "openai",
        "model": "bench",
        "base_url": FAKE_OPENAI_URL,
        "extra_params": {"tokens_per_second": 50},
    }
    # The toolstep scenario: the same, offered `calculate`; the fake server asks
    # for it once, then answers with its result. One tool step per reply (two
    # allowed: a fake that kept asking would fail the run, visibly).
    AGENTS["bench-openai-tools"] = {
        **AGENTS["bench-openai"],
        "tools": ["calculate"],
        "max_tool_steps": 2,
    }


def main() -> None:
    password, *usernames = sys.argv[1:]
    users = get_user_model()
    for index, username in enumerate(usernames):
        user, _ = users.objects.get_or_create(username=username)
        user.is_staff = index == 0
        user.set_password(password)
        user.save()
    fields = {f.name for f in AgentConfig._meta.get_fields()}
    for name, config in AGENTS.items():
        defaults = {
            "provider": "echo",
            "description": "benchmark agent",
            "persistent": False,
            "enabled": True,
            **config,
        }
        AgentConfig.objects.update_or_create(
            name=name, defaults={k: v for k, v in defaults.items() if k in fields}
        )
    print("ok")


if __name__ == "__main__":
    main()
