"""An ~/.ssh/config alias resolves to its HostName (for the tracker's bind address)."""

from __future__ import annotations

from pathlib import Path

from roost.deploy.config import DeployConfig, load_config, resolve_hosts
from roost.deploy.transport import ssh_hostname


def test_alias_resolves_through_the_configured_file(tmp_path: Path) -> None:
    path = tmp_path / "ssh_config"
    path.write_text("Host app-behind\n  HostName 10.1.2.3\n  ProxyJump bastion\n"
                    "Host web-*\n  HostName %h.internal.example\n")
    config = DeployConfig(ssh_config=str(path))
    assert ssh_hostname("app-behind", config) == "10.1.2.3"
    assert ssh_hostname("web-1", config) == "web-1.internal.example"
    assert ssh_hostname("10.9.9.9", config) == "10.9.9.9"  # no alias: itself
    assert ssh_hostname("app-behind", DeployConfig(ssh_config=str(tmp_path / "none"))) == (
        "app-behind")


def test_no_port_given_leaves_it_to_ssh_config(tmp_path: Path) -> None:
    hosts = resolve_hosts(load_config(None, {"hosts": ["app-behind", "b:2222"]}))
    assert [(h.address, h.port) for h in hosts] == [("app-behind", None), ("b", 2222)]
    hosts = resolve_hosts(load_config(None, {"hosts": ["a"], "ssh_port": 2200}))
    assert hosts[0].port == 2200


def test_a_ciphers_line_in_the_ssh_config_wins_over_roosts_preference(tmp_path: Path) -> None:
    """AES-GCM is roost's choice only where the operator made none (as asyncssh itself
    resolves the options it would connect with)."""
    import asyncio

    from roost.deploy.config import HostSpec
    from roost.deploy.sshlib import asyncssh
    from roost.deploy.transport import ssh_options

    path = tmp_path / "ssh_config"
    path.write_text("Host web-*\n  Ciphers chacha20-poly1305@openssh.com\n")
    config = DeployConfig(ssh_config=str(path))

    async def ciphers(host: str) -> list[bytes]:
        options = ssh_options(HostSpec(name=host, address=host), config)
        options.pop("known_hosts", None)
        resolved = asyncssh.SSHClientConnectionOptions(host=host, known_hosts=None, **options)
        return list(resolved.encryption_algs)

    assert asyncio.run(ciphers("web-1")) == [b"chacha20-poly1305@openssh.com"]
    assert asyncio.run(ciphers("db-1"))[0] == b"aes128-gcm@openssh.com"


def test_a_rewritten_ssh_config_is_read_again(tmp_path: Path) -> None:
    """The lookups are cached, but by the file's identity and modification time:
    a long-running caller sees the operator's edit."""
    import os

    path = tmp_path / "ssh_config"
    path.write_text("Host app\n  HostName 10.1.2.3\n")
    config = DeployConfig(ssh_config=str(path))
    assert ssh_hostname("app", config) == "10.1.2.3"
    assert ssh_hostname("app", config) == "10.1.2.3"  # from the cache
    path.write_text("Host app\n  HostName 10.9.8.7\n")
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
    assert ssh_hostname("app", config) == "10.9.8.7"
    path.unlink()
    assert ssh_hostname("app", config) == "app"
