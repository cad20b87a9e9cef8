"""Channel- and global-variable names shared by the dialplan templates, the AGI handlers and the mirror.

The dialplan (dialplans/templates/extensions.conf.j2) uses the same literal
names; tests/adapters/test_dialplan.py checks that both sides agree.
"""
import re

OK = "HOTLINE_OK"  # set to 1 last by every handler: the only proof the request succeeded
CASE_ID = "HOTLINE_CASE_ID"
ROUTE = "HOTLINE_ROUTE"  # "referral" for a partner hospital's fast lane, "blocked", else "menu"
ACTION = "HOTLINE_ACTION"  # dial | queue | voicemail | stop
TARGET = "HOTLINE_TARGET"  # digits of the phone to ring
RING_S = "HOTLINE_RING_S"
ATTEMPT = "HOTLINE_ATTEMPT"  # 1-based attempt number
WHISPER = "HOTLINE_WHISPER"  # prompt name the surgeon hears before pressing 1
PARTNER = "HOTLINE_PARTNER"  # partner hospital id, or empty

# Major-incident mode and the block list (docs/major-incidents.md):
INCIDENT = "HOTLINE_INCIDENT"  # "1": major-incident mode is on for some team (announce it)
QUEUE_PRIO = "HOTLINE_QPRIO"  # action "queue": the caller's app_queue QUEUE_PRIO (TARGET: the queue)

ALL = (OK, CASE_ID, ROUTE, ACTION, TARGET, RING_S, ATTEMPT, WHISPER, PARTNER,
       INCIDENT, QUEUE_PRIO)

# An Asterisk uniqueid / linkedid as the dialplan passes it; in a cluster it
# starts with the node's systemname ("node-a-1764.12"), which keeps it unique
# across nodes (dialplans/render.py NODE_NAME).
ASTERISK_ID = re.compile(r"(?:[a-z][a-z0-9-]{0,22}[a-z0-9]-)?[0-9]{1,20}\.[0-9]{1,10}", re.ASCII)

# Asterisk GLOBAL variables the service sets over AMI (Setvar without a
# Channel, ivr/mirror.py) and the dialplan reads with ${GLOBAL(...)}: plain
# variables, because a function (DB(), ...) would need the AMI class "system".
HEARTBEAT_PREFIX = "HOTLINE_HEARTBEAT_"  # + the instance's slot n (1..MAX_SERVICE_SLOTS)
MAX_SERVICE_SLOTS = 9


def heartbeat_var(slot: int) -> str:
    """The heartbeat global of service instance `slot` (1-based): HOTLINE_HEARTBEAT_<slot>.

    Epoch seconds, every second; "0" once that instance stops. The dialplan asks
    instance n (the n-th of its FastAGI targets) only while HOTLINE_HEARTBEAT_n is fresh.
    """
    if isinstance(slot, bool) or not isinstance(slot, int) or not 1 <= slot <= MAX_SERVICE_SLOTS:
        raise ValueError(f"not a service slot: {slot!r}")
    return f"{HEARTBEAT_PREFIX}{slot}"


HEARTBEAT = heartbeat_var(1)  # a single service: the first (and only) slot
CHAIN_PREFIX = "HOTLINE_CHAIN_"  # + <team> + "_" + COUNT | RING | <n>: the team's mirrored chain
CHAIN_COUNT = "COUNT"  # how many steps are mirrored (at most MAX_CHAIN_STEPS)
CHAIN_RING = "RING"  # ring time of each step, seconds
MAX_CHAIN_STEPS = 10  # the dialplan stops at 10 as well

# A team code exactly as ivr/menu.py and routing/queue.py accept it. It goes
# into the name verbatim (lower case, as everywhere else; Asterisk 22 tells
# HOTLINE_X from hotline_x, so both sides must spell it alike); the suffix is one
# segment without "_", so no two (team, part) pairs build the same name.
_TEAM_CODE = re.compile(r"[a-z][a-z0-9_]{0,31}", re.ASCII)


def chain_var(team: str, part: str | int) -> str:
    """The global holding one entry of `team`'s mirrored chain: HOTLINE_CHAIN_<team>_COUNT|_RING|_<n>.

    Refuses (ValueError) anything but a team code and COUNT, RING or a step 1..MAX_CHAIN_STEPS.
    """
    if not isinstance(team, str) or not _TEAM_CODE.fullmatch(team):
        raise ValueError(f"not a team code: {team!r}")
    if isinstance(part, bool) or not (part in (CHAIN_COUNT, CHAIN_RING)
                                      or (isinstance(part, int) and 1 <= part <= MAX_CHAIN_STEPS)):
        raise ValueError(f"not a chain entry: {part!r}")
    return f"{CHAIN_PREFIX}{team}_{part}"
