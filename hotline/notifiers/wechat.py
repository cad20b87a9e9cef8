"""WeChat Work (企业微信) group robots: a notice as a text message in a group.

A group robot (群机器人) is a webhook: POST JSON to
`https://qyapi.weixin.qq.com/cgi-bin/webhook/send?key=KEY` and the group sees
the message; the answer is JSON `{"errcode": 0, "errmsg": "ok"}`, anything
else in `errcode` is a refusal (45009: more than 20 messages a minute to this
robot; 93000: the key is not valid any more). A text message's content may be
2048 bytes of UTF-8 at most; `mentioned_mobile_list` @-mentions group members
by their mobile number. Text, not markdown: a markdown message can mention
only by WeChat Work user id (`<@userid>`), which the roster does not know.

The key in the URL is a secret: anyone holding it can post to the group. It
never appears in an error, a log line or a repr from here: errors are worded
here rather than passed on from `requests` (whose messages quote the URL), and
`SecretFilter` scrubs urllib3's own debug lines.
"""
from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterable, Sequence
from urllib.parse import parse_qs, urlsplit

import requests

from hotline.notify import NotifyError
from network.notifications import cut_utf8, mask_numbers, mobile_for_mention
from oncall.model import Surgeon
from oncall.notices import Notice

logger = logging.getLogger(__name__)

CONTENT_MAX_BYTES = 2048  # the robot's limit for text.content
TIMEOUT_S = 5.0  # connect and read, each: a notice is retried later, a worker must not hang
ERRMSG_MAX = 200
# Codes worth a word of their own in the error (the rest are quoted as they come).
KNOWN_ERRCODES = {
    45009: "rate limited: more than 20 messages a minute to this robot",
    93000: "the webhook key is not valid (the robot was removed or its key reset)",
    40008: "the message type is not valid",
    44004: "the message text is empty",
}
WEBHOOK_KEY = re.compile(r"[A-Za-z0-9_-]{1,128}", re.ASCII)


class SecretFilter(logging.Filter):
    """Replaces the given secrets in every record passing through with `***`.

    Attached to urllib3's connection-pool logger, whose debug lines quote the
    request line (`POST /cgi-bin/webhook/send?key=...`).
    """

    def __init__(self, secrets: Iterable[str] = ()):
        super().__init__()
        # Replaced, never changed in place: a record may be filtered on another
        # thread while a notifier is being built.
        self.secrets: frozenset[str] = frozenset(s for s in secrets if s)

    def add(self, secret: str) -> None:
        self.secrets = self.secrets | {secret}

    def filter(self, record: logging.LogRecord) -> bool:
        secrets = self.secrets
        if secrets:
            try:
                message = record.getMessage()
            except Exception:  # a malformed record: logging reports it, not us
                return True
            scrubbed = redact(message, secrets)
            if scrubbed != message:
                record.msg, record.args = scrubbed, ()
        return True


_URLLIB3_FILTER = SecretFilter()
logging.getLogger("urllib3.connectionpool").addFilter(_URLLIB3_FILTER)


def redact(text: str, secrets: Iterable[str]) -> str:
    """`text` with each secret (and any `key=...` query value) replaced by `***`.

    >>> redact("POST /send?key=abc-123&x=1 failed", ["abc-123"])
    'POST /send?key=***&x=1 failed'
    """
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    return re.sub(r"(?i)(key=)[^&\s'\"]+", r"\1***", text)


class WeChatWorkNotifier:
    """Posts notices as text messages to one WeChat Work group robot.

    `name` says which group in logs and errors ("wechat:desk"). The message
    is the Chinese text, then the English, with phone numbers masked (a
    group is a wide audience) and cut to the robot's 2048 bytes. A notice to
    a surgeon @-mentions their mobile number, if they have one.
    """

    def __init__(self, url: str, *, name: str = "wechat", timeout_s: float = TIMEOUT_S,
                 session: requests.Session | None = None):
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"{name}: the webhook URL must be http(s)://host/...")
        keys = parse_qs(parts.query).get("key", [])
        if len(keys) != 1 or not WEBHOOK_KEY.fullmatch(keys[0]):
            raise ValueError(f"{name}: the webhook URL needs one key=... of [A-Za-z0-9_-]")
        self._url = url
        self._key = keys[0]
        self.name = name
        self.timeout_s = timeout_s
        self._session = session or requests.Session()
        _URLLIB3_FILTER.add(self._key)

    def __repr__(self) -> str:
        return f"WeChatWorkNotifier({self.name!r}, {redact(self._url, [self._key])!r})"

    def send(self, notice: Notice, recipient: Surgeon | None) -> None:
        mention = mobile_for_mention(recipient.phone) if recipient is not None else None
        self.post(group_text(notice), [mention] if mention else [])

    def post(self, content: str, mentioned_mobiles: Sequence[str] = ()) -> None:
        """Send one text message; raise `NotifyError` unless the robot answers errcode 0."""
        text: dict[str, object] = {"content": cut_utf8(content, CONTENT_MAX_BYTES)}
        if mentioned_mobiles:
            text["mentioned_mobile_list"] = list(mentioned_mobiles)
        body = {"msgtype": "text", "text": text}
        try:
            response = self._session.post(self._url, json=body,
                                          timeout=(self.timeout_s, self.timeout_s))
        except requests.Timeout:
            raise NotifyError(f"{self.name}: no answer within {self.timeout_s:g} s") from None
        except requests.ConnectionError:
            raise NotifyError(f"{self.name}: cannot connect to {self._where()}") from None
        except requests.RequestException as exc:
            raise NotifyError(f"{self.name}: request failed ({type(exc).__name__})") from None
        with response:
            status = response.status_code
            raw = response.content[:4096]
        if status != 200:
            raise NotifyError(f"{self.name}: HTTP {status} from {self._where()}")
        try:
            answer = json.loads(raw)
        except ValueError:
            raise NotifyError(f"{self.name}: the answer is not JSON") from None
        if not isinstance(answer, dict) or not isinstance(answer.get("errcode"), int) \
                or isinstance(answer.get("errcode"), bool):
            raise NotifyError(f"{self.name}: the answer has no errcode")
        code = answer["errcode"]
        if code != 0:
            errmsg = answer.get("errmsg")
            said = self._clean(errmsg) if isinstance(errmsg, str) else ""
            meaning = KNOWN_ERRCODES.get(code, "refused")
            raise NotifyError(f"{self.name}: errcode {code}, {meaning}" + (f" ({said})" if said else ""))

    def _where(self) -> str:
        parts = urlsplit(self._url)
        return f"{parts.scheme}://{parts.netloc}"

    def _clean(self, text: str) -> str:
        # The robot's errmsg may quote the request ("hint: ... key=..."): scrub it.
        one_line = " ".join(text.split())[:ERRMSG_MAX]
        return redact(one_line, [self._key])


def group_text(notice: Notice) -> str:
    """What a group sees: Chinese, a blank line, English; phone numbers masked."""
    return mask_numbers(f"{notice.text_zh}\n\n{notice.text_en}")
