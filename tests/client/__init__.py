"""Tests of the Python client (client/) against real servers."""
