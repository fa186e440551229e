"""What runs on a target host: releases, host operations, the agent's commands.

Standard library only; shipped to bare hosts in the zipapp.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable

#: what a target-side command's add_* function returns: run the parsed arguments, give the exit code
Runner = Callable[[argparse.Namespace], int]

#: how `roost fetch --tree-manifest` places files reused from kept releases; here, not in
#: roost.target.treestage, so that the fetch parser does not import the staging code
REUSE_MODES = ("copy", "hardlink", "none")
