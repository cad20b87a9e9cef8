"""Issue 18 item 3, the live board: a real SIP call through the attack suite's own
sandboxed Asterisk, watched by a console app logged in to that Asterisk's AMI
with the console's account. A department head's `/live/` page and its
2-second redraw source `/live/calls.json` both show the caller masked and
nowhere whole; a supervisor's show it whole (the duty desk acts on it).
"""
from __future__ import annotations

import secrets
import threading

from console import create_app
from console.live import hub
from db.session import make_engine
from db.users import UserRole, UserStore
from routing.callers import mask_number
from tests.integration.test_console_live_calls import poll
from tests.support.console import PASSWORD, sign_in

from conftest_support import SURGEONS, Hotline

CALLER = "13612348642"


def test_the_live_board_masks_a_real_callers_number_for_a_department_head(line: Hotline):
    engine = make_engine(line.config.db_url)
    users = UserStore(engine, hash_method="pbkdf2:sha256:1000")
    head, sup = "head-" + secrets.token_hex(3), "sup-" + secrets.token_hex(3)
    users.create(head, PASSWORD, UserRole.DEPARTMENT_HEAD, surgeon_id=SURGEONS[0].id)
    users.create(sup, PASSWORD, UserRole.SUPERVISOR)
    app = create_app(line.config, engine=engine,
                     test_config={"TESTING": True, "RATELIMIT_ENABLED": False})
    clients = {name: app.test_client() for name in (head, sup)}
    outcome: dict = {}
    caller = threading.Thread(target=lambda: outcome.update(result=line.call(
        CALLER, press="1", surgeons="accept", talk_s=8)[0]), daemon=True)
    try:
        for name, client in clients.items():
            sign_in(client, name)
        poll(clients[sup], lambda b: b["ami"]["ok"], 20, "the console's AMI login")
        caller.start()
        seen = poll(clients[sup], lambda b: [c for c in b["calls"] if c["caller"] == CALLER],
                    40, "the call on the supervisor's board")
        linkedid = seen[0]["linkedid"]
        board = clients[head].get("/live/calls.json")
        assert board.status_code == 200
        (ours,) = [c for c in board.get_json()["calls"] if c["linkedid"] == linkedid]
        assert ours["caller"] == mask_number(CALLER) == "136****8642"
        assert CALLER not in board.get_data(as_text=True)
        page = clients[head].get("/live/").get_data(as_text=True)
        assert mask_number(CALLER) in page and CALLER not in page
        assert CALLER in clients[sup].get("/live/").get_data(as_text=True)
        caller.join(120)
        assert outcome["result"].bridged_to
    finally:
        if caller.is_alive():
            caller.join(120)
        hub(app).stop()
        engine.dispose()
