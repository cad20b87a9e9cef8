"""SmsNotifier with the real twilio client, pointed at a local HTTP server standing in for Twilio."""
from __future__ import annotations

import base64
import logging
from collections.abc import Iterator
from datetime import datetime, timezone

import pytest

from hotline.notifiers.sms import SmsNotifier, sms_body
from hotline.notifiers.sms import BODY_MAX_CHARS
from hotline.notify import NotifyError
from oncall.model import Surgeon
from oncall.notices import CALLBACK_DUE, MISSED_CALL, Notice
from tests.support.notify_server import Answer, StubServer, refused_port

SID = "AC" + "0" * 31 + "1"
TOKEN = "s3cr3t-auth-token-0123456789abcdef"
FROM = "+8610695500000"
MESSAGES = f"/2010-04-01/Accounts/{SID}/Messages.json"
AT = datetime(2026, 12, 1, 1, 30, tzinfo=timezone.utc)
NOTICE = Notice("missed:c1:1", MISSED_CALL, "facial", 1, AT,
                "【96608未接来电】颌面部创伤：来电 13812345678，无医生接听。",
                "96608 missed call: Facial trauma, from 13812345678.")
SURGEON = Surgeon(1, "张三", "13700000101")
QUEUED = Answer.json({"sid": "SM" + "a" * 32, "status": "queued", "to": "+8613700000101",
                      "from": FROM, "body": "x", "account_sid": SID}, status=201)


@pytest.fixture
def twilio() -> Iterator[StubServer]:
    stub = StubServer([QUEUED])
    try:
        yield stub
    finally:
        stub.close()


def sms(server_url: str, timeout_s: float = 10.0) -> SmsNotifier:
    return SmsNotifier(SID, TOKEN, FROM, base_url=server_url, timeout_s=timeout_s)


def failure(notifier: SmsNotifier, recipient: Surgeon | None = SURGEON) -> str:
    with pytest.raises(NotifyError) as caught:
        notifier.send(NOTICE, recipient)
    assert TOKEN not in str(caught.value)
    return str(caught.value)


def test_success_posts_to_the_messages_resource_with_basic_auth(twilio: StubServer):
    sms(twilio.url).send(NOTICE, SURGEON)
    [request] = twilio.requests
    assert request.method == "POST" and request.path == MESSAGES
    assert request.form() == {"To": ["+8613700000101"], "From": [FROM],
                              "Body": [f"{NOTICE.text_zh}\n{NOTICE.text_en}"]}
    scheme, _, encoded = request.headers["Authorization"].partition(" ")
    assert scheme == "Basic" and base64.b64decode(encoded).decode() == f"{SID}:{TOKEN}"


def test_a_surgeon_phone_in_another_form_is_sent_in_e164(twilio: StubServer):
    sms(twilio.url).send(NOTICE, Surgeon(2, "李四", "+86 137-0000-0102"))
    assert twilio.requests[0].form()["To"] == ["+8613700000102"]


def test_twilio_refuses_with_an_error_code(twilio: StubServer):
    twilio.script(Answer.json({"code": 21211, "message": "The 'To' number is not valid.",
                               "more_info": "https://www.twilio.com/docs/errors/21211",
                               "status": 400}, status=400))
    text = failure(sms(twilio.url))
    assert "HTTP 400" in text and "21211" in text and "not valid" in text
    assert "\x1b" not in text  # never the coloured terminal form


def test_http_500(twilio: StubServer):
    twilio.script(Answer(500, b"<html>down</html>", "text/html"))
    assert "HTTP 500" in failure(sms(twilio.url))


def test_bad_json_answer(twilio: StubServer):
    twilio.script(Answer(201, b"{sid:", "application/json"))
    assert "not JSON" in failure(sms(twilio.url))


def test_an_answer_naming_no_message(twilio: StubServer):
    twilio.script(Answer.json({"status": "queued"}, status=201))
    assert "names no message" in failure(sms(twilio.url))


def test_a_message_failed_at_once(twilio: StubServer):
    twilio.script(Answer.json({"sid": "SM1", "status": "failed", "error_code": 30006}, status=201))
    text = failure(sms(twilio.url))
    assert "SM1 failed" in text and "30006" in text


def test_timeout(twilio: StubServer):
    twilio.script(Answer(stall=True))
    assert "no answer from Twilio within 0.5 s" in failure(sms(twilio.url, timeout_s=0.5))


def test_connection_refused():
    assert "cannot connect" in failure(sms(f"http://127.0.0.1:{refused_port()}"))


def test_no_sms_for_the_desk_or_a_landline(twilio: StubServer):
    notifier = sms(twilio.url)
    assert "duty desk" in failure(notifier, None)
    assert "no mobile" in failure(notifier, Surgeon(3, "王五", "043188888888"))
    assert twilio.requests == []


def test_twilio_request_logging_stays_out_of_the_info_log(twilio: StubServer, caplog):
    with caplog.at_level(logging.INFO):
        sms(twilio.url).send(NOTICE, SURGEON)
    assert not [r for r in caplog.records if "Twilio API Request" in r.getMessage()]
    assert all(TOKEN not in r.getMessage() for r in caplog.records)


def test_configuration_errors():
    with pytest.raises(ValueError):
        SmsNotifier(SID, "", FROM)
    with pytest.raises(ValueError):
        SmsNotifier(SID, TOKEN, "96608")
    notifier = SmsNotifier(SID, TOKEN, "13800000000")
    assert notifier.from_number == "+8613800000000" and TOKEN not in repr(notifier)


def test_body_within_sms_limits():
    short = Notice("k", CALLBACK_DUE, None, 1, AT, "回拨", "Call back")
    assert sms_body(short) == "回拨\nCall back"
    only_zh = Notice("k", CALLBACK_DUE, None, 1, AT, "回" * 200, "x" * 100)
    assert sms_body(only_zh) == "回" * 200
    cut = Notice("k", CALLBACK_DUE, None, 1, AT, "回" * 400, "x")
    body = sms_body(cut)
    assert len(body) == BODY_MAX_CHARS and body.endswith("…")


def test_twilio_environment_variables_do_not_redirect_the_client(twilio: StubServer, monkeypatch):
    # With an edge set, twilio would rewrite the host to api.<edge>.us1.twilio.com.
    monkeypatch.setenv("TWILIO_EDGE", "singapore")
    monkeypatch.setenv("TWILIO_REGION", "au1")
    sms(twilio.url).send(NOTICE, SURGEON)
    assert len(twilio.requests) == 1
