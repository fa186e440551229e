"""The reporter of `roost fetch`: knows whether "complete" went out.

Its own module so that roost.target.fetch_seed and roost.target.fetch_tree
(imported by the first only for tree releases) share it without a cycle.
"""

from __future__ import annotations

from typing import Any

from roost.engine.reporter import Reporter


class FetchReporter(Reporter):
    """Notices whether "complete" went out: a session stopped by its policy while
    its final flush still ran returns complete without having said so. Adds
    `complete_fields` (what --stage did) to that event."""

    completed_reported = False
    complete_fields: dict[str, Any] | None = None

    def event(self, name: str, **fields: Any) -> None:
        if name == "complete":
            self.completed_reported = True
            fields = {**fields, **(self.complete_fields or {})}
        super().event(name, **fields)
