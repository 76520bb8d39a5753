"""Shared test configuration.

Hypothesis runs derandomised by default so that CI is reproducible; set
``HYPOTHESIS_PROFILE=explore`` to search with fresh random examples (and more of them).
"""

from __future__ import annotations

import os

from hypothesis import settings

settings.register_profile("ci", derandomize=True, deadline=None)
settings.register_profile("explore", max_examples=500, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))
