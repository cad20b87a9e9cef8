"""Issue 18 item 5: a session does not outlive the password. `hotline user passwd`,
`hotline user disable` and `hotline user role` (real CLI processes, the console's
own environment) each end every console session of that account at once: the
real console process (waitress, SQLite and PostgreSQL) answers the old cookie
with the sign-in page on its very next request, every one of the account's
sessions dies (not only one), other accounts stay signed in, and API tokens
-- separate credentials, bound to no console account -- keep working.
"""
from __future__ import annotations

import secrets
from collections.abc import Iterator

import pytest
import requests
from sqlalchemy import select

from db.models import ConsoleSessionRow, UserRow
from db.users import UserRole, UserStore
from tests.integration.browser_support import hotline_cli
from tests.security.web_live import LiveConsole, database, port_range, signed_in, world_console  # noqa: F401
from tests.support.console import PASSWORD

PORTS = port_range(440)


@pytest.fixture(scope="module")
def live(database, tmp_path_factory) -> Iterator[LiveConsole]:
    with world_console(database, tmp_path_factory, "sessions", PORTS, users=("admin",)) as found:
        yield found


@pytest.fixture
def account(live) -> str:
    """A fresh department head with two sessions (two browsers) open."""
    name = "h" + secrets.token_hex(4)
    UserStore(live.engine, hash_method="pbkdf2:sha256:1000").create(
        name, PASSWORD, UserRole.DEPARTMENT_HEAD, surgeon_id=9)
    return name


def _alive(live: LiveConsole, session: requests.Session) -> bool:
    answer = session.get(live.url + "/live/", allow_redirects=False, timeout=30)
    assert answer.status_code in (200, 302, 403), answer.status_code
    if answer.status_code == 302:
        assert answer.headers["Location"].startswith("/login"), answer.headers["Location"]
    return answer.status_code != 302


def _open_sessions(live: LiveConsole, name: str) -> int:
    with live.engine.connect() as conn:
        uid = conn.execute(select(UserRow.id).where(UserRow.username == name)).scalar_one()
        return len(conn.execute(select(ConsoleSessionRow.sid).where(
            ConsoleSessionRow.user_id == uid, ConsoleSessionRow.revoked_at.is_(None))).all())


def test_a_new_password_signs_the_account_out_everywhere(live, account):
    first, second = signed_in(live.url, account), signed_in(live.url, account)
    bystander = live.sessions["admin"]
    assert _alive(live, first) and _alive(live, second) and _open_sessions(live, account) == 2
    new_password = "pw-" + secrets.token_urlsafe(12)
    done = hotline_cli(live.env, "user", "passwd", account, "--password-stdin",
                       stdin=new_password + "\n")
    assert "2 session(s) signed out" in done.stdout
    assert not _alive(live, first) and not _alive(live, second)
    assert _open_sessions(live, account) == 0
    assert _alive(live, bystander)  # another account's session is untouched
    assert _alive(live, signed_in(live.url, account, new_password))  # the new password works


def test_disabling_ends_every_session_and_enabling_does_not_revive_them(live, account):
    old = signed_in(live.url, account)
    assert _alive(live, old)
    hotline_cli(live.env, "user", "disable", account)
    assert not _alive(live, old)
    hotline_cli(live.env, "user", "enable", account)
    # The copied cookie of before the disable stays dead.
    assert not _alive(live, old) and _open_sessions(live, account) == 0
    assert _alive(live, signed_in(live.url, account))


def test_a_role_change_ends_every_session(live, account):
    old = signed_in(live.url, account)
    assert _alive(live, old)
    done = hotline_cli(live.env, "user", "role", account, "--role", "surgeon", "--surgeon", "9")
    assert "1 session(s) signed out" in done.stdout
    assert not _alive(live, old)
    again = signed_in(live.url, account)
    # Signed in again, as a surgeon now: the live board is staff-only.
    assert again.get(live.url + "/live/", allow_redirects=False, timeout=30).status_code == 403


def test_api_tokens_are_separate_credentials_and_stay(live, account):
    token = live.world.tokens["admin"]  # tokens name no console account: none is "theirs"
    api = {"Authorization": f"Bearer {token}"}
    assert requests.get(live.url + "/api/v1/calls", headers=api, timeout=30).status_code == 200
    hotline_cli(live.env, "user", "passwd", account, "--password-stdin",
                stdin="pw-" + secrets.token_urlsafe(12) + "\n")
    assert requests.get(live.url + "/api/v1/calls", headers=api, timeout=30).status_code == 200
