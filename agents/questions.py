"""Questions a run asks the thread: an agent's question (`ask_thread`, a
Python agent's `Ask`, the echo agent's `/ask`) or the approval of a tool call.

A question is stored (agents/services.py `run_input_open`) before its
`input_request` frame goes out, so a page opened later sees it open; the run
waits for the answer, which a writer of the thread sends and the worker's
control channel hands to `Questions.answer` (agents/runtime.py). However it
ends (answered, timed out) it is closed with that outcome and the thread hears
so; questions still open when their run ends are closed by its finish.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging

from agents import services
from agents.models import Run, RunInputStatus
from agents.streaming import publish_with_retry
from realtime.events import call_service
from realtime.protocol import (
    InputRequestContent,
    InputRequestFrame,
    StateFrame,
    ToolCallData,
    state_content,
)

logger = logging.getLogger(__name__)


class Questions:
    """The questions the runs of one worker are waiting on."""

    def __init__(self) -> None:
        # run id -> input id -> the future the answer arrives in
        self._waiting: dict[str, dict[str, asyncio.Future]] = {}
        self._input_ids = itertools.count(1)
        self._asked: set[str] = set()

    async def ask(self, run: Run, question: str, timeout: float) -> str | None:
        """Ask the thread; the answer, or None when nobody answers in `timeout` s."""
        return await self._ask(run, question, timeout)

    async def ask_approval(self, run: Run, entry: dict, timeout: float) -> bool | None:
        """Ask the thread's writers to approve a tool call: True, False, or None
        when nobody answered within `timeout` s (the call does not run)."""
        arguments = entry["arguments"]
        shown = arguments if isinstance(arguments, str) else json.dumps(arguments)
        answer = await self._ask(
            run,
            f"Allow the tool {entry['name']} with {shown[:500]}?",
            timeout,
            kind="approval",
            tool_call=ToolCallData(**entry),
        )
        return answer if answer is None else bool(answer)

    def answer(
        self, run_id: str, input_id: str | None, text: str | bool, username: str
    ) -> bool:
        """Hand an answer (text, or True/False for an approval) to the waiting
        run (its oldest open question when `input_id` is None); False when
        nothing waits for it."""
        pending = self._waiting.get(run_id) or {}
        if input_id is None and pending:
            input_id = next(iter(pending))
        future = pending.get(input_id)
        if future is None or future.done():
            return False
        future.set_result((text, username))
        return True

    def end(self, run_id: str) -> bool:
        """Forget the run's questions (it is ending): whether it asked any,
        which its finish then closes."""
        self._waiting.pop(run_id, None)
        asked = run_id in self._asked
        self._asked.discard(run_id)
        return asked

    async def _ask(
        self,
        run: Run,
        question: str,
        timeout: float,
        *,
        kind: str = "question",
        tool_call: ToolCallData | None = None,
    ):
        """Ask the thread (a question, or an approval of `tool_call`); the
        answer (text, or True/False), or None when nobody answers in time."""
        run_id = str(run.id)
        input_id = f"{run_id}:{next(self._input_ids)}"
        future = asyncio.get_running_loop().create_future()
        self._waiting.setdefault(run_id, {})[input_id] = future
        self._asked.add(run_id)  # the run's finish closes it, whatever happens
        try:
            await call_service(
                services.run_input_open,
                run_id=run_id,
                input_id=input_id,
                question=question,
                timeout=timeout,
                kind=kind,
                tool_call=tool_call.model_dump() if tool_call else None,
            )
            await publish_with_retry(
                run.thread_id,
                InputRequestFrame(
                    content=InputRequestContent(
                        input_id=input_id,
                        kind=kind,
                        question=question,
                        timeout=timeout,
                        tool_call=tool_call,
                    ),
                    thread_id=run.thread_id,
                    run_id=run.id,
                    agent=run.agent.name,
                ),
            )
            try:
                result, by = await asyncio.wait_for(future, timeout)
                if isinstance(result, bool):  # an approval
                    shown = "approved" if result else "denied"
                else:
                    shown = result
                state_kind = "input_received"
                data = {"input_id": input_id, "by": by, "answer": shown}
                closed = {
                    "status": RunInputStatus.ANSWERED,
                    "answer": shown,
                    "username": by,
                }
            except TimeoutError:
                state_kind, data, result = "input_timeout", {"input_id": input_id}, None
                closed = {"status": RunInputStatus.TIMED_OUT}
        finally:
            self._waiting.get(run_id, {}).pop(input_id, None)
        try:
            await call_service(services.run_input_close, input_id=input_id, **closed)
        except Exception:  # the agent has its answer; the history may miss it
            logger.exception("recording the outcome of input %s failed", input_id)
        await publish_with_retry(
            run.thread_id,
            StateFrame(
                content=state_content(state_kind, data),
                thread_id=run.thread_id,
                run_id=run.id,
                agent=run.agent.name,
            ),
        )
        return result
