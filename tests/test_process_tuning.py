"""The process-wide settings that daphne and runworker get from config/asgi.py."""

import gc

import config.asgi


def test_start_up_objects_are_frozen_out_of_garbage_collection(settings):
    settings.PARLEY_GC_FREEZE = True
    settings.PARLEY_GC_THRESHOLD = 12_345
    frozen_before = gc.get_freeze_count()
    threshold_before = gc.get_threshold()
    try:
        config.asgi.tune_garbage_collector()
        assert gc.get_threshold()[0] == 12_345
        assert gc.get_threshold()[1:] == threshold_before[1:]
        assert gc.get_freeze_count() >= max(frozen_before, 1)
        # Frozen objects are not collected; new ones are.
        assert config.asgi.application not in gc.get_objects()
    finally:
        gc.set_threshold(*threshold_before)
