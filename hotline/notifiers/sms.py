"""SMS to a surgeon's mobile through Twilio (`client.messages.create(to=, from_=, body=)`).

Pointing the client elsewhere (a test's local HTTP server, a proxy): the
Twilio client builds every URL from its domain's `base_url`
(`twilio.base.domain.Domain.absolute_url`: `base_url + "/" + uri`), and the
Messages resource lives on the `api` domain (`https://api.twilio.com`,
`/2010-04-01/Accounts/{sid}/Messages.json`). Setting `client.api.base_url`
after building the client sends every request there; with neither `edge` nor
`region` set, `ClientBase.get_hostname` leaves the URL as it is. That is what
`base_url=` does here; nothing else in the twilio package is patched.

The auth token is a secret: it travels only as HTTP basic auth (twilio's
request logging leaves out the Authorization header) and is kept out of
errors and reprs.
"""
from __future__ import annotations

import logging
from typing import Any

import requests
from twilio.base.exceptions import TwilioException, TwilioRestException
from twilio.http.http_client import TwilioHttpClient
from twilio.rest import Client

from hotline.notify import NotifyError
from network.notifications import e164
from oncall.model import Surgeon
from oncall.notices import Notice

logger = logging.getLogger(__name__)

TIMEOUT_S = 10.0
# Chinese text goes as UCS-2: 70 characters in one SMS, 67 in each part of a
# longer one. Four parts (268 characters) carry every notice of ours; Twilio
# itself takes up to 1600 characters but long messages arrive out of order or
# not at all on some Chinese carriers.
BODY_MAX_CHARS = 268
FAILED_STATUSES = frozenset({"failed", "undelivered", "canceled"})

# Twilio's HTTP client logs every request and response at INFO: too chatty for
# the service log (and the response headers carry nothing we need).
_HTTP_LOG = logging.getLogger(__name__ + ".http")
_HTTP_LOG.setLevel(logging.WARNING)


class SmsNotifier:
    """Sends a notice to its surgeon as an SMS from `from_number` (E.164).

    A notice to the duty desk, or to a surgeon without a mobile number,
    cannot go by SMS: that raises `NotifyError` (the routing notifier does
    not send those here). `client` may be given (a test's); otherwise one is
    built with `account_sid` / `auth_token`, talking to `base_url` if set.
    """

    def __init__(self, account_sid: str, auth_token: str, from_number: str, *,
                 base_url: str = "", timeout_s: float = TIMEOUT_S, client: Client | None = None,
                 name: str = "sms"):
        if not account_sid or not auth_token:
            raise ValueError("SMS needs a Twilio account SID and auth token")
        sender = e164(from_number) or (from_number if from_number.startswith("+")
                                       and from_number[1:].isdigit() else None)
        if sender is None:
            raise ValueError("the SMS sender must be a phone number in E.164 (+8613...)")
        self.from_number = sender
        self.name = name
        self.timeout_s = timeout_s
        if client is None:
            client = Client(account_sid, auth_token, http_client=TwilioHttpClient(
                timeout=timeout_s, logger=_HTTP_LOG, max_retries=0))
            # Twilio reads TWILIO_EDGE / TWILIO_REGION from os.environ (an empty
            # `environment` falls back to it): the configuration alone decides
            # where SMS go, so no edge or region rewrites the host.
            client.edge = client.region = None
        if base_url:
            client.api.base_url = base_url.rstrip("/")
        self._client = client
        self._token = auth_token

    def __repr__(self) -> str:
        return f"SmsNotifier(from={self.from_number!r})"

    def send(self, notice: Notice, recipient: Surgeon | None) -> None:
        if recipient is None:
            raise NotifyError(f"{self.name}: the duty desk has no phone for SMS")
        to = e164(recipient.phone)
        if to is None:
            raise NotifyError(f"{self.name}: surgeon {recipient.id} has no mobile number")
        self.text(to, sms_body(notice))

    def text(self, to: str, body: str) -> None:
        """Send `body` to `to` (E.164); raise `NotifyError` unless Twilio accepts it."""
        try:
            message: Any = self._client.messages.create(to=to, from_=self.from_number, body=body)
        except TwilioRestException as exc:
            code = f", Twilio error {exc.code}" if exc.code else ""
            raise NotifyError(f"{self.name}: HTTP {exc.status}{code}: "
                              f"{self._clean(str(exc.msg))}") from None
        except requests.Timeout:
            raise NotifyError(f"{self.name}: no answer from Twilio within {self.timeout_s:g} s") from None
        except requests.ConnectionError:
            raise NotifyError(f"{self.name}: cannot connect to Twilio") from None
        except requests.RequestException as exc:
            raise NotifyError(f"{self.name}: request failed ({type(exc).__name__})") from None
        except TwilioException as exc:  # e.g. an RFC 9457 error from a newer API
            raise NotifyError(f"{self.name}: Twilio refused ({type(exc).__name__}: "
                              f"{self._clean(str(exc))})") from None
        except ValueError:
            raise NotifyError(f"{self.name}: Twilio's answer is not JSON") from None
        status = getattr(message, "status", None)
        if not getattr(message, "sid", None):
            raise NotifyError(f"{self.name}: Twilio's answer names no message")
        if status in FAILED_STATUSES:
            raise NotifyError(f"{self.name}: message {message.sid} {status} "
                              f"(error {getattr(message, 'error_code', None)})")
        logger.debug("SMS %s queued to %s (%s)", message.sid, to[:-4] + "****", status)

    def _clean(self, text: str) -> str:
        one_line = " ".join(text.split())[:200]
        return one_line.replace(self._token, "***") if self._token else one_line


def sms_body(notice: Notice, limit: int = BODY_MAX_CHARS) -> str:
    """The Chinese text, and the English after it when both fit in `limit` characters.

    The surgeon is the only reader: numbers are not masked. A Chinese text
    longer than the limit is cut, with '…' at the end.
    """
    both = f"{notice.text_zh}\n{notice.text_en}"
    if len(both) <= limit:
        return both
    if len(notice.text_zh) <= limit:
        return notice.text_zh
    return notice.text_zh[:limit - 1] + "…"
