"""API tokens: created once, stored hashed, revocable; the `hotline token` CLI.
On SQLite and on PostgreSQL (fixture `engine`)."""
from __future__ import annotations

import argparse
import hashlib
from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy import inspect, select, text

from db.models import ApiTokenRow
from db.repo import write_roster
from db.session import downgrade, make_engine, migrate
from db.tokens import TokenError, TokenNotFound, TokenRole, TokenStore
from hotline.cli_tokens import register
from hotline.config import HotlineConfig
from oncall.model import Rank, Surgeon, Team
from tests.support.clock import Clock

UTC = timezone.utc
T0 = datetime(2026, 3, 1, 1, 0, tzinfo=UTC)


@pytest.fixture
def clock() -> Clock:
    return Clock(T0)


@pytest.fixture
def tokens(engine, clock) -> TokenStore:
    with engine.begin() as conn:
        write_roster(conn, [Team("facial", "颌面部创伤", "Facial trauma")],
                     [Surgeon(7, "王建国", "13800000007", Rank.CHIEF)], ())
    return TokenStore(engine, clock=clock)


def rows(engine) -> list:
    with engine.connect() as conn:
        return conn.execute(select(ApiTokenRow).order_by(ApiTokenRow.id)).all()


def test_a_token_is_shown_once_and_only_its_hash_is_stored(tokens, engine):
    record, token = tokens.create("night-desk", "supervisor")
    assert token.startswith("hl_") and len(token) == 46
    assert record.role is TokenRole.SUPERVISOR and record.surgeon_id is None
    assert record.created_at == T0 and record.actor == "api:night-desk"

    (row,) = rows(engine)
    assert row.token_hash == hashlib.sha256(token.encode()).hexdigest()
    with engine.connect() as conn:  # the plain token is nowhere in the table
        dump = " ".join(str(v) for r in conn.execute(text("SELECT * FROM api_tokens")) for v in r)
    assert token not in dump and token[3:] not in dump

    assert tokens.authenticate(token) == record
    _, other = tokens.create("other", "calendar")
    assert other != token


@pytest.mark.parametrize("presented", [
    "", "hl_", "hl_short", "nope", "hl_" + "x" * 43, "hl_" + "A" * 500, "Bearer hl_x", None, 42,
    "hl_" + "é" * 43, "hl_abc\x00def" + "a" * 40,
])
def test_malformed_or_unknown_tokens_authenticate_nobody(tokens, presented):
    tokens.create("desk", "admin")
    assert tokens.authenticate(presented) is None


def test_a_revoked_token_stops_working_at_once(tokens, clock):
    _, token = tokens.create("lost-phone", "surgeon", 7)
    assert tokens.authenticate(token) is not None
    clock.now = T0 + timedelta(hours=1)
    revoked = tokens.revoke("lost-phone")
    assert revoked.revoked_at == clock.now
    assert tokens.authenticate(token) is None
    assert tokens.revoke("lost-phone").revoked_at == clock.now  # again: unchanged
    with pytest.raises(TokenNotFound):
        tokens.revoke("no-such-token")


def test_last_used_is_written_at_most_once_a_minute(tokens, clock, engine):
    _, token = tokens.create("feed", "calendar")
    assert rows(engine)[0].last_used_at is None
    clock.now = T0 + timedelta(seconds=5)
    tokens.authenticate(token)
    assert rows(engine)[0].last_used_at == T0 + timedelta(seconds=5)
    clock.now = T0 + timedelta(seconds=50)
    tokens.authenticate(token)
    assert rows(engine)[0].last_used_at == T0 + timedelta(seconds=5)  # within the minute
    clock.now = T0 + timedelta(seconds=66)
    tokens.authenticate(token)
    assert rows(engine)[0].last_used_at == T0 + timedelta(seconds=66)


@pytest.mark.parametrize("name, role, surgeon, why", [
    ("desk", "root", None, "role must be one of"),
    ("head", "department_head", None, "must name its surgeon"),
    ("me", "surgeon", None, "must name its surgeon"),
    ("me", "surgeon", 999, "no surgeon 999"),
    ("desk", "supervisor", 7, "not bound to a surgeon"),
    ("", "admin", None, "token name"),
    ("a b", "admin", None, "token name"),
    ("x" * 65, "admin", None, "token name"),
    ("-lead", "admin", None, "token name"),
])
def test_token_creation_is_validated(tokens, engine, name, role, surgeon, why):
    with pytest.raises(TokenError, match=why):
        tokens.create(name, role, surgeon)
    assert rows(engine) == []


def test_token_names_are_unique(tokens, engine):
    tokens.create("desk", "admin")
    with pytest.raises(TokenError, match="exists already"):
        tokens.create("desk", "calendar")
    assert len(rows(engine)) == 1


def test_the_token_table_comes_and_goes_with_its_migration(db_url):
    migrate(db_url)
    engine = make_engine(db_url)
    try:
        assert "api_tokens" in inspect(engine).get_table_names()
        downgrade(engine, "0002")
        assert "api_tokens" not in inspect(engine).get_table_names()
        migrate(engine)
        assert "api_tokens" in inspect(engine).get_table_names()
    finally:
        engine.dispose()


# -- the CLI ----------------------------------------------------------------------


def run(config: HotlineConfig, *argv: str) -> int:
    parser = argparse.ArgumentParser(prog="hotline")
    sub = parser.add_subparsers(dest="verb", required=True)
    register(sub)
    args = parser.parse_args(list(argv))
    return args.func(args, config)


def test_token_cli_create_list_revoke(tokens, engine, db_url, capsys):
    config = HotlineConfig(database_url=db_url)

    assert run(config, "token", "create", "--name", "wang", "--role", "department_head",
               "--surgeon", "7") == 0
    out, err = capsys.readouterr()
    token = out.strip()
    assert token.startswith("hl_") and "\n" not in token  # stdout: the token alone
    assert "not shown again" in err
    assert tokens.authenticate(token).surgeon_id == 7

    assert run(config, "token", "create", "--name", "wang", "--role", "calendar") == 2
    assert "exists already" in capsys.readouterr().err
    assert run(config, "token", "create", "--name", "x", "--role", "surgeon") == 2
    assert "--surgeon" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        run(config, "token", "create", "--name", "x", "--role", "root")
    capsys.readouterr()

    assert run(config, "token", "list") == 0
    out = capsys.readouterr().out
    assert "wang" in out and "department_head" in out and " 7 " in out
    assert token not in out and rows(engine)[0].token_hash not in out

    assert run(config, "token", "revoke", "wang") == 0
    assert "revoked" in capsys.readouterr().out
    assert tokens.authenticate(token) is None
    assert run(config, "token", "revoke", "nobody") == 1
    assert "no token named nobody" in capsys.readouterr().err
    run(config, "token", "list")
    line = next(ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("wang"))
    assert not line.rstrip().endswith(" -")  # the revoked column is filled in
