"""The default cache as one object per process.

`django.core.cache.cache` hands out one cache object per async context, and
code that runs for every socket message or API request (rate limits,
throttles) runs in a new context each time: each call built a new Redis
connection pool and opened a new connection. Those callers use this instead;
redis-py's pool and Django's LocMemCache are safe to share between threads.
"""

import functools

from django.core.cache import DEFAULT_CACHE_ALIAS, caches


@functools.cache
def shared_cache():
    return caches.create_connection(DEFAULT_CACHE_ALIAS)
