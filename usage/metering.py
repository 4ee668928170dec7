"""What a reply has spent while it streams, and whether it crossed a hard budget.

The worker (agents/execution.py) keeps one UsageMeter per run. It costs an
integer increment per piece of text and, for a run with a hard budget
(`Run.budget_allowance`, set when its message was admitted), a comparison
every CHECK_EVERY pieces; it never touches the database. Until the provider
reports usage, every streamed piece counts as one output token and the prompt
as one token per PROMPT_CHARS_PER_TOKEN characters; reported usage replaces
the estimate for the model calls it covers.
"""

from __future__ import annotations

import logging
from decimal import Decimal

logger = logging.getLogger(__name__)

# The error code of a run its meter stopped (it ends `cancelled`).
BUDGET_STOP = "budget_exceeded"
# Compare with the allowance once per this many pieces of text (and at every
# usage report): cheap enough for any stream, close enough for any budget.
CHECK_EVERY = 8
PROMPT_CHARS_PER_TOKEN = 4
MILLION = Decimal(1_000_000)


def run_cost(agent, *, input_tokens: int, output_tokens: int) -> Decimal:
    """What the tokens cost at the agent's prices (per million tokens)."""
    return (
        Decimal(input_tokens) * agent.input_price_per_million
        + Decimal(output_tokens) * agent.output_price_per_million
    ) / MILLION


class UsageMeter:
    """Tokens and cost of one run so far, checked against its allowance."""

    def __init__(self, *, agent, allowance: dict | None, prompt_chars: int) -> None:
        self.agent = agent
        self.allowance_tokens = None
        self.allowance_cost = None
        try:
            if allowance and allowance.get("tokens") is not None:
                self.allowance_tokens = int(allowance["tokens"])
            if allowance and allowance.get("cost") is not None:
                self.allowance_cost = Decimal(str(allowance["cost"]))
        except (AttributeError, TypeError, ValueError, ArithmeticError):
            # Written by admission only; should it be unreadable, the reply
            # goes on (the next message is still checked).
            logger.warning("unreadable budget allowance %r: not enforced", allowance)
        self.limited = (
            self.allowance_tokens is not None or self.allowance_cost is not None
        )
        self.prompt_estimate = -(-prompt_chars // PROMPT_CHARS_PER_TOKEN)
        self.pieces = 0  # text pieces streamed, over every model call
        self.pieces_reported = 0  # of them, those covered by reported usage
        self.reported: dict = {}
        self.stopped_at: tuple[int, Decimal] | None = None

    @classmethod
    def for_run(cls, run) -> UsageMeter:
        prompt = run.prompt.text if run.prompt_id and run.prompt else ""
        return cls(
            agent=run.agent,
            allowance=run.budget_allowance,
            prompt_chars=len(prompt),
        )

    def add(self, text: str) -> bool:
        """Count one piece of text; True when the run just crossed its allowance."""
        self.pieces += 1
        return self.limited and self.pieces % CHECK_EVERY == 0 and self.crossed()

    def report(self, usage: dict) -> bool:
        """The provider's usage over the run's model calls so far; True when
        the run crossed its allowance."""
        self.reported = dict(usage)
        self.pieces_reported = self.pieces
        return self.limited and self.crossed()

    def tokens(self) -> tuple[int, int, bool]:
        """(input, output, estimated): reported usage plus the estimate of
        what came since the last report (or of everything, without one)."""
        unreported = self.pieces - self.pieces_reported
        input_tokens = int(self.reported.get("input_tokens") or 0)
        output_tokens = int(self.reported.get("output_tokens") or 0) + unreported
        estimated = unreported > 0 or not self.reported
        if not self.reported:
            input_tokens = self.prompt_estimate
        return input_tokens, output_tokens, estimated

    def spent(self) -> tuple[int, Decimal]:
        input_tokens, output_tokens, _ = self.tokens()
        return input_tokens + output_tokens, run_cost(
            self.agent, input_tokens=input_tokens, output_tokens=output_tokens
        )

    def crossed(self) -> bool:
        tokens, cost = self.spent()
        over = (
            self.allowance_tokens is not None and tokens > self.allowance_tokens
        ) or (self.allowance_cost is not None and cost > self.allowance_cost)
        if over and self.stopped_at is None:
            self.stopped_at = (tokens, cost)
        return over

    def stop_message(self) -> str:
        return (
            "The reply was stopped: it used up what was left of a hard monthly budget."
        )


class BudgetCrossed(Exception):
    """Raised in the worker's streaming loop when a reply crosses a hard
    budget: the run ends `cancelled` with code `budget_exceeded`, its text so
    far kept."""
