"""A cluster's configuration: the local layout (cluster/local.py) and the config keys it writes.

Pure: files are written to tmp_path and read back with load_config; nothing starts.
"""
from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

import pytest

from cluster.local import ClusterLayout, load_layout, save_layout
from dialplans.render import agi_ask_order
from hotline.config import AsteriskNode, load_config
from hotline.service import close_vanished_calls

PG = "postgresql+psycopg://postgres@127.0.0.1/hotline_ha"


def layout(tmp_path: Path, **kw) -> ClusterLayout:
    return ClusterLayout("ha", tmp_path, PG, base_port=26000, **kw)


def test_each_node_and_service_gets_ports_of_its_own_and_one_shared_surgeon_trunk(tmp_path):
    ha = layout(tmp_path, node_count=3, service_count=2)
    nodes = [ha.node_ports(i) for i in range(3)]
    taken = [p.sip for p in nodes] + [p.ami for p in nodes] + [ha.agi_port(1), ha.agi_port(2),
                                                               ha.front_door_port]
    assert len(set(taken)) == len(taken)
    rtp = [range(p.rtp_start, p.rtp_end + 1) for p in nodes]
    assert all(set(a).isdisjoint(b) for i, a in enumerate(rtp) for b in rtp[i + 1:])
    assert {p.surgeon_phones for p in nodes} == {ha.surgeon_phones_port}
    assert ha.nodes == ("node-a", "node-b", "node-c") and ha.services == ("svc-1", "svc-2")


def test_written_configs_read_back_as_the_processes_will_read_them(tmp_path):
    ha = layout(tmp_path, reconcile_every_s=7)
    ha.write_configs()
    node_b = ha.config("node-b")
    assert (node_b.node_name, node_b.agi_first) == ("node-b", 2)  # node b asks instance 2 first
    assert node_b.agi_targets == ("127.0.0.1:26041", "127.0.0.1:26042")
    assert agi_ask_order(node_b.agi_targets, node_b.agi_first) == [(2, "127.0.0.1:26042"),
                                                                   (1, "127.0.0.1:26041")]
    svc2 = ha.config("svc-2")
    assert (svc2.service_slot, svc2.ports.agi, svc2.cluster_name, svc2.election_name) == (2, 26042, "ha", "ha")
    assert [n.name for n in svc2.nodes()] == ["node-a", "node-b"]
    assert svc2.nodes()[1] == AsteriskNode("node-b", "127.0.0.1", 26021,
                                           str(tmp_path / "asterisk/node-b/ami.secret"),
                                           str(tmp_path / "asterisk/node-b/log"))
    # One recordings dir, one key ring, one database for all; the service's reconcile interval.
    every = [ha.config(i) for i in (*ha.nodes, *ha.services)]
    assert {c.recordings_dir for c in every} == {tmp_path / "recordings" / "ha"}
    assert {c.data_key_path for c in every} == {tmp_path / "cluster" / "data.key"}
    assert {c.db_url for c in every} == {PG} and svc2.reconcile_every_s == 7


def test_the_layout_is_kept_for_down_and_status(tmp_path):
    ha = layout(tmp_path, node_count=3)
    save_layout(ha)
    assert load_layout(tmp_path) == ha


def test_a_cluster_refuses_sqlite_and_sizes_it_cannot_hold(tmp_path):
    with pytest.raises(ValueError, match="PostgreSQL"):
        ClusterLayout("ha", tmp_path, f"sqlite:///{tmp_path}/x.db")
    for kw in ({"node_count": 0}, {"service_count": 10}, {"base_port": 80}):
        with pytest.raises(ValueError):
            ClusterLayout("ha", tmp_path, PG, **kw)


@pytest.mark.parametrize("bad", [
    [{"name": "Node_A", "host": "127.0.0.1", "ami_port": 5038, "secret_file": "/s"}],
    [{"name": "node-a", "host": "ast.example.org", "ami_port": 5038, "secret_file": "/s"}],
    [{"name": "node-a", "host": "127.0.0.1", "ami_port": 0, "secret_file": "/s"}],
    [{"name": "node-a", "host": "127.0.0.1", "ami_port": 5038}],
    [{"name": "node-a", "host": "127.0.0.1", "ami_port": 5038, "secret_file": "/s", "secret": "x"}],
    [{"name": "node-a", "host": "127.0.0.1", "ami_port": 5038, "secret_file": "/s"}] * 2,
])
def test_asterisk_nodes_are_checked_when_read(bad):
    with pytest.raises(ValueError):
        load_config(env={}, asterisk_nodes=bad)


@pytest.mark.parametrize(("key", "value"), [
    ("HOTLINE_SERVICE_SLOT", "0"), ("HOTLINE_SERVICE_SLOT", "10"),
    ("HOTLINE_AGI_TARGETS", "127.0.0.1:4573,localhost:4574"), ("HOTLINE_AGI_TARGETS", "127.0.0.1"),
    ("HOTLINE_NODE_NAME", "node a"), ("HOTLINE_RECONCILE_EVERY_S", "0"),
])
def test_cluster_settings_from_the_environment_are_checked(key, value):
    with pytest.raises(ValueError):
        load_config(env={key: value})


def test_a_single_instance_serves_its_own_asterisk_on_slot_one():
    config = load_config(env={"HOTLINE_INSTANCE": "demo"})
    (node,) = config.nodes()
    assert (node.name, node.ami_port, node.own, config.service_slot, config.agi_targets) == (
        "demo", 5038, True, 1, ())
    assert config.election_name == "demo"


class Desk:
    """The two things close_vanished_calls uses of a CallDesk."""

    def __init__(self, linkedids):
        self.calls = dict.fromkeys(linkedids)
        self.closed: list[str] = []

    def hung_up(self, linkedid, at):
        self.closed.append(linkedid)
        self.calls.pop(linkedid)


def test_another_nodes_secret_is_read_never_made(tmp_path):
    node = AsteriskNode("node-a", "127.0.0.1", 5038, str(tmp_path / "missing.secret"))
    with pytest.raises(ValueError, match="missing"):
        node.ami_secret()
    assert not (tmp_path / "missing.secret").exists()
    (tmp_path / "missing.secret").write_text("s3cret\n")
    assert node.ami_secret() == "s3cret"


def test_a_node_judges_only_its_own_calls_after_a_reconnect():
    desk = Desk(["node-a-1.1", "node-a-1.2", "node-b-1.1"])
    channels = [{"Linkedid": "node-a-1.2", "Uniqueid": "node-a-1.3"}]  # node a still has 1.2
    at = datetime(2026, 12, 1, tzinfo=timezone.utc)
    gone = close_vanished_calls(desk, channels, at, owns=lambda linkedid: linkedid.startswith("node-a-"))
    assert gone == ["node-a-1.1"] and "node-b-1.1" in desk.calls
