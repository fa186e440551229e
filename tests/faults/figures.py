"""Figures a fault test measured: printed, and appended as JSON lines to
$ROOST_FAULT_FIGURES when it is set (docs/reliability.md quotes them)."""

from __future__ import annotations

import json
import os
import time
from typing import Any


def record(test: str, **figures: Any) -> None:
    line = json.dumps(
        {"test": test, "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), **figures},
        sort_keys=True,
    )
    print(f"FIGURES {line}")
    path = os.environ.get("ROOST_FAULT_FIGURES")
    if path:
        with open(path, "a") as f:
            f.write(line + "\n")
