"""Thin helpers over Parley's REST API (docs/api.md) with httpx: a token,
threads, members, runs and history. `ParleyAPI` is async, `ParleyAPISync` the
same calls blocking; both raise ApiError with Parley's error code.

Each call is described once (`_Call`: method, path, body, the statuses that
mean success) and run by either client.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, cast

import httpx

from parley_client.errors import ApiError


@dataclass(frozen=True)
class _Call:
    method: str
    path: str
    json: Any = None
    params: Mapping[str, Any] = field(default_factory=dict)
    ok: tuple[int, ...] = (200,)


def _api_base(url: str) -> str:
    base = url.rstrip("/")
    if base.startswith("ws://"):
        base = "http://" + base[5:]
    elif base.startswith("wss://"):
        base = "https://" + base[6:]
    if not base.startswith(("http://", "https://")):
        raise ValueError(f"not a server URL (http://host:port): {url!r}")
    return base


def _result(call: _Call, response: httpx.Response) -> Any:
    if response.status_code in call.ok:
        return response.json() if response.content else None
    code, message, details = "http_error", response.reason_phrase, None
    try:
        error = response.json()["error"]
        code, message = error["code"], error["message"]
        details = error.get("details")
    except (ValueError, KeyError, TypeError):
        pass
    raise ApiError(response.status_code, code, message, details)


def _dict(value: Any) -> dict[str, Any]:
    return cast(dict[str, Any], value)


def _list(value: Any) -> list[dict[str, Any]]:
    return cast(list[dict[str, Any]], value)


def _clean(**fields: Any) -> dict[str, Any]:
    return {k: v for k, v in fields.items() if v is not None}


class _Calls:
    """The calls themselves; subclasses run them."""

    @staticmethod
    def _token(username: str, password: str) -> _Call:
        return _Call(
            "POST", "/api/auth/token/", {"username": username, "password": password}
        )

    @staticmethod
    def _revoke_token() -> _Call:
        return _Call("DELETE", "/api/auth/token/", ok=(204,))

    @staticmethod
    def _threads(agent: str | None) -> _Call:
        return _Call("GET", "/api/threads/", params=_clean(agent=agent))

    @staticmethod
    def _create_thread(
        agent: str,
        title: str,
        agents: list[str] | None,
        config: Mapping[str, Any] | None,
    ) -> _Call:
        body = _clean(agent=agent, title=title, agents=agents, config=config)
        return _Call("POST", "/api/threads/", body, ok=(201,))

    @staticmethod
    def _thread(thread_id: str) -> _Call:
        return _Call("GET", f"/api/threads/{thread_id}/")

    @staticmethod
    def _delete_thread(thread_id: str) -> _Call:
        return _Call("DELETE", f"/api/threads/{thread_id}/", ok=(204,))

    @staticmethod
    def _members(thread_id: str) -> _Call:
        return _Call("GET", f"/api/threads/{thread_id}/members/")

    @staticmethod
    def _add_member(thread_id: str, username: str, role: str) -> _Call:
        if role not in ("participant", "observer"):
            raise ValueError("role is 'participant' or 'observer'")
        body = {"username": username, "role": role}
        return _Call("POST", f"/api/threads/{thread_id}/members/", body, ok=(200, 201))

    @staticmethod
    def _remove_member(thread_id: str, username: str) -> _Call:
        return _Call(
            "DELETE", f"/api/threads/{thread_id}/members/{username}/", ok=(204,)
        )

    @staticmethod
    def _start_run(thread_id: str, content: str, request_id: str | None) -> _Call:
        body = _clean(content=content, request_id=request_id)
        return _Call("POST", f"/api/threads/{thread_id}/runs/", body, ok=(202,))

    @staticmethod
    def _run(run_id: str) -> _Call:
        return _Call("GET", f"/api/runs/{run_id}/")

    @staticmethod
    def _cancel_run(run_id: str) -> _Call:
        return _Call("POST", f"/api/runs/{run_id}/cancel/")

    @staticmethod
    def _runs(thread_id: str | None, status: str | None) -> _Call:
        return _Call(
            "GET", "/api/runs/", params=_clean(thread=thread_id, status=status)
        )

    @staticmethod
    def _history(thread_id: str, page_size: int) -> _Call:
        return _Call(
            "GET",
            f"/api/threads/{thread_id}/messages/",
            params={"page_size": page_size},
        )


def _headers(token: str | None) -> dict[str, str]:
    headers = {"Accept": "application/json"}
    if token:
        headers["Authorization"] = f"Token {token}"
    return headers


class ParleyAPI(_Calls):
    """Async REST client: `async with ParleyAPI(url, token) as api: ...`."""

    def __init__(self, url: str, token: str | None = None, *, timeout: float = 30.0):
        self.token = token
        self._http = httpx.AsyncClient(
            base_url=_api_base(url), headers=_headers(token), timeout=timeout
        )

    async def __aenter__(self) -> ParleyAPI:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    async def _do(self, call: _Call) -> Any:
        response = await self._http.request(
            call.method, call.path, json=call.json, params=call.params or None
        )
        return _result(call, response)

    async def token_for(self, username: str, password: str) -> str:
        """A token for the account; also used by this client from now on."""
        token = str((await self._do(self._token(username, password)))["token"])
        self.token = token
        self._http.headers["Authorization"] = f"Token {token}"
        return token

    async def revoke_token(self) -> None:
        await self._do(self._revoke_token())

    async def threads(self, agent: str | None = None) -> list[dict[str, Any]]:
        """The first page of threads the caller may see (most recent first)."""
        return _list((await self._do(self._threads(agent)))["results"])

    async def create_thread(
        self,
        agent: str,
        title: str = "",
        *,
        agents: list[str] | None = None,
        config: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        return _dict(await self._do(self._create_thread(agent, title, agents, config)))

    async def thread(self, thread_id: str) -> dict[str, Any]:
        return _dict(await self._do(self._thread(thread_id)))

    async def delete_thread(self, thread_id: str) -> None:
        await self._do(self._delete_thread(thread_id))

    async def members(self, thread_id: str) -> list[dict[str, Any]]:
        return _list(await self._do(self._members(thread_id)))

    async def add_member(
        self, thread_id: str, username: str, role: str = "participant"
    ) -> dict[str, Any]:
        return _dict(await self._do(self._add_member(thread_id, username, role)))

    async def remove_member(self, thread_id: str, username: str) -> None:
        await self._do(self._remove_member(thread_id, username))

    async def start_run(
        self, thread_id: str, content: str, *, request_id: str | None = None
    ) -> dict[str, Any]:
        return _dict(await self._do(self._start_run(thread_id, content, request_id)))

    async def run(self, run_id: str) -> dict[str, Any]:
        return _dict(await self._do(self._run(run_id)))

    async def cancel_run(self, run_id: str) -> dict[str, Any]:
        return _dict(await self._do(self._cancel_run(run_id)))

    async def runs(
        self, *, thread_id: str | None = None, status: str | None = None
    ) -> list[dict[str, Any]]:
        return _list((await self._do(self._runs(thread_id, status)))["results"])

    async def history(
        self, thread_id: str, *, page_size: int = 200
    ) -> AsyncIterator[dict[str, Any]]:
        """Every message of the thread, oldest first (follows the cursor)."""
        call: _Call | None = self._history(thread_id, page_size)
        while call is not None:
            page = await self._do(call)
            for message in page["results"]:
                yield message
            call = _Call("GET", page["next"]) if page.get("next") else None


class ParleyAPISync(_Calls):
    """The same calls, blocking: `with ParleyAPISync(url, token) as api: ...`."""

    def __init__(self, url: str, token: str | None = None, *, timeout: float = 30.0):
        self.token = token
        self._http = httpx.Client(
            base_url=_api_base(url), headers=_headers(token), timeout=timeout
        )

    def __enter__(self) -> ParleyAPISync:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def _do(self, call: _Call) -> Any:
        response = self._http.request(
            call.method, call.path, json=call.json, params=call.params or None
        )
        return _result(call, response)

    def token_for(self, username: str, password: str) -> str:
        token = str(self._do(self._token(username, password))["token"])
        self.token = token
        self._http.headers["Authorization"] = f"Token {token}"
        return token

    def revoke_token(self) -> None:
        self._do(self._revoke_token())

    def threads(self, agent: str | None = None) -> list[dict[str, Any]]:
        return _list((self._do(self._threads(agent)))["results"])

    def create_thread(
        self,
        agent: str,
        title: str = "",
        *,
        agents: list[str] | None = None,
        config: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        return _dict(self._do(self._create_thread(agent, title, agents, config)))

    def thread(self, thread_id: str) -> dict[str, Any]:
        return _dict(self._do(self._thread(thread_id)))

    def delete_thread(self, thread_id: str) -> None:
        self._do(self._delete_thread(thread_id))

    def members(self, thread_id: str) -> list[dict[str, Any]]:
        return _list(self._do(self._members(thread_id)))

    def add_member(
        self, thread_id: str, username: str, role: str = "participant"
    ) -> dict[str, Any]:
        return _dict(self._do(self._add_member(thread_id, username, role)))

    def remove_member(self, thread_id: str, username: str) -> None:
        self._do(self._remove_member(thread_id, username))

    def start_run(
        self, thread_id: str, content: str, *, request_id: str | None = None
    ) -> dict[str, Any]:
        return _dict(self._do(self._start_run(thread_id, content, request_id)))

    def run(self, run_id: str) -> dict[str, Any]:
        return _dict(self._do(self._run(run_id)))

    def cancel_run(self, run_id: str) -> dict[str, Any]:
        return _dict(self._do(self._cancel_run(run_id)))

    def runs(
        self, *, thread_id: str | None = None, status: str | None = None
    ) -> list[dict[str, Any]]:
        return _list((self._do(self._runs(thread_id, status)))["results"])

    def history(
        self, thread_id: str, *, page_size: int = 200
    ) -> Iterator[dict[str, Any]]:
        call: _Call | None = self._history(thread_id, page_size)
        while call is not None:
            page = self._do(call)
            yield from page["results"]
            call = _Call("GET", page["next"]) if page.get("next") else None
