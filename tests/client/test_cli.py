"""The terminal client as a user runs it: `python -m parley_client ask|chat|token`
against a real daphne (embedded mode); what reaches stdout, stderr, the exit code."""

from __future__ import annotations

import asyncio
import subprocess
import sys

from tests.client.conftest import PASSWORD, ROOT, run_cli
from tests.eventually import eventually


def ask(server, thread_id: str, *text: str, user: str = "owner", extra=()):
    return run_cli(
        "ask",
        "--url",
        server.url,
        "--token",
        server.tokens[user],
        "--thread",
        thread_id,
        *extra,
        *text,
    )


def test_ask_prints_the_reply_and_exits_0(embedded):
    thread_id = embedded.new_thread()

    result = ask(embedded, thread_id, "hello", "from", "the terminal")

    assert result.returncode == 0, result.stderr
    assert result.stdout == "hello from the terminal\n"
    assert result.stderr == ""


def test_ask_answers_a_question_with_the_given_answer(embedded):
    thread_id = embedded.new_thread()

    result = ask(embedded, thread_id, "/ask Which colour?", extra=["--answer", "red"])

    assert result.returncode == 0, result.stderr
    assert result.stdout == "You answered: red\n"
    assert "? Which colour?" in result.stderr


def test_a_failed_run_exits_1_with_its_error_code_on_stderr(embedded):
    thread_id = embedded.new_thread()

    result = ask(embedded, thread_id, "/fail", "cut short")

    assert result.returncode == 1
    assert result.stdout == "cut short\n"  # what was streamed is kept
    assert result.stderr.startswith("parley: provider_error: ")


def test_an_observer_is_refused_with_read_only_and_exit_1(embedded):
    thread_id = embedded.new_thread()

    result = ask(embedded, thread_id, "hello", user="observer")

    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr.startswith("parley: read_only: ")


def test_a_closed_connection_exits_3_with_its_close_code(embedded):
    thread_id = embedded.new_thread()

    bad_token = run_cli(
        "ask", "--url", embedded.url, "--token", "nope", "--thread", thread_id, "hi"
    )
    no_thread = ask(embedded, "00000000-0000-0000-0000-000000000000", "hi")

    assert bad_token.returncode == 3 and "(close 4401)" in bad_token.stderr
    assert no_thread.returncode == 3 and "(close 4404)" in no_thread.stderr


def test_no_server_exits_4_once_retries_run_out():
    from tests.integration.conftest import free_port

    result = run_cli(
        "ask",
        "--url",
        f"http://127.0.0.1:{free_port()}",
        "--token",
        "t",
        "--thread",
        "00000000-0000-0000-0000-000000000000",
        "--give-up-after",
        "1",
        "hi",
    )

    assert result.returncode == 4
    assert result.stderr.startswith("parley: connection_lost: ")


def test_a_bad_command_line_exits_2():
    missing_thread = run_cli("ask", "--url", "http://127.0.0.1:1", "--token", "t", "x")
    bad_url = run_cli("ask", "--url", "nope", "--token", "t", "--thread", "x", "hi")

    assert missing_thread.returncode == 2 and "--thread" in missing_thread.stderr
    assert bad_url.returncode == 2
    assert bad_url.stderr.startswith("parley: invalid_arguments: ")


def test_token_prints_a_token_that_works(embedded):
    result = run_cli(
        "token", "--url", embedded.url, "--username", "owner", "--password", PASSWORD
    )
    wrong = run_cli(
        "token", "--url", embedded.url, "--username", "owner", "--password", "wrong"
    )

    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == embedded.tokens["owner"]
    assert wrong.returncode == 1 and "not_authenticated" in wrong.stderr


async def test_chat_shows_others_messages_live_and_answers_questions(embedded):
    thread_id = embedded.new_thread()
    chat = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "parley_client",
        "chat",
        "--url",
        embedded.url,
        "--token",
        embedded.tokens["participant"],
        "--thread",
        thread_id,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=ROOT,
    )
    output = []

    async def read():
        while line := await chat.stdout.readline():
            output.append(line.decode())

    reader = asyncio.ensure_future(read())
    try:
        await eventually(lambda: any("# connected" in x for x in output), timeout=20)
        with embedded.api("owner") as api:
            api.post(f"/threads/{thread_id}/runs/", json={"content": "hi everyone"})
        await eventually(lambda: "owner: hi everyone\n" in output)
        await eventually(lambda: "echo: hi everyone\n" in output)

        chat.stdin.write(b"/ask Tea or coffee?\n")
        await eventually(lambda: any("? Tea or coffee?" in x for x in output))
        chat.stdin.write(b"/answer tea\n")
        await eventually(lambda: "echo: You answered: tea\n" in output)

        chat.stdin.write(b"/quit\n")
        await chat.stdin.drain()
        assert await asyncio.wait_for(chat.wait(), 15) == 0
    finally:
        if chat.returncode is None:
            chat.kill()
            await chat.wait()
        await asyncio.wait_for(reader, 5)
    # Its own message is not echoed back as someone else's.
    assert not any(x.startswith("participant: ") for x in output)


def test_the_terminal_never_shows_text_twice_when_a_resync_changes_it():
    from parley_client.cli import _screen_update

    assert _screen_update("", "hello") == ("hello", "hello")
    assert _screen_update("hello", "hello world") == (" world", "hello world")
    # A snapshot with less than was shown (an embedded checkpoint): keep it.
    assert _screen_update("hello world", "hello") == ("", "hello world")
    # Text that disagrees with the screen is shown again, on a line of its own.
    assert _screen_update("hello", "help") == ("\nhelp", "help")
