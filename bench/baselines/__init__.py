"""Baselines the benchmark compares Parley against.

* ``asgi`` + ``consumers`` + ``worker``: the tutorial-style Channels design (one
  ``group_send`` per token, a worker task per run), configured by environment
  variables for the channels-redis core layer, the pub/sub layer, and the pub/sub
  layer with the dispatch shortcut (see ``settings``).
* ``ceiling``: a bare ASGI app under daphne that generates and pushes the same
  frames with no channel layer, database or worker: the most one daphne can do.
"""
