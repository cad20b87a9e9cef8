"""The benchmark's own hotline instance: sandboxed Asterisk + service on the bench's ports. Not a test.

Brought up the way tests/integration/conftest.py does it (hotline.instance
prepare / start_asterisk / start_service, HOTLINE_VAR_DIR a temporary dir),
plus what only the benchmark needs:

- a static dialplan beside the hotline's (appended to this instance's rendered
  extensions.conf, never to the templates): number `STATIC_NUMBER` answers,
  reads the menu key over the same greeting, plays the same consent prompt,
  starts the same MixMonitor and does the same Dial with the same press-1
  whisper -- with no FastAGI request and no case;
- a database holding the generated history (bench/history_gen.py) and a
  two-year roster (daily rotations for every team and role, overrides, leave).
"""
from __future__ import annotations

import os
import random
import shutil
import tempfile
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta, timezone
from pathlib import Path

from hotline import instance
from hotline.config import HotlineConfig, load_config

BENCH_DIR = Path(__file__).resolve().parent
MENU_FILE = BENCH_DIR / "menu-bench.toml"
STATIC_NUMBER = "96609"
STATIC_SURGEON = "13800000101"  # a surgeon phone of history_gen's roster (the UAS answers any)

STATIC_DIALPLAN = """
; ---- bench/rig.py: the static dialplan the benchmark compares the hotline with.
; The same Answer, greeting Read, consent prompt, MixMonitor and Dial with the
; press-1 whisper as [hotline-inbound]/[hotline-menu]/[hotline-route], no service.
[hotline-callers]
exten => {number},1,Goto(bench-static,s,1)

[bench-static]
exten => s,1,Answer()
 same => n,Read(BENCH_CHOICE,{prompts}/zh/greeting,1,,1,{timeout})
 same => n,GotoIf($["${{BENCH_CHOICE}}" = ""]?bye)
 same => n,Playback({prompts}/zh/consent)
 same => n,MixMonitor({recordings}/bench-${{FILTER(0123456789.,${{UNIQUEID}})}}.wav,b)
 same => n,Set(SHARED(HOTLINE_ACCEPTED)=)
 same => n,Dial(PJSIP/{surgeon}@surgeons,{ring_s},mU(bench-whisper^${{CHANNEL}}))
 same => n(bye),Hangup()

[bench-whisper]
exten => s,1,Read(BENCH_KEY,{prompts}/zh/whisper_replant&{prompts}/zh/press1,1,,1,{accept_s})
 same => n,GotoIf($["${{BENCH_KEY}}" = "1"]?accept)
 same => n,Set(GOSUB_RESULT=CONTINUE)
 same => n,Return()
 same => n(accept),Set(SHARED(HOTLINE_ACCEPTED,${{ARG1}})=1)
 same => n,Return()
"""


def ports(base: int) -> dict[str, int]:
    """The bench instance's ports from one base (all within base..base+999)."""
    return {"sip": base + 60, "ami": base + 38, "agi": base + 73, "surgeon_phones": base + 70,
            "console": base + 80, "rtp_start": base + 100, "rtp_end": base + 899}


@dataclass
class Rig:
    config: HotlineConfig
    env: dict[str, str]
    var_dir: Path

    @property
    def agi_port(self) -> int:
        return self.config.ports.agi

    def worker_pid(self) -> int | None:
        return instance.worker_pid(self.config)

    def channels(self) -> int:
        return instance.channel_count(self.config)

    def restart_service(self, db_url: str | None = None) -> None:
        """Restart the service (a fresh worker), optionally on another database."""
        instance.stop_service(self.config)
        if db_url is not None:
            self.env["HOTLINE_DATABASE_URL"] = db_url
            self.config = load_config(env=self.env)
        instance.start_service(self.config, env=self.env)

    def stop(self, keep_dir: bool = False) -> None:
        instance.stop_service(self.config)
        instance.stop_asterisk(self.config)
        if not keep_dir:
            shutil.rmtree(self.var_dir, ignore_errors=True)


def make_rig(port_base: int, parent: Path = Path("/tmp")) -> Rig:
    """A rig in a new dir under `parent` (/dev/shm takes the disk out of the figures)."""
    var_dir = Path(tempfile.mkdtemp(prefix="hl-bench-", dir=parent))
    env = {
        **os.environ,
        "HOTLINE_VAR_DIR": str(var_dir),
        "HOTLINE_INSTANCE": "bench",
        "HOTLINE_MENU_FILE": str(MENU_FILE),
        # The journal and logs at INFO are part of what the service costs: keep them.
        **{f"HOTLINE_PORT_{k.upper()}": str(v) for k, v in ports(port_base).items()},
    }
    env.pop("HOTLINE_DATABASE_URL", None)
    env.pop("HOTLINE_CONFIG", None)
    return Rig(load_config(env=env), env, var_dir)


def install_static_dialplan(config: HotlineConfig) -> None:
    """Append the bench's static contexts to this instance's rendered extensions.conf."""
    from ivr.menu import load_menu

    menu = load_menu(config.menu_file)
    text = STATIC_DIALPLAN.format(
        number=STATIC_NUMBER, prompts=config.prompts_dir, recordings=config.recordings_dir,
        timeout=menu.timeout_s, surgeon=STATIC_SURGEON, ring_s=25, accept_s=menu.accept_timeout_s)
    path = config.instance_dir / "etc" / "extensions.conf"
    with path.open("a", encoding="utf-8") as f:
        f.write(text)


def seed_roster(db_url: str, today: date, seed: int = 96608) -> dict[str, int]:
    """A two-year roster (a year back, a year ahead) for history_gen's teams and surgeons.

    Daily rotations (08:00 handoff) of four members per role for primary,
    backup and attending; one override a week per team and 50 leaves. The
    reference data (teams, surgeons, hospitals) must be there already.
    """
    from bench.history_gen import SURGEONS_PER_TEAM, TEAMS, History
    from db.roster_store import RosterStore
    from db.session import make_engine
    from oncall.model import Role
    from oncall.rotation import Leave, Override, Rotation

    history = History(seed, today, 1)  # only for the members (deterministic by seed)
    rng = random.Random(seed)
    engine = make_engine(db_url)
    counts = {"rotations": 0, "overrides": 0, "leave": 0}
    try:
        store = RosterStore(engine)
        start, until = today - timedelta(days=365), today + timedelta(days=365)
        roles = (Role.PRIMARY, Role.BACKUP, Role.ATTENDING)
        for code, *_ in TEAMS:
            members = history.members[code]
            assert len(members) == SURGEONS_PER_TEAM
            for k, role in enumerate(roles):
                store.add_rotation(Rotation.daily(code, role, members[4 * k:4 * k + 4], start,
                                                  until=until), actor="bench")
                counts["rotations"] += 1
            day = start
            while day < until:
                at = datetime.combine(day, time(8), timezone.utc) + timedelta(days=rng.randrange(7))
                store.add_override(Override(code, rng.choice(roles), rng.choice(members), at,
                                            at + timedelta(hours=12)), actor="bench")
                counts["overrides"] += 1
                day += timedelta(days=7)
        everyone = [s for code, *_ in TEAMS for s in history.members[code]]
        for _ in range(50):
            at = datetime.combine(start, time(0), timezone.utc) + timedelta(days=rng.randrange(730))
            store.add_leave(Leave(rng.choice(everyone), at, at + timedelta(days=rng.randint(1, 5))),
                            actor="bench")
            counts["leave"] += 1
    finally:
        engine.dispose()
    return counts
