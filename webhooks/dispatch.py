"""The dispatcher: sends webhook deliveries from the process's event loop.

One per event loop, started by `start()` (the agent worker calls it when it
starts; `wake()`, which a new delivery's commit awaits, starts it too where
none runs yet). It loops: every PARLEY_WEBHOOK_SWEEP_SECONDS it creates the
deliveries of runs that ended without one (`deliveries_create_missing`); then,
and whenever woken, it takes the deliveries due (rows a stopped worker left
too: their lease lapses) and attempts each in a task of its own, at most
PARLEY_WEBHOOK_CONCURRENCY at once, so one slow receiver delays no other.

An attempt resolves the URL's host and checks it again (webhooks/targets.py),
then POSTs the stored body with httpx to that checked address, signed
(webhooks/signing.py), without following redirects. A 2xx answer delivers
it; anything else is retried with the backoff until the attempts run out.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import time
import weakref

import httpx
from django.conf import settings
from django.utils import timezone

from realtime.events import call_service
from webhooks import services, signing
from webhooks.errors import WebhookErrorCode
from webhooks.targets import TargetRefused, resolve_target

logger = logging.getLogger(__name__)

USER_AGENT = "Parley-Webhooks/1"
# Refusals that another attempt cannot change: the URL itself is not allowed.
PERMANENT = frozenset(
    {
        WebhookErrorCode.WEBHOOK_URL_INVALID,
        WebhookErrorCode.WEBHOOK_HOST_NOT_ALLOWED,
        WebhookErrorCode.WEBHOOK_HTTPS_REQUIRED,
    }
)
EXCERPT_BYTES = 2048


class Dispatcher:
    def __init__(self) -> None:
        self._wakeup = asyncio.Event()
        self._task: asyncio.Task | None = None
        self._attempts: set[asyncio.Task] = set()
        self._next_sweep = 0.0
        self._client: httpx.AsyncClient | None = None

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    def start(self) -> None:
        if not self.running:
            # A context of its own: started from a request's after-commit
            # action, the task would otherwise keep that request's asgiref
            # context (its thread's executor, gone once the request ends).
            self._task = asyncio.get_running_loop().create_task(
                self._serve(), context=contextvars.Context()
            )

    def wake(self) -> None:
        self._wakeup.set()

    async def stop(self) -> None:
        tasks = [*self._attempts, *([self._task] if self._task else [])]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _serve(self) -> None:
        timeout = httpx.Timeout(settings.PARLEY_WEBHOOK_TIMEOUT_SECONDS)
        # trust_env off: no proxy from the environment sees the calls or
        # bypasses the address checks. No kept-alive connections: a pool keyed
        # by address would hand a connection made (and TLS-checked) for one
        # host to another host on the same address.
        async with httpx.AsyncClient(
            timeout=timeout,
            follow_redirects=False,
            trust_env=False,
            limits=httpx.Limits(max_keepalive_connections=0),
        ) as client:
            self._client = client
            while True:
                self._wakeup.clear()
                try:
                    wait = await self._run_once()
                except Exception:
                    logger.exception("webhook dispatch failed; trying again")
                    wait = settings.PARLEY_WEBHOOK_SWEEP_SECONDS
                try:
                    await asyncio.wait_for(self._wakeup.wait(), timeout=wait)
                except TimeoutError:
                    pass

    async def _run_once(self) -> float:
        loop = asyncio.get_running_loop()
        sweep = settings.PARLEY_WEBHOOK_SWEEP_SECONDS
        if loop.time() >= self._next_sweep:
            self._next_sweep = loop.time() + sweep
            created = await call_service(services.deliveries_create_missing)
            if created:
                logger.info("webhooks: %d deliveries of ended runs caught up", created)
        free = settings.PARLEY_WEBHOOK_CONCURRENCY - len(self._attempts)
        if free > 0:
            for item in await call_service(services.delivery_claim_due, limit=free):
                task = loop.create_task(self._attempt(item))
                self._attempts.add(task)
                task.add_done_callback(self._attempt_done)
        wait = max(self._next_sweep - loop.time(), 0.0)
        next_due = await call_service(services.delivery_next_due)
        if next_due is not None:
            wait = min(wait, next_due)
        return max(wait, 0.01)

    def _attempt_done(self, task: asyncio.Task) -> None:
        self._attempts.discard(task)
        self._wakeup.set()  # its retry may be the next thing due

    async def _attempt(self, item: dict) -> None:
        """One attempt of one delivery; whatever it raises stays here."""
        started_at = timezone.now()
        began = time.monotonic()
        outcome = {"status_code": None, "error_code": "", "error": ""}
        final = False
        try:
            outcome.update(await self._send(item))
        except TargetRefused as refused:
            outcome.update(error_code=refused.code.value, error=refused.message)
            final = refused.code in PERMANENT
        except asyncio.CancelledError:
            raise  # the process stops: the lease lapses, another attempt follows
        except Exception as error:  # one delivery's failure is its own
            logger.exception("webhook delivery %s: attempt failed", item["id"])
            outcome.update(
                error_code=WebhookErrorCode.WEBHOOK_CONNECT_FAILED.value,
                error=f"{type(error).__name__}: {error}",
            )
        delivery = await call_service(
            services.delivery_record_attempt,
            delivery_id=item["id"],
            started_at=started_at,
            duration_ms=int((time.monotonic() - began) * 1000),
            final=final,
            **outcome,
        )
        if delivery is not None and delivery.status != "pending":
            logger.info(
                "webhook delivery %s %s after %d attempts",
                delivery.pk,
                delivery.status,
                delivery.attempts,
            )

    async def _send(self, item: dict) -> dict:
        target = await resolve_target(item["url"])
        body = item["body"].encode()
        timestamp = int(time.time())
        headers = {
            "Host": target.host_header,
            "Content-Type": "application/json",
            "User-Agent": USER_AGENT,
            signing.SIGNATURE_HEADER: signing.signature_header(
                item["secret"], body, timestamp
            ),
            signing.DELIVERY_HEADER: str(item["id"]),
            signing.EVENT_HEADER: item["event"],
            signing.ATTEMPT_HEADER: str(item["attempts"] + 1),
        }
        try:
            async with self._client.stream(
                "POST",
                target.url,
                content=body,
                headers=headers,
                # TLS names (and checks the certificate of) the URL's host,
                # while the connection goes to the address checked above.
                extensions={"sni_hostname": target.server_name},
            ) as response:
                excerpt = b""
                async for chunk in response.aiter_bytes():
                    excerpt += chunk
                    if len(excerpt) >= EXCERPT_BYTES:
                        break
        except httpx.TimeoutException:
            return {
                "error_code": WebhookErrorCode.WEBHOOK_TIMEOUT.value,
                "error": "The receiver did not answer within "
                f"{settings.PARLEY_WEBHOOK_TIMEOUT_SECONDS:g} s.",
            }
        except httpx.HTTPError as error:
            return {
                "error_code": WebhookErrorCode.WEBHOOK_CONNECT_FAILED.value,
                "error": f"{type(error).__name__}: {error}",
            }
        outcome = {
            "status_code": response.status_code,
            "response_excerpt": excerpt.decode("utf-8", "replace"),
        }
        if not response.is_success:
            outcome.update(
                error_code=WebhookErrorCode.WEBHOOK_BAD_STATUS.value,
                error=f"The receiver answered {response.status_code}.",
            )
        return outcome


_dispatchers: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def dispatcher() -> Dispatcher:
    """This event loop's dispatcher (not necessarily started)."""
    loop = asyncio.get_running_loop()
    found = _dispatchers.get(loop)
    if found is None:
        found = _dispatchers[loop] = Dispatcher()
    return found


def start() -> Dispatcher:
    """Start this event loop's dispatcher, once: deliveries left undelivered
    (by a worker that stopped, or waiting for a retry) go out from here on."""
    found = dispatcher()
    found.start()
    return found


async def wake() -> None:
    """After a delivery is created or redelivered: attempt it now."""
    start().wake()


async def stop() -> None:
    """Stop this event loop's dispatcher and its attempts (tests, shutdown)."""
    loop = asyncio.get_running_loop()
    found = _dispatchers.pop(loop, None)
    if found is not None:
        await found.stop()
