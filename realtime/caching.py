"""The default cache as one object per process, and counters in it.

`django.core.cache.cache` hands out one cache object per async context, and
code that runs for every socket message or API request (rate limits,
throttles) runs in a new context each time: each call built a new Redis
connection pool and opened a new connection. Those callers use this instead;
redis-py's pool and Django's LocMemCache are safe to share between threads.
"""

import functools

from django.core.cache import DEFAULT_CACHE_ALIAS, caches
from django.core.cache.backends.redis import RedisCache


@functools.cache
def shared_cache():
    return caches.create_connection(DEFAULT_CACHE_ALIAS)


def counter_increment(key: str, *, timeout: int) -> int:
    """Add one to the counter `key`, created at 0 to expire `timeout` seconds
    later; return the new count. On Redis one round trip (Django's add + incr
    would take three: incr checks that the key exists first)."""
    cache = shared_cache()
    if isinstance(cache, RedisCache):
        full_key = cache.make_and_validate_key(key)
        client = cache._cache.get_client(full_key, write=True)
        pipe = client.pipeline(transaction=False)
        pipe.set(full_key, 0, ex=timeout, nx=True)
        pipe.incr(full_key)
        return int(pipe.execute()[1])
    cache.add(key, 0, timeout=timeout)
    try:
        return cache.incr(key)
    except ValueError:  # expired between add and incr
        cache.set(key, 1, timeout=timeout)
        return 1
