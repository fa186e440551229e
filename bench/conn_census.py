"""Who holds how many peers, and why connections were refused (issue 18).

Runs one simulated deploy (roost.sim, the same scenario as bench.sim) with
the peer table's handshake verdicts recorded, and prints, per host: ready
connections at a few instants, refusals by reason and direction (was the
refused connection ours, dialled, or incoming), and when it finished.

    PYTHONPATH=$PWD python3 -m bench.conn_census --n 64 --seed 1
"""

from __future__ import annotations

from collections import Counter, defaultdict

from bench import sim
from roost.core.conn import Conn
from roost.core.peers import PeerTable
from roost.sim.world import World


def main() -> None:
    p = sim.parser()  # bench.sim's options (one N), plus the instants to sample
    p.add_argument("--at", default="0.5,1,2,4,6,8,10")
    args = p.parse_args()
    args.lean = True
    sc = sim.scenario_for(args, args.n[0])
    world = World(sc)
    owner: dict[int, int] = {}  # id(PeerTable) -> host index
    verdicts: dict[int, Counter[str]] = defaultdict(Counter)
    first_refusal: dict[int, float] = {}
    original = PeerTable.handshaken

    def handshaken(self: PeerTable, conn: Conn, now: float) -> tuple[str | None, list]:  # type: ignore[type-arg]
        refused, closing = original(self, conn, now)
        me = owner.get(id(self))
        if me is None:
            for h in world.hosts:
                if h.member is not None and h.member.peers is self:
                    me = owner[id(self)] = h.spec.index
        assert me is not None
        way = "out" if conn.outgoing else "in"
        verdicts[me][f"{way}:{refused or 'admitted'}"] += 1
        for _, why in closing:
            verdicts[me][f"closed:{why or 'pending'}"] += 1
        if refused is not None:
            first_refusal.setdefault(me, now)
        return refused, closing

    PeerTable.handshaken = handshaken  # type: ignore[method-assign]
    instants = [float(x) for x in args.at.split(",")]
    ready_at: dict[int, list[int]] = defaultdict(list)
    todo = list(instants)

    def check(w: World) -> bool:
        while todo and w.now >= todo[0]:
            todo.pop(0)
            for h in w.hosts:
                m = h.member
                conns = [] if m is None else list(m.peers.conns.values())
                n = sum(1 for c in conns if c.ready and not c.closed)
                ready_at[h.spec.index].append(n)
        return False

    result = world.run(check, every=50)
    print(f"instants {instants}")
    for h in world.hosts:
        i = h.spec.index
        done = result.times.get(i)
        refused = {} if h.member is None else dict(h.member.peers.admission.refused)
        print(
            f"host {i:3d} done {done if done is None else round(done, 2)!s:>6} "
            f"ready {ready_at[i]} refusals {refused} "
            f"first refusal {first_refusal.get(i)} verdicts {dict(verdicts[i])}"
        )


if __name__ == "__main__":
    main()
