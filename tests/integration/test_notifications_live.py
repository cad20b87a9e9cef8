"""A real call nobody accepts, through the sandboxed Asterisk, ends as one WeChat message.

The service runs with its duty desk's WeChat Work robot pointed at a local
HTTP server (`tests.support.notify_server.StubServer`, real sockets) that
answers like the robot; the caller gives up while the primary's phone rings.
"""
from __future__ import annotations

import time

import pytest
from sqlalchemy import select

from conftest_support import Hotline
from db.models import NoticeRow
from db.session import make_engine
from tests.support.notify_server import Answer, Request, StubServer

pytestmark = pytest.mark.integration

KEY = "live-test-key-0001"
TEAM_KEY = "team-live-key-0002"
TWILIO_SID = "AC" + "2" * 32
TWILIO_TOKEN = "live-twilio-token-0003"
CALLER = "13611119901"
WAIT_S = 240.0  # collection every 30 s, delivery every 30 s: generous on a busy machine


def notices_for(line: Hotline, case_id: str) -> dict[str, NoticeRow]:
    engine = make_engine(line.config.db_url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(select(NoticeRow).where(NoticeRow.key.like(f"missed:{case_id}%")))
            return {r.key: r for r in rows}
    finally:
        engine.dispose()


def test_a_missed_call_reaches_the_duty_desk_group_exactly_once(line: Hotline):
    robot = StubServer()
    env = {**line.env, "HOTLINE_WECHAT_WEBHOOK_BASE": f"{robot.url}/cgi-bin/webhook/send",
           "HOTLINE_WECHAT_KEY_DESK": KEY}
    try:
        line.restart_service(env)
        line.wait_mirror()
        result, since = line.call(CALLER, press="1", surgeons="ignore", timeout_s=4)
        assert [r.number for r in result.rings][:1] == ["13700000101"]
        case = line.case_for(CALLER, since)
        assert case.outcome == "abandoned" and case.team == "facial"

        deadline = time.monotonic() + WAIT_S
        keys = {f"missed:{case.case_id}:1", f"missed:{case.case_id}:desk"}
        rows: dict[str, NoticeRow] = {}
        while time.monotonic() < deadline:
            rows = notices_for(line, case.case_id)
            if set(rows) == keys and all(r.sent_at is not None for r in rows.values()):
                break
            time.sleep(1)
        assert set(rows) == keys, f"notices made: {sorted(rows)}"  # nothing split off
        assert all(r.sent_at is not None and r.attempts == 0 for r in rows.values()), rows

        mine = [r for r in robot.requests if case.case_id in r.body.decode()]
        assert len(mine) == 1, [r.body.decode() for r in mine]
        request = mine[0]
        assert request.method == "POST" and request.path == "/cgi-bin/webhook/send"
        assert request.query == {"key": [KEY]}
        body = request.json()
        assert set(body) == {"msgtype", "text"} and body["msgtype"] == "text"
        content = body["text"]["content"]
        assert set(body["text"]) == {"content"}  # the desk's message mentions nobody
        assert content.startswith("【96608未接来电】颌面部创伤：")
        assert "****9901" in content and CALLER not in content  # masked for the group
        assert "来电者已挂断" in content and "96608 missed call: Facial trauma" in content
        # The service said at start which channels it has, and never the key; the
        # primary's notice went to the log (no SMS, no team group configured).
        log = (line.config.instance_dir / "log" / "service.log").read_text(errors="replace")
        assert "notification channels: wechat:desk" in log
        assert f"notice missed:{case.case_id}:1 missed_call to surgeon 1" in log
        assert KEY not in log
    finally:
        robot.close()
        line.restart_service(line.env)



def test_sms_and_groups_with_a_refused_group_message_retried_alone(line: Hotline):
    """SMS to the primary, a mention in the team group, the desk group; the team robot
    refuses the first try (rate limit): only that message is sent again, never the SMS."""
    caller = "13611119902"
    refused: list[Request] = []

    def answer(request: Request) -> Answer | None:
        if request.query.get("key") == [TEAM_KEY] and "****9902" in request.body.decode() \
                and not refused:
            refused.append(request)
            return Answer.json({"errcode": 45009, "errmsg": "api freq out of limit"})
        return None

    robots = StubServer(respond=answer)  # both robots: told apart by their keys
    twilio = StubServer([Answer.json({"sid": "SM" + "b" * 32, "status": "queued"}, status=201)])
    env = {**line.env, "HOTLINE_WECHAT_WEBHOOK_BASE": f"{robots.url}/cgi-bin/webhook/send",
           "HOTLINE_WECHAT_KEY_DESK": KEY, "HOTLINE_WECHAT_KEY_FACIAL": TEAM_KEY,
           "HOTLINE_TWILIO_ACCOUNT_SID": TWILIO_SID, "HOTLINE_TWILIO_AUTH_TOKEN": TWILIO_TOKEN,
           "HOTLINE_TWILIO_FROM": "+8610695500000", "HOTLINE_TWILIO_BASE_URL": twilio.url}
    try:
        line.restart_service(env)
        line.wait_mirror()
        result, since = line.call(caller, press="1", surgeons="ignore", timeout_s=4)
        case = line.case_for(caller, since)
        assert case.outcome == "abandoned" and case.team == "facial"
        first, desk_key = f"missed:{case.case_id}:1", f"missed:{case.case_id}:desk"
        split = f"{first}#wechat:team:facial"
        deadline = time.monotonic() + WAIT_S
        rows: dict[str, NoticeRow] = {}
        while time.monotonic() < deadline:
            rows = notices_for(line, case.case_id)
            if set(rows) == {first, desk_key, split} and all(r.sent_at for r in rows.values()):
                break
            time.sleep(1)
        assert set(rows) == {first, desk_key, split}, f"notices made: {sorted(rows)}"
        assert all(r.sent_at is not None for r in rows.values()), rows
        assert rows[first].attempts == 0 and rows[split].sent_at > rows[first].sent_at

        sms = [r for r in twilio.requests if case.case_id in r.form().get("Body", [""])[0]]
        assert len(sms) == 1, "the SMS went out more than once"
        form = sms[0].form()
        assert form["To"] == ["+8613700000101"] and form["From"] == ["+8610695500000"]
        assert caller in form["Body"][0]  # the surgeon alone reads it: not masked

        mine = [r for r in robots.requests if case.case_id in r.body.decode()]
        team = [r for r in mine if r.query["key"] == [TEAM_KEY]]
        desk = [r for r in mine if r.query["key"] == [KEY]]
        assert [r.json()["text"].get("mentioned_mobile_list") for r in team] == [
            ["13700000101"], ["13700000101"]]  # refused once, then sent once
        assert refused[0] is team[0] and caller not in team[1].body.decode()
        assert len(desk) == 1 and "mentioned_mobile_list" not in desk[0].json()["text"]
        assert len(mine) == 3
        log = (line.config.instance_dir / "log" / "service.log").read_text(errors="replace")
        assert "notification channels: sms, wechat:desk, wechat:team:facial" in log
        assert all(secret not in log for secret in (KEY, TEAM_KEY, TWILIO_TOKEN))
    finally:
        robots.close()
        twilio.close()
        line.restart_service(line.env)
