"""The terminal client: `python -m parley_client ask|chat|token`.

    ask    post one message, stream the reply to stdout, exit when the run ends
    chat   a line-based session: others' messages and replies live, questions
           answered with /answer
    token  print a token for a username and password

Exit codes: 0 the reply completed; 1 the run failed or was cancelled, or the
server refused the message (its error code on stderr); 2 a bad command line;
3 the server closed the connection (4401 not authenticated, 4403 not allowed,
4404 no such thread, ...); 4 the connection was lost and retries ran out;
130 interrupted. Errors are one line on stderr: `parley: <code>: <message>`.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import threading
from collections.abc import Sequence
from typing import TextIO

from parley_client.connection import ConnectionState, ParleyClient
from parley_client.errors import (
    ApiError,
    ConnectionClosedError,
    ConnectionLostError,
    ParleyError,
    RequestError,
)
from parley_client.events import (
    ErrorReceived,
    InputRequested,
    MessagePosted,
    RunCompleted,
    StatusChanged,
    TextDelta,
    TextReset,
)
from parley_client.rest import ParleyAPI
from parley_client.retry import RetryPolicy

EXIT_OK = 0
EXIT_RUN_FAILED = 1
EXIT_USAGE = 2
EXIT_CLOSED = 3
EXIT_LOST = 4
EXIT_INTERRUPTED = 130


def _fail(code: str, message: str) -> None:
    print(f"parley: {code}: {message}", file=sys.stderr, flush=True)


def _closed_exit(error: ConnectionClosedError) -> int:
    code = error.error_code or "closed"
    message = error.error_message or str(error)
    _fail(code, f"{message} (close {error.close_code})")
    return EXIT_CLOSED


class _Lines:
    """stdin lines as an async queue, read by a daemon thread (a blocked read
    never holds up the exit)."""

    def __init__(self, stream: TextIO) -> None:
        self.queue: asyncio.Queue[str | None] = asyncio.Queue()
        loop = asyncio.get_running_loop()

        def read() -> None:
            for line in stream:
                loop.call_soon_threadsafe(self.queue.put_nowait, line.rstrip("\n"))
            loop.call_soon_threadsafe(self.queue.put_nowait, None)

        threading.Thread(target=read, name="parley-stdin", daemon=True).start()

    async def next(self) -> str | None:
        return await self.queue.get()


def _make_client(args: argparse.Namespace) -> ParleyClient:
    client = ParleyClient(
        args.url,
        args.thread,
        token=args.token,
        retry=RetryPolicy(give_up_after=args.give_up_after),
    )
    if not args.quiet:

        def tell(state: ConnectionState) -> None:
            if state is ConnectionState.RECONNECTING:
                print("parley: connection lost; reconnecting", file=sys.stderr)
            elif state is ConnectionState.CONNECTED and client.reconnects:
                print("parley: reconnected; resuming", file=sys.stderr)

        client.on_state_change(tell)
    return client


def _screen_update(shown: str, text: str) -> tuple[str, str]:
    """What to write so a terminal that shows `shown` shows `text`: the new
    part; nothing when `text` is already on screen (a resync came back with
    less, e.g. an embedded server's checkpoint); else the text again on a new
    line. Returns (output, what the terminal shows then)."""
    if text.startswith(shown):
        return text[len(shown) :], text
    if shown.startswith(text):
        return "", shown
    return "\n" + text, text


async def _ask(args: argparse.Namespace) -> int:
    text = " ".join(args.text)
    if text == "-":
        text = sys.stdin.read()
    if not text.strip():
        _fail("invalid_message", "the message is empty")
        return EXIT_USAGE
    lines: _Lines | None = None

    async def on_input(question: InputRequested) -> str | bool | None:
        nonlocal lines
        if args.answer is not None:
            print(f"? {question.question} {args.answer}", file=sys.stderr, flush=True)
            return str(args.answer)
        print(f"? {question.question}", file=sys.stderr, flush=True)
        if not sys.stdin.isatty():
            return None  # nobody to ask here; the question waits for others
        lines = lines or _Lines(sys.stdin)
        answer: str | None = await lines.next()
        return answer

    async with _make_client(args) as client:
        out = sys.stdout
        shown = text_so_far = ""
        async for event in client.ask(text, on_input=on_input):
            if isinstance(event, TextDelta | TextReset):
                if isinstance(event, TextDelta):
                    text_so_far += event.text
                else:
                    text_so_far = event.text
                output, shown = _screen_update(shown, text_so_far)
                out.write(output)
                out.flush()
            elif isinstance(event, RunCompleted):
                output, shown = _screen_update(shown, event.text)
                out.write(output)
                if shown and not shown.endswith("\n"):
                    out.write("\n")
                out.flush()
                if event.ok:
                    return EXIT_OK
                error = event.error or {}
                _fail(
                    str(error.get("code") or event.status),
                    str(error.get("message") or f"the run ended {event.status}"),
                )
                return EXIT_RUN_FAILED
    return EXIT_RUN_FAILED  # pragma: no cover: the stream ends with RunCompleted


async def _chat(args: argparse.Namespace) -> int:
    agent = "agent"
    try:
        async with ParleyAPI(args.url[0], args.token) as api:
            agent = (await api.thread(args.thread)).get("agent") or agent
    except (ApiError, OSError):
        pass  # the socket says what is wrong, below
    out = sys.stdout
    async with _make_client(args) as client:
        me = client.user
        print(
            f"# connected to {args.thread} as {me} ({client.role}); "
            "/answer TEXT, /approve, /deny, /cancel, /quit",
            flush=True,
        )
        for message in list(client.view.messages.values())[-args.history :]:
            who = message.author if message.role == "user" else message.agent or agent
            print(f"{who}: {message.text}", flush=True)
        open_line: str | None = None  # the run whose reply the last line shows

        def end_line() -> None:
            nonlocal open_line
            if open_line is not None:
                out.write("\n")
                open_line = None

        async def show() -> None:
            nonlocal open_line
            async for event in client.events():
                if isinstance(event, MessagePosted) and event.message.author != me:
                    end_line()
                    print(f"{event.message.author}: {event.message.text}")
                elif isinstance(event, TextDelta | TextReset):
                    if open_line != event.run_id:
                        end_line()
                        out.write(f"{agent}: ")
                        open_line = event.run_id
                    out.write(event.text)
                elif isinstance(event, RunCompleted):
                    end_line()
                    if not event.ok:
                        code = (event.error or {}).get("code") or event.status
                        print(f"[{agent}: {event.status}: {code}]")
                elif isinstance(event, InputRequested):
                    end_line()
                    print(f"? {event.question}   (/answer TEXT)")
                elif isinstance(event, ErrorReceived):
                    end_line()
                    print(f"[error {event.code}: {event.message}]")
                elif isinstance(event, StatusChanged) and event.state in (
                    "notice",
                    "role_changed",
                    "deleted",
                    "reset",
                ):
                    end_line()
                    detail = event.content.get("text") or event.content.get("role")
                    print(f"[{event.state}{': ' + str(detail) if detail else ''}]")
                out.flush()

        async def type_lines() -> None:
            lines = _Lines(sys.stdin)
            while (line := await lines.next()) is not None:
                line = line.strip()
                if not line:
                    continue
                try:
                    await _command(client, line)
                except _Quit:
                    return
                except RequestError as error:
                    print(f"[refused {error.code}: {error.message}]", flush=True)

        shown = asyncio.ensure_future(show())
        typed = asyncio.ensure_future(type_lines())
        done, _ = await asyncio.wait({shown, typed}, return_when="FIRST_COMPLETED")
        for task in (shown, typed):
            if task not in done:
                task.cancel()
        for task in done:
            task.result()  # the connection's end, if that is what ended it
    return EXIT_OK


class _Quit(Exception):
    pass


async def _command(client: ParleyClient, line: str) -> None:
    word, _, rest = line.partition(" ")
    open_inputs = client.view.open_inputs()
    if word == "/quit":
        raise _Quit
    if word in ("/answer", "/approve", "/deny"):
        if not open_inputs:
            print("[no open question]", flush=True)
            return
        question = open_inputs[0]
        if word == "/answer":
            await client.answer(question, rest)
        else:
            await client.approve(question, word == "/approve")
        return
    if word == "/cancel":
        await client.cancel()
        return
    await client.post(line)


async def _token(args: argparse.Namespace) -> int:
    password = args.password or os.environ.get("PARLEY_PASSWORD")
    if not password:
        _fail("invalid_arguments", "give --password or set PARLEY_PASSWORD")
        return EXIT_USAGE
    async with ParleyAPI(args.url[0]) as api:
        print(await api.token_for(args.username, password))
    return EXIT_OK


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m parley_client", description="Parley's terminal client."
    )
    commands = parser.add_subparsers(dest="command", required=True)

    def common(sub: argparse.ArgumentParser, *, thread: bool = True) -> None:
        sub.add_argument(
            "--url",
            action="append",
            required=True,
            help="server base URL, e.g. http://127.0.0.1:8000 (repeat it for "
            "several web processes: tried in turn after a failure)",
        )
        if thread:
            sub.add_argument(
                "--token",
                default=os.environ.get("PARLEY_TOKEN"),
                help="API token (default: $PARLEY_TOKEN)",
            )
            sub.add_argument("--thread", required=True, help="the thread's id")
            sub.add_argument(
                "--give-up-after",
                type=float,
                default=60.0,
                help="seconds to keep reconnecting after a lost connection",
            )
            sub.add_argument(
                "--quiet", action="store_true", help="no reconnect notices on stderr"
            )

    ask = commands.add_parser("ask", help="post a message and stream the reply")
    common(ask)
    ask.add_argument("--answer", help="answer any question the agent asks with this")
    ask.add_argument("text", nargs="+", help="the message ('-' reads stdin)")
    chat = commands.add_parser("chat", help="an interactive, line-based session")
    common(chat)
    chat.add_argument("--history", type=int, default=20, help="messages shown first")
    token = commands.add_parser("token", help="print a token for a login")
    common(token, thread=False)
    token.add_argument("--username", required=True)
    token.add_argument("--password", help="default: $PARLEY_PASSWORD")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command != "token" and not args.token:
        parser.error("give --token or set PARLEY_TOKEN")
    runner = {"ask": _ask, "chat": _chat, "token": _token}[args.command]
    try:
        return asyncio.run(runner(args))
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except ConnectionClosedError as error:
        return _closed_exit(error)
    except ConnectionLostError as error:
        _fail("connection_lost", str(error))
        return EXIT_LOST
    except RequestError as error:
        _fail(error.code, error.message)
        return EXIT_RUN_FAILED
    except ApiError as error:
        _fail(error.code, f"{error.message} (HTTP {error.status})")
        return EXIT_RUN_FAILED if error.status < 500 else EXIT_LOST
    except ParleyError as error:
        _fail("error", str(error))
        return EXIT_RUN_FAILED
    except ValueError as error:
        _fail("invalid_arguments", str(error))
        return EXIT_USAGE
    except OSError as error:
        _fail("connection_lost", str(error))
        return EXIT_LOST
