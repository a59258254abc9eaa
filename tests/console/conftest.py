from __future__ import annotations

from tests.experiments.conftest import make_experiment  # noqa: F401  (a started experiment)
