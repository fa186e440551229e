"""Pure parts of the lab and benchmark: no root, no network."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from bench.efficiency import Config, build_matrix, make_payload, parse_size
from bench.lab import host_ip, shaping
from bench.lab.core import host_mac, neighbor_batch
from bench.tools.metainfo import info_hash
from bench.tools.runner import ToolResult, loop_lags, lower_bound_s

MiB = 1 << 20


def test_htb_batch_has_one_class_and_filter_per_peer() -> None:
    peers = ["10.77.0.2", "10.77.0.3", "10.77.0.4"]
    text = shaping.htb_batch("eth0", 100, peers, "dst")
    assert "root handle 1: htb default 2" in text
    assert text.count("class add") == 1 + 1 + len(peers)  # parent, default, one per peer
    assert text.count("pfifo") == 1 + len(peers)
    for ip in peers:
        assert f"match ip dst {ip}/32" in text
    # each peer class is guaranteed R/(P+1) and may borrow up to R
    assert "rate 25000kbit ceil 100000kbit" in text
    src = shaping.htb_batch("p1", 100, peers, "src")
    assert "match ip src 10.77.0.2/32" in src and "match ip dst" not in src


def test_shaping_rejects_bad_input() -> None:
    with pytest.raises(ValueError):
        shaping.htb_batch("eth0", 10, ["10.77.0.2"], "both")
    with pytest.raises(ValueError):
        shaping.shaping_batch("netem", "eth0", 10, [], "dst")
    with pytest.raises(ValueError):
        shaping.loss_ruleset(0)


def test_loss_ruleset_threshold_in_hundredths_of_percent() -> None:
    text = shaping.loss_ruleset(2)
    assert "numgen random mod 10000 < 200" in text and "drop" in text


def test_host_ips_are_private_and_unique() -> None:
    ips = [host_ip(i) for i in range(600)]
    assert len(set(ips)) == 600
    assert all(ip.startswith("10.77.") and not ip.endswith(".0") for ip in ips)


def test_lower_bound_equal_links_is_s_over_r() -> None:
    s = 64 * MiB
    t = lower_bound_s(s, 100, [100.0] * 16, [100.0] * 16)
    assert t == pytest.approx(s * 8 / 100e6)


def test_lower_bound_slow_receivers_dominate() -> None:
    s = 64 * MiB
    t = lower_bound_s(s, 100, [100.0] * 12 + [10.0] * 4, [100.0] * 12 + [10.0] * 4)
    assert t == pytest.approx(s * 8 / 10e6)


def test_lower_bound_aggregate_upload_term() -> None:
    # the origin alone can serve 1 unit, receivers upload nothing: N*S/u0
    assert lower_bound_s(1000, 8e-6, [0.0, 0.0], [1.0, 1.0]) == pytest.approx(2000)


def test_metrics_median_p99_efficiency() -> None:
    r = ToolResult("x", "ok", times={f"h{i}": float(i) for i in range(1, 11)})
    m = r.metrics(t_min=5.0, n=10)
    assert m["first"] == 1 and m["t_all"] == 10 and m["median"] == 5.5 and m["p99"] == 10
    assert m["efficiency"] == pytest.approx(0.5)
    assert ToolResult("x", "ok", times={"h1": 1.0}).metrics(1.0, 2)["efficiency"] is None
    assert ToolResult("x", "failed").metrics(1.0, 1)["t_all"] is None


def test_parse_size() -> None:
    assert parse_size("64MiB") == 64 * MiB
    assert parse_size("256k") == 256 * 1024
    assert parse_size("1234") == 1234


def test_payload_is_deterministic(tmp_path) -> None:  # type: ignore[no-untyped-def]
    a, b = tmp_path / "a", tmp_path / "b"
    sha_a = make_payload(a, 5 * MiB + 3)
    assert make_payload(b, 5 * MiB + 3) == sha_a
    assert hashlib.sha256(a.read_bytes()).hexdigest() == sha_a
    assert a.stat().st_size == 5 * MiB + 3


def test_info_hash_of_handmade_metainfo() -> None:
    info = b"d6:lengthi5e4:name1:a12:piece lengthi16384e6:pieces20:" + b"x" * 20 + b"e"
    meta = b"d8:announce3:foo4:info" + info + b"e"
    assert info_hash(meta) == hashlib.sha1(info).digest()
    with pytest.raises(ValueError):
        info_hash(b"d3:fooi1ee")


def test_matrix_shape() -> None:
    plan = build_matrix([100.0, 40.0], ["roost", "aria2c", "libtorrent", "http"])
    equal = [c for c, _ in plan if c.scenario == "equal"]
    assert {(c.n, c.size // MiB, c.rate_mbit) for c in equal} == {
        (n, s, r) for n in (8, 16, 32) for s in (64, 256) for r in (100.0, 40.0)}
    for cfg, tools in plan:
        assert ("http" in tools) == (cfg.scenario == "equal" and cfg.size == 64 * MiB)
    scen = {c.scenario: c for c, _ in plan}
    assert scen["loss"].loss_pct == 2.0
    assert scen["hetero"].slow_hosts() == {i: 10.0 for i in (13, 14, 15, 16)}
    assert scen["loss"].rate_mbit == 40.0


def test_config_hetero_quarter_of_receivers() -> None:
    assert Config("hetero", 8, MiB, 100).slow_hosts() == {7: 10.0, 8: 10.0}
    assert Config("equal", 8, MiB, 100).slow_hosts() == {}


def test_static_neighbours_cover_every_other_host() -> None:
    hosts = [(host_ip(i), host_mac(i)) for i in range(300)]
    assert len({mac for _, mac in hosts}) == 300
    assert all(int(mac.split(":")[0], 16) & 0b10 for _, mac in hosts)  # locally administered
    text = neighbor_batch(hosts, host_ip(7))
    lines = text.splitlines()
    assert len(lines) == 299 and not any(f" {host_ip(7)} " in line for line in lines)
    assert lines[0] == f"neigh replace {host_ip(0)} lladdr {host_mac(0)} dev eth0 nud permanent"


def test_loop_lags_per_process_from_roost_events(tmp_path: Path) -> None:
    (tmp_path / "h0-seeder.log").write_text(
        '{"event":"progress","t":0.5}\n{"event":"loop_lag","max_s":0.31,"stalls":0}\n')
    (tmp_path / "h1-receiver.log").write_text(
        'not json "loop_\n{"event":"loop_stall","lag_s":2.5,"loop_cpu_s":0.1}\n'
        '{"event":"loop_stall","lag_s":1.2,"loop_cpu_s":1.1}\n')
    (tmp_path / "h2-receiver.log").write_text("aria2c says nothing of its loop\n")
    assert loop_lags(tmp_path) == ({"h0-seeder": 0.31, "h1-receiver": 2.5}, 2)


def test_cpu_by_command_labels_programs_and_python_modules() -> None:
    import subprocess
    import sys

    from bench.tools.runner import cpu_by_command

    procs = [subprocess.Popen(["sleep", "5"]),
             subprocess.Popen([sys.executable, "-m", "timeit", "-n", "1", "-r", "1",
                               "import time; time.sleep(5)"])]
    try:
        import time
        time.sleep(0.5)  # let the interpreter exec and start
        got = cpu_by_command([p.pid for p in procs] + [2**22 + 7])  # and one that is gone
        assert set(got) == {"sleep", "timeit"}
        assert all(v >= 0 for v in got.values())
    finally:
        for p in procs:
            p.kill()
            p.wait()


def test_the_verification_cpu_comes_from_the_completion_records(tmp_path: Path) -> None:
    import json
    from types import SimpleNamespace

    from bench.tools.runner import _verify_cpu_s

    done = tmp_path / "done"
    done.mkdir()
    hosts = [SimpleNamespace(name=f"h{i}") for i in (1, 2, 3)]
    (done / "h1.json").write_text(json.dumps({"verify_cpu_s": 0.25}))
    (done / "h2.json").write_text(json.dumps({"verify_cpu_s": 0.5}))
    ctx = SimpleNamespace(lab=SimpleNamespace(receivers=hosts),
                          done_file=lambda h: done / f"{h.name}.json")
    assert _verify_cpu_s(ctx) == 0.75  # type: ignore[arg-type]


def test_a_completion_record_carries_its_hashing_cpu(tmp_path: Path) -> None:
    import json
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench" / "tools"))
    try:
        from verify_done import verify_and_record
    finally:
        sys.path.pop(0)
    payload = tmp_path / "p"
    payload.write_bytes(b"x" * (4 * MiB))
    out = tmp_path / "rec.json"
    assert verify_and_record(str(payload), hashlib.sha256(payload.read_bytes()).hexdigest(),
                             str(out), "h1", 0.0)
    rec = json.loads(out.read_text())
    assert 0 < rec["verify_cpu_s"] < 5
