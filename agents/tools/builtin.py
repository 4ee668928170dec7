"""The tools Parley ships: `calculate`, `clock`, `ask_thread` and `handoff`
(offered to the agents of a `handoff` team, agents/teams.py)."""

from __future__ import annotations

import ast
import math
import operator
from datetime import UTC, datetime

from channels.db import database_sync_to_async

from agents.selectors import team_for_thread
from agents.teams import seat_named, team_seats
from agents.tools.registry import ToolContext, tool

MAX_EXPRESSION_CHARS = 500
# Bounds that keep one expression from eating the worker: 9**9**9 would.
MAX_EXPONENT = 1000
MAX_RESULT_DIGITS = 1000

_BINARY = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
    ast.Pow: operator.pow,
}
_UNARY = {ast.UAdd: operator.pos, ast.USub: operator.neg}
_FUNCTIONS = {
    "abs": abs,
    "round": round,
    "min": min,
    "max": max,
    "sqrt": math.sqrt,
    "floor": math.floor,
    "ceil": math.ceil,
    "log": math.log,
    "exp": math.exp,
    "sin": math.sin,
    "cos": math.cos,
    "tan": math.tan,
}
_CONSTANTS = {"pi": math.pi, "e": math.e}


class CalculationError(ValueError):
    pass


def evaluate(expression: str) -> int | float:
    """The value of an arithmetic expression, walking its syntax tree (no eval)."""
    if len(expression) > MAX_EXPRESSION_CHARS:
        raise CalculationError(f"At most {MAX_EXPRESSION_CHARS} characters.")
    try:
        tree = ast.parse(expression.strip(), mode="eval")
    except SyntaxError:
        raise CalculationError(
            f"Not an arithmetic expression: {expression!r}"
        ) from None
    return _value(tree.body)


def _value(node: ast.AST) -> int | float:
    if isinstance(node, ast.Constant) and type(node.value) in (int, float):
        return node.value
    if isinstance(node, ast.Name) and node.id in _CONSTANTS:
        return _CONSTANTS[node.id]
    if isinstance(node, ast.UnaryOp) and type(node.op) in _UNARY:
        return _UNARY[type(node.op)](_value(node.operand))
    if isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
        left, right = _value(node.left), _value(node.right)
        if isinstance(node.op, ast.Pow) and abs(right) > MAX_EXPONENT:
            raise CalculationError(f"Exponents are limited to {MAX_EXPONENT}.")
        try:
            result = _BINARY[type(node.op)](left, right)
        except ZeroDivisionError:
            raise CalculationError("Division by zero.") from None
        except OverflowError:
            raise CalculationError("The result is too large.") from None
        if isinstance(result, complex):
            raise CalculationError("The result is not a real number.")
        if isinstance(result, int) and result.bit_length() > MAX_RESULT_DIGITS * 4:
            raise CalculationError("The result is too large.")
        return result
    if (
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Name)
        and node.func.id in _FUNCTIONS
        and not node.keywords
    ):
        try:
            return _FUNCTIONS[node.func.id](*(_value(arg) for arg in node.args))
        except (ValueError, TypeError, OverflowError) as error:
            raise CalculationError(f"{node.func.id}: {error}") from None
    raise CalculationError(
        "Only numbers, + - * / // % **, parentheses, pi, e and "
        f"{', '.join(sorted(_FUNCTIONS))}() are allowed."
    )


@tool
def calculate(expression: str) -> int | float:
    """Evaluate an arithmetic expression exactly, e.g. 6*7 or (2+3)**2/5.

    Args:
        expression: Numbers, + - * / // % ** and parentheses; pi, e, sqrt(),
            abs(), round(), min(), max(), floor(), ceil(), log(), exp(),
            sin(), cos(), tan().
    """
    result = evaluate(expression)
    if isinstance(result, float) and result.is_integer() and abs(result) < 2**53:
        return int(result)
    return result


@tool
def clock() -> str:
    """The current date and time in UTC, in ISO 8601 (e.g. 2026-12-03T07:00:00Z)."""
    return datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


@tool(waits_for_people=True)
async def ask_thread(question: str, context: ToolContext) -> str:
    """Ask the people in this chat thread a question and wait for one answer.

    Args:
        question: The question, as the people in the thread should read it.
    """
    answer = await context.ask(question)
    if answer is None:
        return "Nobody answered in time."
    return answer


@tool
async def handoff(to: str, context: ToolContext) -> str:
    """Pass the floor: name who speaks after your reply in this chat's team.

    Args:
        to: The name of the agent of the team who should speak next, or
            "human" to hand the floor back to the people in the chat.
    """
    team, names = await database_sync_to_async(team_for_thread)(
        thread_id=context.thread_id
    )
    if team is None or team.policy != "handoff":
        raise ValueError("This chat runs no handoff team: there is no floor to pass.")
    seats = team_seats(team, names)
    chosen = seat_named(to, seats)
    if chosen is None:
        raise ValueError(f"No seat named {to!r}; the team's seats: {', '.join(seats)}.")
    return f"The floor goes to {chosen} once you finish this reply."
