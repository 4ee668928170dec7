"""Settings of the tutorial-style baseline (a separate, tiny Django project).

Environment:
  BASELINE_LAYER     ``core`` (channels_redis.core.RedisChannelLayer, default) or
                     ``pubsub`` (channels_redis.pubsub.RedisPubSubChannelLayer)
  BASELINE_SHORTCUT  ``1``: consumers skip Channels' per-message
                     ``aclose_old_connections()`` for streaming frames
  BASELINE_WORKERS   how many ``agent-runs-<n>`` worker channels runs are spread over
  BASELINE_PREFIX    channel-layer key prefix (keeps systems apart on one Redis)
  BASELINE_RUN_CHANNEL  worker channel base name; workers listen on ``<name>-<n>``
  REDIS_URL, DATABASE_URL
"""

import os

import dj_database_url

SECRET_KEY = "bench-baseline-not-secret"
DEBUG = False
ALLOWED_HOSTS = ["*"]
USE_TZ = True
INSTALLED_APPS = [
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "channels",
]
ROOT_URLCONF = "bench.baselines.urls"
ASGI_APPLICATION = "bench.baselines.asgi.application"
# A tutorial app has a database; Channels closes stale connections to it before
# every message a consumer handles (that is the cost the shortcut skips).
DATABASES = {
    "default": dj_database_url.parse(
        os.environ.get("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/test"),
        conn_max_age=60,
    )
}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

REDIS_URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/13")
LAYER = os.environ.get("BASELINE_LAYER", "core")
SHORTCUT = os.environ.get("BASELINE_SHORTCUT", "0") == "1"
WORKERS = int(os.environ.get("BASELINE_WORKERS", "1"))
PREFIX = os.environ.get("BASELINE_PREFIX", "bench")
# Worker channel names are not prefixed by the pub/sub layer, and pub/sub ignores
# Redis db numbers: systems sharing one Redis need distinct names.
RUN_CHANNEL = os.environ.get("BASELINE_RUN_CHANNEL", "agent-runs")

# redis-py 8 defaults to a 5 s socket read timeout, shorter than the layer's
# blocking receive; without a longer one an idle layer dies with "Timeout reading".
_host = {"address": REDIS_URL, "socket_timeout": 30}
if LAYER == "pubsub":
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_redis.pubsub.RedisPubSubChannelLayer",
            "CONFIG": {"hosts": [_host], "prefix": PREFIX},
        }
    }
else:
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_redis.core.RedisChannelLayer",
            "CONFIG": {"hosts": [_host], "prefix": PREFIX, "capacity": 10_000},
        }
    }

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["console"], "level": "WARNING"},
}
