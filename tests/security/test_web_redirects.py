"""Issue 18 item 4: no open redirect. `next=` on sign-in and on the language switch
is followed only to a path on this console; a battery of off-site forms is sent
to the real console process (waitress) and the Location header it answers with
is read as a browser would (urljoin on the console's address): it must stay on
the console's host. The legitimate targets (a list with its filters) still work.
"""
from __future__ import annotations

import itertools
import re
from collections.abc import Iterator
from urllib.parse import quote, urljoin, urlsplit

import pytest
import requests
from requests.adapters import HTTPAdapter

from tests.security.web_live import LiveConsole, port_range, world_console
from tests.support.console import PASSWORD, USERS

# Each is sent as the raw query value (already percent-encoded where it says so).
OFF_SITE = {
    "tab": "/%09/evil.example/",
    "protocol_relative": "//evil.example/",
    "backslash_slash": "/\\evil.example/",
    "encoded_backslash": "/%5Cevil.example/",
    "two_backslashes": "\\\\evil.example/",
    "encoded_slashes": "%2F%2Fevil.example/",
    "slash_encoded_slash": "/%2Fevil.example/",
    "double_encoded": "/%252F/evil.example/",
    "cr_lf": "/%0D%0ALocation:%20https://evil.example/",
    "lf": "/%0A/evil.example/",
    "nul": "/%00/evil.example/",
    "leading_space": "%20//evil.example/",
    "space_slash": "/%20/evil.example/",
    "absolute": "https://evil.example/",
    "absolute_no_slashes": "https:evil.example",
    "javascript": "javascript:alert(1)",
    "encoded_javascript": "javascript%3Aalert(1)",
    "data": "data:text/html,<script>alert(1)</script>",
    "triple_slash": "///evil.example/",
    "userinfo": "//console@evil.example/",
    "unicode_line_separator": "/%E2%80%A8/evil.example/",
    "vertical_tab": "/%0B/evil.example/",
}
PORTS = port_range(400)


@pytest.fixture(scope="module")
def live(tmp_path_factory) -> Iterator[LiveConsole]:
    # No store is involved in a redirect: SQLite alone.
    database = f"sqlite:///{tmp_path_factory.mktemp('redirdb') / 'hotline.db'}"
    with world_console(database, tmp_path_factory, "redirects", PORTS, users=()) as found:
        yield found


def _stays_here(live: LiveConsole, location: str) -> None:
    here = urlsplit(live.url)
    # A browser drops tabs and newlines from a URL and reads '\' as '/': so does this check.
    cleaned = re.sub(r"[\t\n\r]", "", location).replace("\\", "/")
    followed = urlsplit(urljoin(live.url + "/", cleaned))
    assert (followed.scheme, followed.netloc) == (here.scheme, here.netloc), location
    assert location.startswith("/") and not location.startswith("//"), location


class _FromAddress(HTTPAdapter):
    def __init__(self, address: str) -> None:
        self._address = address
        super().__init__()

    def init_poolmanager(self, *args, **kwargs):
        kwargs["source_address"] = (self._address, 0)
        super().init_poolmanager(*args, **kwargs)


_sign_ins = itertools.count()


def _sign_in(live: LiveConsole, next_value: str) -> requests.Response:
    # The sign-in limits (10 a minute per address, 5 per 5 minutes per user name)
    # would stop a battery this long: each sign-in comes from its own loopback
    # address and the five seeded accounts take turns.
    n = next(_sign_ins)
    session = requests.Session()
    session.mount("http://", _FromAddress(f"127.0.0.{10 + n}"))
    page = session.get(live.url + "/login", timeout=30)
    token = re.search(r'name="csrf_token" value="([^"]+)"', page.text).group(1)
    return session.post(f"{live.url}/login?next={next_value}",
                        data={"username": USERS[n % len(USERS)][0], "password": PASSWORD,
                              "csrf_token": token},
                        allow_redirects=False, timeout=30)


@pytest.mark.parametrize("name", sorted(OFF_SITE))
def test_sign_in_never_sends_the_browser_off_site(live, name):
    answer = _sign_in(live, OFF_SITE[name])
    assert answer.status_code == 302, answer.text[:300]
    _stays_here(live, answer.headers["Location"])
    assert answer.headers["Location"] == "/calls/"


@pytest.mark.parametrize("name", sorted(OFF_SITE))
def test_the_language_switch_never_sends_the_browser_off_site(live, name):
    answer = requests.get(f"{live.url}/lang/en?next={OFF_SITE[name]}", allow_redirects=False,
                          timeout=30)
    assert answer.status_code == 302, answer.text[:300]
    _stays_here(live, answer.headers["Location"])
    assert answer.headers["Location"] == "/calls/"


def test_local_targets_are_still_followed(live):
    target = "/calls/?team=facial&from=2026-11-01&match=exact"
    signed = _sign_in(live, quote(target, safe=""))
    assert signed.headers["Location"] == target
    switched = requests.get(f"{live.url}/lang/zh?next={quote('/live/', safe='')}",
                            allow_redirects=False, timeout=30)
    assert switched.headers["Location"] == "/live/"
    # The sign-in page's own `next` (what @signed_in builds) comes back whole, query and all.
    bounced = requests.get(f"{live.url}/calls/?team=replant", allow_redirects=False, timeout=30)
    next_value = urlsplit(bounced.headers["Location"]).query.removeprefix("next=")
    assert _sign_in(live, next_value).headers["Location"] == "/calls/?team=replant"
