"""Channel-variable names shared by the dialplan templates and the AGI handlers.

The dialplan (dialplans/templates/extensions.conf.j2) uses the same literal
names; tests/adapters/test_dialplan.py checks that both sides agree.
"""

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
