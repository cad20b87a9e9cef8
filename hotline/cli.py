"""`hotline`: run, inspect and exercise the 96608 hotline from the command line."""
from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
import tempfile
import threading
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

from hotline import (cli_callbacks, cli_incident, cli_network, cli_privacy, cli_roster, cli_tokens,
                     cli_users)
from hotline.config import HotlineConfig, load_config
from hotline.notifiers import cli as cli_notify


def _config(args: argparse.Namespace) -> HotlineConfig:
    overrides = {}
    if args.instance:
        overrides["instance"] = args.instance
    return load_config(Path(args.config) if args.config else None, **overrides)


def _need_root() -> None:
    if os.geteuid() != 0:
        raise SystemExit("hotline: this needs root (debootstrap, chroot and mount namespaces).")


# -- verbs --------------------------------------------------------------------
def cmd_up(args, config: HotlineConfig) -> int:
    from hotline import instance

    _need_root()
    print(f"preparing instance {config.instance!r} in {config.var_dir}")
    instance.prepare(config)
    if not args.no_demo:
        instance.seed(config)
        print("demo network loaded: teams, surgeons, shifts, partner hospitals")
    instance.start_asterisk(config)
    print(f"Asterisk running (SIP 127.0.0.1:{config.ports.sip}, AMI 127.0.0.1:{config.ports.ami})")
    from hotline import fail2ban

    if fail2ban.start(config):
        print(f"fail2ban running: an address guessing AMI secrets is banned "
              f"(log {config.instance_dir / 'log' / 'fail2ban.log'})")
    else:
        print("fail2ban is not installed (scripts/setup.sh installs it): AMI logins are not banned")
    pid = instance.start_service(config)
    print(f"hotline service running (pid {pid}, FastAGI {config.agi_host}:{config.ports.agi})")
    from hotline import console_instance

    admin, _ = console_instance.ensure_demo_admin(config)
    console_instance.start_console(config)
    hl = _self_command()
    print(f"""
The 96608 hotline is up. Place a call through the real Asterisk:

  {hl} call --from 043188888888              # a partner hospital: straight to referral
  {hl} call --from 13912345678 --press 2     # a member of the public: replantation
  {hl} call --from 13912345678 --press 1 --surgeons ignore,accept   # primary misses, backup accepts

Or use any SIP phone: sip:96608@127.0.0.1:{config.ports.sip}, user = your number,
auth user 'caller', password in {config.instance_dir / 'sip.secret'}.

  {hl} cases            # the case records
  {hl} roster now       # who is on call, per team
  {hl} down             # stop Asterisk, the service and the console

The console: http://127.0.0.1:{config.ports.console}/  (user {admin}, password in
{config.instance_dir / 'console-admin.password'})
Logs: {config.instance_dir / 'log'}""")
    return 0


def cmd_down(args, config: HotlineConfig) -> int:
    from hotline import instance

    from hotline import console_instance

    from hotline import fail2ban

    console_instance.stop_console(config)
    service = instance.stop_service(config)
    asterisk = instance.stop_asterisk(config)
    fail2ban.stop(config)
    print(f"service {'stopped' if service else 'was not running'}; "
          f"Asterisk {'stopped' if asterisk else 'was not running'}")
    return 0


def cmd_status(args, config: HotlineConfig) -> int:
    from hotline import instance, sandbox

    ast = sandbox.running_asterisk(config.asterisk_root, config.instance_dir)
    pid = instance.service_pid(config)
    print(f"instance:  {config.instance} ({config.var_dir})")
    print(f"database:  {_redact(config.db_url)}")
    print(f"asterisk:  {'running, pid %d' % ast.pid if ast else 'stopped'}")
    print(f"service:   {'running, pid %d' % pid if pid else 'stopped'}")
    from hotline import console_instance

    console = console_instance.console_pid(config)
    print(f"console:   {'running, pid %d, http://127.0.0.1:%d/' % (console, config.ports.console) if console else 'stopped'}")
    if ast:
        print(f"channels:  {instance.channel_count(config)}")
    return 0 if ast and pid else 3


def cmd_sandbox(args, config: HotlineConfig) -> int:
    from hotline import sandbox

    _need_root()
    root = sandbox.ensure_root(config.asterisk_root, config.debian_mirror or None)
    print(f"{root}: {sandbox.asterisk_version(root)}")
    return 0


def cmd_render(args, config: HotlineConfig) -> int:
    from hotline import instance

    etc = instance.render(config)
    print(f"rendered Asterisk config into {etc}")
    if args.reload:
        print("\n".join(instance.asterisk_cli(config, "dialplan reload")))
    return 0


def cmd_prompts(args, config: HotlineConfig) -> int:
    from ivr.menu import load_menu
    from recordings.prompts import generate_prompts

    written = generate_prompts(load_menu(config.menu_file).prompts, config.prompts_dir)
    print(f"{len(written)} prompt files written to {config.prompts_dir} (unchanged ones kept)")
    return 0


def cmd_db(args, config: HotlineConfig) -> int:
    from db.session import migrate
    from hotline import instance

    migrate(config.db_url)
    print(f"database at head: {_redact(config.db_url)}")
    if args.seed_demo:
        instance.seed(config)
        print("demo network loaded")
    return 0


def cmd_serve(args, config: HotlineConfig) -> int:
    logging.basicConfig(level=config.log_level,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.worker:
        from hotline.service import HotlineService

        asyncio.run(HotlineService(config).run_forever())
        return 0
    from hotline.supervisor import Supervisor, worker_argv

    return Supervisor(worker_argv(config.instance, args.config),
                      config.instance_dir / "service.heartbeat").run()


def cmd_asterisk(args, config: HotlineConfig) -> int:
    from hotline import instance

    print("\n".join(instance.asterisk_cli(config, " ".join(args.command))))
    return 0


def cmd_call(args, config: HotlineConfig) -> int:
    from db.repo import CaseRepository, RosterRepository
    from db.session import make_engine
    from ivr.menu import load_menu
    from testphones.scenario import place_call

    menu = load_menu(config.menu_file)
    engine = make_engine(config.db_url)
    now = datetime.now(timezone.utc)
    roster = RosterRepository(engine).load(now - timedelta(days=1), now + timedelta(days=1))
    numbers = [s.phone for s in roster.surgeons.values()] + [menu.duty_nurse_number]
    surgeons = [s.strip() for s in args.surgeons.split(",") if s.strip()]
    started = datetime.now(timezone.utc)
    with tempfile.TemporaryDirectory(prefix="hotline-call-") as tmp:
        result = place_call(
            workdir=Path(tmp), sip_port=config.ports.sip, number=menu.number,
            password=config.sip_secret(), caller_number=args.from_number, press=args.press,
            surgeon_port=config.ports.surgeon_phones, surgeon_numbers=numbers,
            surgeons=surgeons, talk_s=args.talk, timeout_s=args.timeout,
            surgeon_host=config.surgeon_host,
        )
    print(result.caller_closed or "call over")
    case = _wait_case(CaseRepository(engine), args.from_number, started)
    engine.dispose()
    if case is None:
        print("no finished case record found (is the service running? `hotline status`)")
        return 1
    _print_case(case)
    return 0


def cmd_cases(args, config: HotlineConfig) -> int:
    from db.repo import CaseRepository
    from db.session import make_engine

    engine = make_engine(config.db_url)
    repo = CaseRepository(engine)
    if args.case_id:
        case = repo.get(args.case_id)
        if case is None:
            print(f"no case {args.case_id!r}")
            return 1
        _print_case(case)
    else:
        for case in repo.recent(args.limit):
            local = case.started_at.astimezone(_tz())
            print(f"{case.case_id}  {local:%m-%d %H:%M:%S}  {case.caller.raw_safe or '-':>16}  "
                  f"{case.caller.caller_class.value:9}  {case.team or '-':9}  {case.outcome}")
    engine.dispose()
    return 0


def cmd_console(args, config: HotlineConfig) -> int:
    import waitress

    from console import create_app

    logging.basicConfig(level=config.log_level,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    app = create_app(config)
    port = args.port or config.ports.console
    print(f"console on http://{args.host}:{port}/ and the JSON API under /api/v1 "
          f"(database {_redact(config.db_url)})", flush=True)
    # waitress: a production WSGI server in pure Python, no C build, threads.
    from photos.rules import MAX_POST_BYTES

    # waitress would buffer up to 1 GiB of a body before the app sees it: the
    # largest legitimate body is a photo upload (console/photos.py).
    waitress.serve(app, host=args.host, port=port, threads=args.threads, ident="hotline",
                   max_request_body_size=MAX_POST_BYTES + 1024 * 1024)
    return 0


def cmd_twilio(args, config: HotlineConfig) -> int:
    import waitress

    from carrier.twilio_voice import create_voice_app

    logging.basicConfig(level=config.log_level,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    fetcher = _recording_fetcher(args, config)
    if args.fetch_recordings:
        if fetcher is None:
            return 2
        since = datetime.now(timezone.utc) - timedelta(days=args.since_days)
        summary = fetcher.run_once(since=since)
        print(f"Twilio recordings: {summary} / 录音取回：成功 {summary.fetched}，失败 {summary.failed}")
        return 1 if summary.failed or summary.not_deleted else 0
    app = create_voice_app(config)
    print(f"Twilio voice webhooks on http://{args.host}:{args.port}/twilio/ "
          f"(public URL {config.twilio_public_url or 'not set'}; database "
          f"{_redact(config.db_url)})", flush=True)
    stop = threading.Event()
    if fetcher is not None:
        threading.Thread(target=fetcher.run_forever, args=(stop, args.fetch_every),
                         name="twilio-recordings", daemon=True).start()
        print(f"Twilio recordings are fetched into {config.recordings_dir} every "
              f"{args.fetch_every:g} s" + ("" if args.keep_at_twilio else
                                            " and then deleted at Twilio"), flush=True)
    try:
        waitress.serve(app, host=args.host, port=args.port, threads=args.threads,
                       ident="hotline")
    finally:
        stop.set()
    return 0


def _recording_fetcher(args, config: HotlineConfig):
    """The Twilio recording fetcher, or None (said on stderr) when it cannot run."""
    from carrier.twilio_recordings import RecordingFetcher
    from db.session import make_engine

    token = config.twilio_token()
    if not config.twilio_account_sid or not token:
        print("hotline twilio: recordings stay at Twilio (not fetched): set "
              "HOTLINE_TWILIO_ACCOUNT_SID and the auth token (HOTLINE_TWILIO_AUTH_TOKEN or "
              "twilio.token) / 录音不会取回：请配置 Twilio 账户 SID 与令牌", file=sys.stderr)
        return None
    try:
        return RecordingFetcher(make_engine(config.db_url), config.recordings_dir,
                                config.twilio_account_sid, token,
                                base_url=config.twilio_base_url,
                                delete_at_twilio=not args.keep_at_twilio, vault=config.vault())
    except ValueError as exc:
        print(f"hotline twilio: recordings not fetched: {exc}", file=sys.stderr)
        return None


def cmd_reconcile(args, config: HotlineConfig) -> int:
    from hotline.reconcile import ReconcileError, parse_when, reconcile_window

    now = datetime.now(timezone.utc)
    try:
        since = parse_when(args.since, now)
        until = parse_when(args.until, now)
        report = reconcile_window(config, since, until, dry_run=args.dry_run)
    except (ValueError, ReconcileError) as exc:
        print(f"hotline: {exc}", file=sys.stderr)
        return 2 if isinstance(exc, ValueError) else 1
    print("\n".join(report.lines()))
    return 1 if report.errors or report.count("error") else 0


# -- helpers ------------------------------------------------------------------
def _self_command() -> str:
    """How to run this CLI again: the virtualenv's script path when it is not on PATH."""
    import shutil

    script = Path(sys.prefix) / "bin" / "hotline"
    if shutil.which("hotline") == str(script) or not script.exists():
        return "hotline"
    try:
        return str(script.relative_to(Path.cwd()))
    except ValueError:
        return str(script)


def _tz():
    from zoneinfo import ZoneInfo

    from oncall.model import HOTLINE_TZ

    return ZoneInfo(HOTLINE_TZ)


def _wait_case(repo, number: str, since: datetime, timeout_s: float = 15.0):
    """The ended case of the call just placed; for a connected call, once its
    recording is attached (the writer waits for MixMonitor to close the file)."""
    deadline = time.monotonic() + timeout_s
    found = None
    while time.monotonic() < deadline:
        for case in repo.recent(20):
            if (case.caller.raw_safe == number and case.ended_at is not None
                    and case.started_at >= since - timedelta(seconds=2)):
                found = case
                if case.connected_seq is None or case.recording_path:
                    return case
        time.sleep(0.5)
    return found


def _print_case(case) -> None:
    from cases.lifecycle import timeline

    tz = _tz()
    print(f"\ncase {case.case_id}  (linkedid {case.linkedid})")
    print(f"  caller   {case.caller.raw_safe or '-'}  [{case.caller.caller_class.value}]"
          + (f"  partner hospital #{case.caller.hospital_id}" if case.caller.hospital_id else ""))
    print(f"  team     {case.team or '-'}   language {case.language}")
    print(f"  outcome  {case.outcome}   hang-up by {case.hangup_by or '-'}")
    if case.recording_path:
        print(f"  recording {case.recording_path} ({case.recording_s}s)")
    if case.voicemail_path:
        print(f"  voicemail {case.voicemail_path}")
    print("  timeline:")
    for entry in timeline(case):
        print(f"    {entry.at.astimezone(tz):%H:%M:%S}  {entry.kind:10} {entry.detail}")


def _redact(url: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hotline",
        description="96608 急诊创伤整形修复热线 — emergency trauma & plastic-surgery hotline.",
    )
    parser.add_argument("--config", help="TOML config file (default: $HOTLINE_CONFIG)")
    parser.add_argument("--instance", help="instance name (default: demo; $HOTLINE_INSTANCE)")
    sub = parser.add_subparsers(dest="verb", required=True, metavar="VERB")

    p = sub.add_parser("up", help="provision the sandbox, load the demo network, start Asterisk and the service")
    p.add_argument("--no-demo", action="store_true", help="do not load the demo network")
    p.set_defaults(func=cmd_up)
    sub.add_parser("down", help="stop the service and Asterisk").set_defaults(func=cmd_down)
    sub.add_parser("status", help="show what is running").set_defaults(func=cmd_status)
    sub.add_parser("sandbox", help="provision (or check) the cached Debian sid root with Asterisk 22"
                   ).set_defaults(func=cmd_sandbox)
    p = sub.add_parser("render", help="render the Asterisk config and dialplan from the menu config")
    p.add_argument("--reload", action="store_true", help="reload the running dialplan afterwards")
    p.set_defaults(func=cmd_render)
    sub.add_parser("prompts", help="synthesise prompt audio from the menu's texts (espeak-ng)"
                   ).set_defaults(func=cmd_prompts)
    p = sub.add_parser("db", help="migrate the database to the latest schema")
    p.add_argument("--seed-demo", action="store_true", help="also load the demo network")
    p.set_defaults(func=cmd_db)
    p = sub.add_parser("serve", help="run the hotline service in the foreground (FastAGI + AMI), "
                       "under a watchdog that restarts it if it dies or stalls")
    p.add_argument("--worker", action="store_true",
                   help="run the service itself, without the watchdog (the watchdog starts this)")
    p.set_defaults(func=cmd_serve)
    p = sub.add_parser("asterisk", help="run an Asterisk CLI command, e.g. `hotline asterisk core show channels`")
    p.add_argument("command", nargs="+")
    p.set_defaults(func=cmd_asterisk)
    p = sub.add_parser("call", help="place a real SIP call to 96608 with test phones and print the case")
    p.add_argument("--from", dest="from_number", required=True, help="the caller's number (caller ID)")
    p.add_argument("--press", default="", help="menu keys the caller presses, e.g. 2")
    p.add_argument("--surgeons", default="accept",
                   help="what each ringing phone does, in order: accept, decline, no-key, ignore "
                        "(comma-separated; the last repeats). Default: accept")
    p.add_argument("--talk", type=float, default=3.0, help="seconds to talk once bridged")
    p.add_argument("--timeout", type=float, default=180.0, help="give up after this many seconds")
    p.set_defaults(func=cmd_call)
    p = sub.add_parser("cases", help="list recent case records, or show one")
    p.add_argument("case_id", nargs="?", help="show this case's timeline")
    p.add_argument("--limit", type=int, default=20)
    p.set_defaults(func=cmd_cases)
    p = sub.add_parser(
        "reconcile",
        help="complete the case records from Asterisk's CDR/CEL for a time window and report the changes",
        description="Compare Asterisk's call records (CDR/CEL) with the case records: open the "
                    "cases of calls the service never saw (static fallback), complete cases it "
                    "lost track of, and print what changed. Safe to run again: a second run "
                    "changes nothing. Calls that ended under a minute ago are left to the service.")
    p.add_argument("--since", default="1h",
                   help="start of the window: 30m, 2h, 1d ago, or an ISO time "
                        "(local Asia/Shanghai time unless it has an offset). Default: 1h")
    p.add_argument("--until", default="now", help="end of the window, same forms. Default: now")
    p.add_argument("--dry-run", action="store_true", help="report what would change; save nothing")
    p.set_defaults(func=cmd_reconcile)
    cli_roster.register(sub)
    cli_tokens.register(sub)
    cli_users.register(sub)
    cli_network.register(sub)
    cli_incident.register(sub)
    cli_notify.register(sub)
    cli_callbacks.register(sub)
    cli_privacy.register(sub)
    from cluster import cli as cli_cluster

    cli_cluster.register(sub)
    p = sub.add_parser("console", help="serve the web console and the JSON API (waitress)",
                       description="Serve /api/v1/roster (bearer tokens: `hotline token create`). "
                                   "Put a TLS proxy in front of it for anything beyond loopback, "
                                   "and keep query strings out of its access log (calendar "
                                   "feed URLs carry a read-only token).")
    p.add_argument("--host", default="127.0.0.1", help="default 127.0.0.1 (loopback only)")
    p.add_argument("--port", type=int, help="default: the instance's console port (8608)")
    p.add_argument("--threads", type=int, default=8)
    p.set_defaults(func=cmd_console)
    p = sub.add_parser("twilio", help="serve the Twilio voice webhooks (second carrier, docs/twilio.md)",
                       description="Serve /twilio/voice, /menu, /step, /status ... for a Twilio "
                                   "number (waitress). Every request's X-Twilio-Signature is "
                                   "checked against HOTLINE_TWILIO_PUBLIC_URL; without the auth "
                                   "token (HOTLINE_TWILIO_AUTH_TOKEN or twilio.token) every "
                                   "webhook answers 503. Put it behind a TLS proxy that forwards "
                                   "/twilio/ only.")
    p.add_argument("--host", default="127.0.0.1", help="default 127.0.0.1 (loopback only)")
    p.add_argument("--port", type=int, default=8609, help="default 8609")
    p.add_argument("--threads", type=int, default=8)
    p.add_argument("--fetch-every", type=float, default=15.0, metavar="SECONDS",
                   help="how often recordings still at Twilio are fetched into the recordings "
                        "dir (needs HOTLINE_TWILIO_ACCOUNT_SID; default 15)")
    p.add_argument("--keep-at-twilio", action="store_true",
                   help="keep each recording at Twilio after fetching it (default: delete it "
                        "there once the case points at the local copy)")
    p.add_argument("--fetch-recordings", action="store_true",
                   help="do not serve: fetch the recordings still at Twilio once and exit "
                        "(exit 1 if any failed or could not be deleted there)")
    p.add_argument("--since-days", type=int, default=14, metavar="DAYS",
                   help="with --fetch-recordings: cases started in the last DAYS (default 14)")
    p.set_defaults(func=cmd_twilio)
    return parser


def main(argv: list[str] | None = None) -> int:
    # Everything an instance writes (the database and its -wal/-shm, logs,
    # secrets, recordings, exports) is for its own user only (docs/privacy.md).
    os.umask(0o077)
    parser = build_parser()
    args = parser.parse_args(argv)
    missing = cli_roster.check_required(args) or cli_users.check(args)
    if missing:
        parser.error(missing)
    try:
        config = _config(args)
    except ValueError as exc:
        print(f"hotline: {exc}", file=sys.stderr)
        return 2
    try:
        return args.func(args, config)
    except KeyboardInterrupt:
        return 130
    except Exception as exc:
        from db.roster_store import NotFound, NotOwner, PartOfTrade, StaleChange
        from hotline.instance import InstanceError
        from hotline.sandbox import SandboxError
        from ivr.menu import MenuError
        from oncall.roster_ops import RosterOpError

        if isinstance(exc, (InstanceError, SandboxError, MenuError)):
            print(f"hotline: {exc}", file=sys.stderr)
            return 1
        if isinstance(exc, (RosterOpError, NotFound, StaleChange, PartOfTrade, NotOwner)):
            print(f"hotline roster: refused: {exc}", file=sys.stderr)
            return 1
        if getattr(args, "verb", None) == "roster" and isinstance(exc, (ValueError, KeyError, OSError)):
            # A rotation or override that fails its own validation, an unknown
            # team, a file that cannot be read: say what, not a traceback.
            print(f"hotline roster: {type(exc).__name__}: {exc}", file=sys.stderr)
            return 2
        raise
