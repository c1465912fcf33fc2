"""Run at start-up by every Python the tests launch: see network_guard.py."""

import network_guard

network_guard.install()
