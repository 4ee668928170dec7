"""What daphne and the agent worker do before serving (config/process.py)."""

import gc
import sys

import config.asgi
from agents.providers import PROVIDER_MODULES
from config.process import prepare_server_process


def test_a_server_process_loads_what_it_needs_and_freezes_it(settings):
    settings.PARLEY_GC_FREEZE = True
    settings.PARLEY_GC_THRESHOLD = 12_345
    threshold_before = gc.get_threshold()
    try:
        prepare_server_process(runs_agents=True)

        assert gc.get_threshold() == (12_345, *threshold_before[1:])
        assert all(module in sys.modules for module in PROVIDER_MODULES.values())
        assert "config.urls" in sys.modules  # the views, imported before the freeze
        # Frozen objects are left out of every collection.
        assert gc.get_freeze_count() > 0
        assert config.asgi.application not in gc.get_objects()
    finally:
        gc.set_threshold(*threshold_before)
