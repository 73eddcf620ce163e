"""Where the would-be refusals of shadow limits are reported as they happen.

The domain knows no metrics: the process that runs the engine points ``report`` at its
counter (gateway/runtime.py: iou_shadow_refusals_total{limit}); by default nothing is done.
"""

from __future__ import annotations

from collections.abc import Callable


def _ignore(limit: str) -> None:
    del limit


class ShadowSeen:
    """One per engine, shared by charges and holds."""

    def __init__(self) -> None:
        self.report: Callable[[str], None] = _ignore
