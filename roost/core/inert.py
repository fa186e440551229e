"""Outside strings made inert for people's terminals and logs.

A torrent's name, comment and paths, a tracker's failure reason, a peer's
client name: any of them may hold escape sequences (`ESC ]0;...` retitles a
terminal, `ESC [2J` clears it), carriage returns that overwrite what came
before, or bidirectional overrides that show text reversed. `inert` returns
the text with every such character written as a visible escape (`\\x1b`,
`\\u202e`), so what is shown is what is there. It does not touch markup:
rich renders it only from `rich.text.Text` objects (never markup strings) or
with `rich.markup.escape`. Standard library only: the target side uses it.
"""

from __future__ import annotations

import unicodedata

# bidirectional embeddings, overrides and isolates: they reorder what follows
_BIDI = frozenset("\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069\u061c")


def _visible(ch: str) -> str:
    code = ord(ch)
    if code < 0x100:
        return f"\\x{code:02x}"
    if code < 0x10000:
        return f"\\u{code:04x}"
    return f"\\U{code:08x}"


def inert(value: object, *, keep_newlines: bool = False) -> str:
    """`value` as text with control, separator and bidi characters escaped.

    `keep_newlines` leaves "\n" alone, for multi-line text such as a hook's
    output or a table cell; everything else (CR included) is still escaped."""
    text = value if isinstance(value, str) else str(value)
    if text.isprintable():  # the common case, fast: no Cc/Cf/Zl/Zp/Zs-but-space...
        return text
    out = []
    for ch in text:
        if ch == "\n" and keep_newlines:
            out.append(ch)
        elif ch in _BIDI or unicodedata.category(ch) in ("Cc", "Zl", "Zp", "Cs"):
            out.append(_visible(ch))
        else:
            out.append(ch)
    return "".join(out)
