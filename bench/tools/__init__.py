"""Per-tool drivers for bench/efficiency.py (see base.py for the contract)."""

from __future__ import annotations

from bench.tools.aria2 import Aria2Tool
from bench.tools.base import RunContext, Tool
from bench.tools.http_fanout import HttpFanoutTool
from bench.tools.libtorrent_tool import LibtorrentTool
from bench.tools.roost import RoostTlsTool, RoostTool

TOOLS: dict[str, type[Tool]] = {
    "roost": RoostTool,
    "roost-tls": RoostTlsTool,
    "aria2c": Aria2Tool,
    "libtorrent": LibtorrentTool,
    "http": HttpFanoutTool,
}

__all__ = ["TOOLS", "Aria2Tool", "HttpFanoutTool", "LibtorrentTool", "RoostTlsTool", "RoostTool",
           "RunContext", "Tool"]
