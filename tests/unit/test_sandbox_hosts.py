"""The sandbox root's /etc/hosts: this machine's own name without DNS (issue 18 item 10)."""
from __future__ import annotations

import socket
import stat

from hotline.sandbox import name_the_host


def _root(tmp_path, hosts: str | None = None):
    (tmp_path / "etc").mkdir()
    if hosts is not None:
        (tmp_path / "etc" / "hosts").write_text(hosts, encoding="utf-8")
    return tmp_path


def test_names_localhost_and_the_host_for_both_families(tmp_path):
    hosts = name_the_host(_root(tmp_path))
    me = socket.gethostname()
    assert hosts.read_text() == f"127.0.0.1\tlocalhost {me}\n::1\tlocalhost {me}\n"
    assert stat.S_IMODE(hosts.stat().st_mode) == 0o644


def test_is_idempotent_and_keeps_what_is_there(tmp_path):
    me = socket.gethostname()
    root = _root(tmp_path, "10.0.0.1 carrier-sbc # the trunk\n::1 localhost")
    first = name_the_host(root).read_text()
    assert first == (f"10.0.0.1 carrier-sbc # the trunk\n::1 localhost\n"
                     f"127.0.0.1\tlocalhost {me}\n::1\t{me}\n")
    assert name_the_host(root).read_text() == first
    assert not [p for p in (root / "etc").iterdir() if p.name != "hosts"]  # no temporary left


def test_leaves_a_complete_file_untouched(tmp_path):
    me = socket.gethostname()
    text = f"127.0.1.1 {me}\n127.0.0.1 localhost\n::1 localhost {me}\n"
    root = _root(tmp_path, text)
    before = (root / "etc" / "hosts").stat().st_mtime_ns
    assert name_the_host(root).read_text() == text
    assert (root / "etc" / "hosts").stat().st_mtime_ns == before
