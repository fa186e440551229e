"""What goes into a swarm member (events) and what comes out (actions).

The member (roost.core.member) never does I/O. Its adapter feeds it the bytes
each connection received and the events below, each with `now`, and carries
out the actions it returns, in order. Every record is a frozen dataclass, so
a test can compare what came out with what it expected.

Connections are named by an int the adapter chooses (`conn`); addresses are
(host, port) pairs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

Address = tuple[str, int]

# ---- events: the outside world, told to the member ----


@dataclass(frozen=True, slots=True)
class Connected:
    """A TCP (or TLS) connection is up. `dialled` is the candidate address we
    connected to (None for an incoming connection); `address` the peer's."""

    conn: int
    address: Address
    dialled: Address | None = None


@dataclass(frozen=True, slots=True)
class Closed:
    """The connection is gone: the remote hung up, a send failed (`reason`
    says why, for the log), or after our Close."""

    conn: int
    reason: str = ""


@dataclass(frozen=True, slots=True)
class ConnectFailed:
    address: Address
    error: str


@dataclass(frozen=True, slots=True)
class WriteReady:
    """The connection can take more bytes (after WantWritable)."""

    conn: int


@dataclass(frozen=True, slots=True)
class PieceChecked:
    """CheckAndWrite finished: the hash matched and the piece is on disk (ok),
    the hash did not match (not ok), or the write failed (`error`)."""

    index: int
    ok: bool
    error: str | None = None


@dataclass(frozen=True, slots=True)
class Flushed:
    """Flush finished: the payload is durable."""


@dataclass(frozen=True, slots=True)
class AnnounceAnswered:
    peers: list[Address]
    interval: float
    expected_peers: int | None = None
    complete_peers: int | None = None


@dataclass(frozen=True, slots=True)
class AnnounceFailed:
    message: str
    retry_in: float | None = None  # the tracker client's own back-off, when it has one


@dataclass(frozen=True, slots=True)
class WebData:
    """A WebFetch came back whole: `data` is exactly the bytes it asked for."""

    request: int
    data: bytes = field(repr=False)


@dataclass(frozen=True, slots=True)
class WebFailed:
    """A WebFetch failed: an HTTP `status` (when the server answered with one),
    a short body, a timeout or a connection error (`reason`, for the log)."""

    request: int
    reason: str
    status: int | None = None


@dataclass(frozen=True, slots=True)
class HeldLocally:
    """Pieces that are now on disk by local means (their files placed from a kept
    release, each proven): held, announced and served like pieces that passed."""

    indices: tuple[int, ...]


Event = (
    Connected
    | Closed
    | ConnectFailed
    | WriteReady
    | PieceChecked
    | Flushed
    | AnnounceAnswered
    | AnnounceFailed
    | WebData
    | WebFailed
    | HeldLocally
)

# ---- actions: what the member asks its adapter to do ----


@dataclass(frozen=True, slots=True)
class Send:
    conn: int
    data: bytes


@dataclass(frozen=True, slots=True)
class SendBlock:
    """A Piece message: `header`, then `length` bytes of the payload read from
    storage at (index, begin) (sendfile when the adapter can)."""

    conn: int
    header: bytes
    index: int
    begin: int
    length: int


@dataclass(frozen=True, slots=True)
class WantWritable:
    """Feed WriteReady(conn) once the connection's send buffer has room."""

    conn: int


@dataclass(frozen=True, slots=True)
class Close:
    conn: int
    reason: str
    ban: bool = False


@dataclass(frozen=True, slots=True)
class CheckAndWrite:
    """Hash `data` against piece `index` and, when it matches, write it; then
    feed PieceChecked. The member keeps `data` unchanged until then."""

    index: int
    data: bytearray = field(repr=False)


@dataclass(frozen=True, slots=True)
class Flush:
    """Make the payload durable, then feed Flushed."""


@dataclass(frozen=True, slots=True)
class Connect:
    address: Address


@dataclass(frozen=True, slots=True)
class Announce:
    """Announce to the tracker; feed AnnounceAnswered or AnnounceFailed."""

    event: str | None
    uploaded: int
    downloaded: int
    left: int


@dataclass(frozen=True, slots=True)
class Report:
    """An event line for the operator (roost.engine.reporter)."""

    name: str
    fields: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Progress:
    done: int
    total: int
    down_rate: float
    up_rate: float
    peers: int
    state: str


@dataclass(frozen=True, slots=True)
class PauseReading:
    """The download rate cap is spent: stop reading every connection until ResumeReading."""


@dataclass(frozen=True, slots=True)
class ResumeReading:
    pass


@dataclass(frozen=True, slots=True)
class PieceUploaded:
    """A whole piece went to one peer (for the optional upload log)."""

    peer: str
    index: int
    now: float


@dataclass(frozen=True, slots=True)
class Stop:
    """Leave the swarm. `error` is set when the stop is a failure."""

    reason: str
    error: str | None = None


@dataclass(frozen=True, slots=True)
class WebPart:
    """One HTTP range of a WebFetch: `length` bytes at `offset` of the file at
    `url`; `url` None for a BEP 47 pad file, which is zeros and never asked for."""

    url: str | None
    offset: int
    length: int


@dataclass(frozen=True, slots=True)
class WebFetch:
    """Fetch bytes [begin, begin + length) of piece `index` from web seed
    `seed` (BEP 19) as `parts`, in order; feed WebData or WebFailed."""

    request: int
    seed: int
    index: int
    begin: int
    length: int
    parts: tuple[WebPart, ...]


@dataclass(frozen=True, slots=True)
class DropWebSeed:
    """Stop every fetch from this web seed and close its connections."""

    seed: int


Action = (
    Send
    | SendBlock
    | WantWritable
    | Close
    | CheckAndWrite
    | Flush
    | Connect
    | Announce
    | Report
    | Progress
    | PauseReading
    | ResumeReading
    | PieceUploaded
    | Stop
    | WebFetch
    | DropWebSeed
)
