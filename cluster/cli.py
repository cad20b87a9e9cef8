"""`hotline cluster up|down|status`: the whole HA set on this machine (docs/deployment.md).

Kamailio in front, two (or more) sandboxed Asterisk nodes, two (or more)
service instances, one PostgreSQL. For development and the HA tests; the
production layout puts each on its own host. Exit codes: 0 done (status: all
parts running), 1 failed, 2 bad input, 3 (status) something is not running.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from hotline.config import HotlineConfig


def _var_dir(args, config: "HotlineConfig") -> Path:
    return Path(args.var_dir) if args.var_dir else config.var_dir / "clusters" / args.name


def cmd_up(args, config: "HotlineConfig") -> int:
    from cluster.local import ClusterError, ClusterLayout, up

    if os.geteuid() != 0:
        print("hotline cluster: this needs root (debootstrap, chroot and mount namespaces)", file=sys.stderr)
        return 1
    url = args.database_url or os.environ.get("HOTLINE_DATABASE_URL", "")
    try:
        layout = ClusterLayout(args.name, _var_dir(args, config).resolve(), url,
                               base_port=args.port_base, node_count=args.nodes,
                               service_count=args.services, menu_file=config.menu_file,
                               asterisk_root=config.asterisk_root)
    except ValueError as exc:
        print(f"hotline cluster: {exc}", file=sys.stderr)
        return 2
    from cluster.kamailio import FrontDoorError
    from hotline.instance import InstanceError
    from hotline.sandbox import SandboxError

    try:
        up(layout, seed=not args.no_demo)
    except (FrontDoorError, InstanceError, SandboxError, ClusterError) as exc:
        print(f"hotline cluster: {exc}\n(`hotline cluster down --name {layout.name}` stops what did start)",
              file=sys.stderr)
        return 1
    config0 = layout.config(layout.nodes[0])
    print(f"""
The cluster {layout.name!r} is up. Calls enter through the front door (Kamailio):

  sip:96608@127.0.0.1:{layout.front_door_port}   auth user 'caller', password in {config0.instance_dir / 'sip.secret'}

  hotline cluster status --name {layout.name}     # nodes, services, who runs the scheduler
  hotline cluster down --name {layout.name}

Logs: {layout.var_dir / 'asterisk'}/<node or service>/log, {layout.front_door_dir}""")
    return 0


def cmd_down(args, config: "HotlineConfig") -> int:
    from cluster.local import ClusterError, down, load_layout

    try:
        layout = load_layout(_var_dir(args, config))
    except ClusterError as exc:
        print(f"hotline cluster: {exc}", file=sys.stderr)
        return 1
    down(layout)
    return 0


def cmd_status(args, config: "HotlineConfig") -> int:
    from cluster.local import ClusterError, load_layout, status

    try:
        layout = load_layout(_var_dir(args, config))
    except ClusterError as exc:
        print(f"hotline cluster: {exc}", file=sys.stderr)
        return 1
    report = status(layout)
    if args.json:
        print(json.dumps(report, indent=1, ensure_ascii=False))
    else:
        front = report["front_door"]
        print(f"cluster:     {layout.name} ({layout.var_dir})")
        print(f"front door:  127.0.0.1:{front['port']} "
              f"{'running, pid %s' % front['pid'] if front.get('pid') else front.get('error', 'stopped')}")
        for node, entry in report["nodes"].items():
            ast = f"running, pid {entry['pid']}, channels {entry.get('channels')}" if entry["pid"] else "stopped"
            print(f"{node:12} Asterisk {ast}; front door: {entry['front_door']}")
        for service, entry in report["services"].items():
            print(f"{service:12} service {'running, pid %s' % entry['pid'] if entry['pid'] else 'stopped'}")
        print(f"scheduler:   {report['scheduler'] or 'nobody (no instance holds the lock)'}")
    running = (all(e["pid"] for e in report["nodes"].values())
               and all(e["pid"] for e in report["services"].values())
               and report["front_door"].get("pid"))
    return 0 if running else 3


def register(sub: argparse._SubParsersAction) -> None:
    """Add `cluster up|down|status` to the `hotline` parser's verbs."""
    cluster = sub.add_parser(
        "cluster", help="the high-availability set on this machine: Kamailio, Asterisk nodes, "
                        "service instances / 本机高可用集群",
        description="Start, stop or inspect a local cluster: Kamailio as the SIP front door, "
                    "N sandboxed Asterisk nodes, M service instances on one PostgreSQL, one "
                    "of which runs the scheduled jobs. See docs/deployment.md.")
    verbs = cluster.add_subparsers(dest="cluster_verb", required=True, metavar="ACTION")
    for name, func, text in (("up", cmd_up, "prepare and start every part / 启动"),
                             ("down", cmd_down, "stop every part / 停止"),
                             ("status", cmd_status, "what runs, and who runs the scheduler / 状态")):
        p = verbs.add_parser(name, help=text)
        p.add_argument("--name", default="ha", help="the cluster's name (default ha)")
        p.add_argument("--var-dir", help="where its files live (default var/clusters/NAME)")
        p.set_defaults(func=func)
        if name == "up":
            p.add_argument("--database-url", help="PostgreSQL URL (default $HOTLINE_DATABASE_URL); "
                                                  "a cluster cannot run on SQLite")
            p.add_argument("--port-base", type=int, default=16000,
                           help="first port; the front door listens here (default 16000)")
            p.add_argument("--nodes", type=int, default=2, help="Asterisk nodes (default 2)")
            p.add_argument("--services", type=int, default=2, help="service instances (default 2)")
            p.add_argument("--no-demo", action="store_true", help="do not load the demo network")
        if name == "status":
            p.add_argument("--json", action="store_true", help="print the report as JSON")
