"""WeChatWorkNotifier against a local HTTP server standing in for the group robot's webhook."""
from __future__ import annotations

import logging
from collections.abc import Iterator
from datetime import datetime, timezone

import pytest
import requests

from hotline.notifiers.channels import webhook_url
from hotline.notifiers.wechat import WeChatWorkNotifier
from hotline.notifiers.wechat import CONTENT_MAX_BYTES, SecretFilter
from hotline.notify import NotifyError
from oncall.model import Surgeon
from oncall.notices import MISSED_CALL, Notice
from tests.support.notify_server import Answer, StubServer, refused_port

KEY = "a1b2c3d4-0000-4f00-8000-5ec12e7k3y99"
PATH = "/cgi-bin/webhook/send"
NOTICE = Notice("missed:20261201-093000-ab12cd:1", MISSED_CALL, "facial", 1,
                datetime(2026, 12, 1, 1, 30, tzinfo=timezone.utc),
                "【96608未接来电】颌面部创伤：来电 13812345678，无医生接听。",
                "96608 missed call: Facial trauma, from 13812345678; no surgeon accepted.")
SURGEON = Surgeon(1, "张三", "13700000101")


@pytest.fixture
def server() -> Iterator[StubServer]:
    stub = StubServer()
    try:
        yield stub
    finally:
        stub.close()


def robot(server: StubServer, timeout_s: float = 10.0) -> WeChatWorkNotifier:
    return WeChatWorkNotifier(webhook_url(server.url + PATH, KEY), name="wechat:team:facial",
                              timeout_s=timeout_s)


def failure(notifier: WeChatWorkNotifier, notice: Notice = NOTICE,
            recipient: Surgeon | None = SURGEON) -> str:
    with pytest.raises(NotifyError) as caught:
        notifier.send(notice, recipient)
    text = str(caught.value)
    assert KEY not in text and KEY not in repr(caught.value)
    # No chained exception (whose text quotes the URL) rides along into a traceback.
    error = caught.value
    assert error.__cause__ is None and (error.__context__ is None or error.__suppress_context__)
    return text


def test_success_posts_the_exact_json_body_with_the_mention(server: StubServer):
    robot(server).send(NOTICE, SURGEON)
    [request] = server.requests
    assert request.method == "POST" and request.path == PATH and request.query == {"key": [KEY]}
    assert request.headers["Content-Type"] == "application/json"
    assert request.json() == {
        "msgtype": "text",
        "text": {
            "content": "【96608未接来电】颌面部创伤：来电 ****5678，无医生接听。\n\n"
                       "96608 missed call: Facial trauma, from ****5678; no surgeon accepted.",
            "mentioned_mobile_list": ["13700000101"],
        },
    }


def test_the_duty_desk_gets_no_mention(server: StubServer):
    desk = Notice("missed:x:desk", MISSED_CALL, "facial", None, NOTICE.due_at, "甲", "A")
    robot(server).send(desk, None)
    assert server.requests[0].json() == {"msgtype": "text", "text": {"content": "甲\n\nA"}}


def test_a_long_text_is_cut_to_2048_bytes_on_a_character_boundary(server: StubServer):
    long = Notice("k", MISSED_CALL, "facial", None, NOTICE.due_at, "创伤" * 800, "x")
    robot(server).send(long, None)
    content = server.requests[0].json()["text"]["content"]
    size = len(content.encode("utf-8"))
    assert CONTENT_MAX_BYTES - 3 < size <= CONTENT_MAX_BYTES  # 3 bytes a character
    assert content.endswith("…") and content.startswith("创伤创伤")


def test_timeout_when_the_server_does_not_answer(server: StubServer):
    server.script(Answer(stall=True))
    text = failure(robot(server, timeout_s=0.5))
    assert "no answer within 0.5 s" in text and "wechat:team:facial" in text


def test_http_500(server: StubServer):
    server.script(Answer(500, b"<html>oops</html>", "text/html"))
    assert "HTTP 500" in failure(robot(server))


def test_bad_json_answer(server: StubServer):
    server.script(Answer(200, b"{errcode: 0", "application/json"))
    assert "not JSON" in failure(robot(server))


@pytest.mark.parametrize("body", [b"[0]", b'{"errmsg":"ok"}', b'{"errcode":"0"}',
                                  b'{"errcode":true}', b"null"])
def test_json_of_the_wrong_shape(server: StubServer, body: bytes):
    server.script(Answer(200, body))
    assert "no errcode" in failure(robot(server))


def test_errcode_rate_limited(server: StubServer):
    server.script(Answer.json({"errcode": 45009, "errmsg": "api freq out of limit"}))
    text = failure(robot(server))
    assert "errcode 45009" in text and "rate limited" in text and "api freq out of limit" in text


def test_errcode_invalid_key_and_an_errmsg_quoting_the_key_is_scrubbed(server: StubServer):
    server.script(Answer.json({"errcode": 93000, "errmsg": f"invalid webhook url, hint: "
                                                          f"[key={KEY}] more info"}))
    text = failure(robot(server))
    assert "errcode 93000" in text and "key is not valid" in text and "key=***" in text


def test_connection_refused():
    notifier = WeChatWorkNotifier(webhook_url(f"http://127.0.0.1:{refused_port()}{PATH}", KEY))
    assert "cannot connect" in failure(notifier)


def test_connection_dropped_without_an_answer(server: StubServer):
    server.script(Answer(drop=True))
    assert failure(robot(server)).startswith("wechat:team:facial: ")


def test_the_key_is_not_in_the_repr_nor_in_urllib3_debug_lines(server: StubServer, caplog):
    notifier = robot(server)
    assert KEY not in repr(notifier) and "key=***" in repr(notifier)
    with caplog.at_level(logging.DEBUG, logger="urllib3"):
        notifier.send(NOTICE, None)
    lines = [r.getMessage() for r in caplog.records if r.name.startswith("urllib3")]
    assert any(PATH in line for line in lines)  # urllib3 did log the request line...
    assert not any(KEY in line for line in lines)  # ...without the key


def test_secret_filter_scrubs_formatted_records():
    record = logging.LogRecord("urllib3.connectionpool", logging.DEBUG, __file__, 1,
                               '"%s %s HTTP/1.1" %s', ("POST", f"{PATH}?key={KEY}", 200), None)
    assert SecretFilter([KEY]).filter(record) is True
    assert record.getMessage() == f'"POST {PATH}?key=*** HTTP/1.1" 200'


@pytest.mark.parametrize("url", ["ftp://h/send?key=abc", f"http://h{PATH}", f"http://h{PATH}?key=a b",
                                 f"http://h{PATH}?key=a&key=b", "http:///send?key=abc"])
def test_malformed_webhook_urls_are_refused(url: str):
    with pytest.raises(ValueError) as caught:
        WeChatWorkNotifier(url)
    assert "key=abc" not in str(caught.value)


def test_webhook_url_refuses_a_key_that_would_change_the_url():
    assert webhook_url("https://q/send", "k-1") == "https://q/send?key=k-1"
    assert webhook_url("https://q/send?debug=1", "k") == "https://q/send?debug=1&key=k"
    with pytest.raises(ValueError):
        webhook_url("https://q/send", "k&key=other")


def test_a_session_error_of_another_kind_is_a_notify_error(server: StubServer):
    class Broken(requests.Session):
        def post(self, *args, **kwargs):
            raise requests.exceptions.InvalidHeader(f"bad header in {args[0]}")

    notifier = WeChatWorkNotifier(webhook_url(server.url + PATH, KEY), session=Broken())
    assert "InvalidHeader" in failure(notifier)
