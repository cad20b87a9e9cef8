"""The call list: filters, sort and keyset pages over `cases`; and the case detail's reads.

One query builder serves the console's Calls page, its CSV/Excel exports, the
JSON API (`/api/v1/calls`) and the benchmark:

    filters = CallFilters(start, end, team="replant")          # aware datetimes, [start, end)
    page = list_calls(engine, filters, Order("started"), limit=50)
    page2 = list_calls(engine, filters, Order("started"), after=page.next)
    for row in iter_calls(engine, filters, cap=100_000): ...   # exports, in batches

Pages are keyset pages, not OFFSET: a cursor is the last row's sort key, so
page 2,000 costs what page 1 costs. With the default order (newest first) and
one filter, PostgreSQL walks one of the `(column, started_at)` indexes of
`cases` (migration 0004) from the cursor down and stops after `limit + 1` rows.
Sorting by team, outcome or time to reach a surgeon sorts the rows of the time
range instead (no index has those orders): as fast as the range is small.

Who took part in a case: a surgeon who was rung (a `dial_attempts` row, index
`(surgeon_id, case_id)`). The surgeon who was connected was rung by
definition (`cases.lifecycle.mark_connected` connects an attempt), so the one
EXISTS covers "rung or connected". A surgeon's own view (`only_surgeon`) is
that same condition, in the query: never a filter applied afterwards.

Every value reaches the database as a bound parameter; `CallFilters` checks
its values again (types, patterns, ranges) so that a caller that forgot to
validate gets a ValueError, not a database error.
"""
from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from typing import Any, NamedTuple

from sqlalchemy import (
    BigInteger,
    ColumnElement,
    Connection,
    Engine,
    Integer,
    and_,
    cast,
    exists,
    extract,
    func,
    insert,
    literal,
    or_,
    select,
    update,
)
from sqlalchemy.orm import aliased

from db.models import (
    CaseNoteRow,
    CaseRow,
    DialAttemptRow,
    PartnerHospitalRow,
    SurgeonRow,
    TeamRow,
    UserRow,
)
from vault import NOTE_PREFIX, Vault, open_note, seal_note

UTC = timezone.utc
OUTCOMES = ("connected", "nurse", "voicemail", "abandoned", "fallback", "in-progress")
DISPOSITIONS = ("consultation", "referral_accepted", "transfer_arranged", "advice_only")
SORTS = ("started", "team", "outcome", "connect")
PAGE_SIZE = 50
MAX_LIMIT = 1000  # rows per page or batch
EXPORT_CAP = 100_000
# The page says "more than 1000" beyond this: counting a year of one surgeon's calls
# exactly costs ~100 ms on PostgreSQL at 1,000,000 cases; up to 1,001 costs ~10 ms.
COUNT_CAP = 1000
MAX_ID = 2**31 - 1  # INTEGER columns
MAX_NOTE = 4000
MAX_CURSOR_CHARS = 512
EARLIEST, LATEST = datetime(2000, 1, 1, tzinfo=UTC), datetime(2100, 1, 1, tzinfo=UTC)
TEAM_RE = re.compile(r"[A-Za-z0-9._-]{1,32}", re.ASCII)
CASE_ID_RE = re.compile(r"[A-Za-z0-9._:-]{1,64}", re.ASCII)  # as cases.lifecycle accepts
DIGITS_RE = re.compile(r"[0-9]{1,20}", re.ASCII)
# Never-connected calls sort last whichever way "time to reach a surgeon" is sorted.
_NEVER_ASC = 2**62
_NEVER_DESC = -1
# PostgreSQL text cannot hold NUL; no UTF-8 text holds a lone surrogate.
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")

CASES = CaseRow.__table__
ATTEMPTS = DialAttemptRow.__table__


class BadCursor(ValueError):
    """A page cursor that is malformed or belongs to another sort order."""


# --------------------------------------------------------------------------- what is asked


@dataclass(frozen=True)
class CallFilters:
    """Which calls: started in [start, end), and each given condition (AND).

    `caller` is digits: the whole normalised number, or its beginning when
    `caller_prefix`, or (four digits) the end of a number of 8 digits or more
    when `caller_last4`. `surgeon_id`: the surgeon was rung (or connected).
    `has_recording`: True / False / None for either.
    """

    start: datetime
    end: datetime
    team: str | None = None
    outcome: str | None = None
    hospital_id: int | None = None
    caller: str | None = None
    caller_prefix: bool = False
    caller_last4: bool = False
    surgeon_id: int | None = None
    has_recording: bool | None = None

    def __post_init__(self) -> None:
        for name in ("start", "end"):
            value = getattr(self, name)
            if not isinstance(value, datetime) or value.tzinfo is None or value.utcoffset() is None:
                raise ValueError(f"{name}: a timezone-aware datetime is required")
        if not self.start < self.end:
            raise ValueError("start must be before end")
        if self.team is not None and not (isinstance(self.team, str) and TEAM_RE.fullmatch(self.team)):
            raise ValueError("team: 1..32 of [A-Za-z0-9._-]")
        if self.outcome is not None and self.outcome not in OUTCOMES:
            raise ValueError(f"outcome: one of {', '.join(OUTCOMES)}")
        for name in ("hospital_id", "surgeon_id"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int)
                                      or not 1 <= value <= MAX_ID):
                raise ValueError(f"{name}: a whole number from 1 to {MAX_ID}")
        if self.caller is not None and not (isinstance(self.caller, str)
                                            and DIGITS_RE.fullmatch(self.caller)):
            raise ValueError("caller: 1..20 digits")
        if self.caller_prefix and self.caller_last4:
            raise ValueError("caller: a prefix or the last four digits, not both")
        if self.caller_last4 and not (self.caller is not None and len(self.caller) == 4):
            raise ValueError("caller_last4: caller must be four digits")
        if self.has_recording not in (None, True, False):
            raise ValueError("has_recording: True, False or None")

    def as_dict(self) -> dict[str, Any]:
        """The filters as JSON-ready values (for the audit log and API answers)."""
        out = asdict(self)
        out["start"], out["end"] = self.start.isoformat(), self.end.isoformat()
        return out


@dataclass(frozen=True)
class Order:
    """Sort by `key` (one of SORTS); ties: newest first, then case id."""

    key: str = "started"
    descending: bool = True

    def __post_init__(self) -> None:
        if self.key not in SORTS:
            raise ValueError(f"sort: one of {', '.join(SORTS)}")
        if not isinstance(self.descending, bool):
            raise ValueError("descending: True or False")


# --------------------------------------------------------------------------- what comes back


@dataclass(frozen=True)
class CallRow:
    """One line of the call list."""

    case_id: str
    started_at: datetime
    caller_number: str | None
    caller_raw_safe: str
    caller_class: str
    hospital_id: int | None
    hospital_name: str | None
    team: str | None
    team_name_zh: str | None
    team_name_en: str | None
    outcome: str
    connected_at: datetime | None
    connected_surgeon_id: int | None
    connected_surgeon_name: str | None
    ended_at: datetime | None
    has_recording: bool
    recording_s: int | None

    @property
    def time_to_connect_s(self) -> float | None:
        """Seconds from the first ring of 96608 to the bridge with a surgeon."""
        if self.connected_at is None:
            return None
        return round((self.connected_at - self.started_at).total_seconds(), 3)


@dataclass(frozen=True)
class CallPage:
    """A page of rows and the cursors of the pages before and after it (None: none)."""

    rows: list[CallRow]
    next: str | None
    prev: str | None


class Count(NamedTuple):
    """How many calls match, counted up to a cap: `more` when there are more than `n`."""

    n: int
    more: bool


# --------------------------------------------------------------------------- the query


def _took_part(surgeon_id: int) -> ColumnElement[bool]:
    return exists(select(ATTEMPTS.c.case_id).where(
        ATTEMPTS.c.case_id == CASES.c.case_id, ATTEMPTS.c.surgeon_id == surgeon_id))


def _digits_after(prefix: str) -> str | None:
    """The least digit string above every string starting with `prefix` ('0439' -> '044')."""
    stripped = prefix.rstrip("9")
    if not stripped:
        return None
    return stripped[:-1] + str(int(stripped[-1]) + 1)


def _conditions(filters: CallFilters, only_surgeon: int | None) -> list[ColumnElement[bool]]:
    c = CASES.c
    where: list[ColumnElement[bool]] = [c.started_at >= filters.start, c.started_at < filters.end]
    if filters.team is not None:
        where.append(c.team == filters.team)
    if filters.outcome is not None:
        where.append(c.outcome == filters.outcome)
    if filters.hospital_id is not None:
        where.append(c.partner_hospital_id == filters.hospital_id)
    if filters.caller is not None:
        if filters.caller_prefix:
            # A range, not LIKE: PostgreSQL uses a btree index for LIKE 'x%'
            # only under the C collation; for digit strings the range is exact.
            where.append(c.caller_number >= filters.caller)
            upper = _digits_after(filters.caller)
            if upper is not None:
                where.append(c.caller_number < upper)
        elif filters.caller_last4:
            # Digits only (checked above): no LIKE wildcard can come in. Numbers of
            # fewer than 8 digits show only their last two, so four would tell more.
            where.append(c.caller_number.like("%" + filters.caller))
            where.append(func.length(c.caller_number) >= 8)
        else:
            where.append(c.caller_number == filters.caller)
    if filters.surgeon_id is not None:
        where.append(_took_part(filters.surgeon_id))
    if only_surgeon is not None and only_surgeon != filters.surgeon_id:
        where.append(_took_part(only_surgeon))
    if filters.has_recording is True:
        where.append(c.recording_path.is_not(None))
    elif filters.has_recording is False:
        where.append(c.recording_path.is_(None))
    return where


def _connect_ms(dialect: str) -> ColumnElement[int]:
    """Milliseconds from start to connection, computed by the database (NULL: never)."""
    c = CASES.c
    if dialect == "postgresql":
        return cast(extract("epoch", c.connected_at - c.started_at) * 1000, BigInteger)
    # SQLite keeps times as text; julianday() reads them.
    return cast(func.round((func.julianday(c.connected_at) - func.julianday(c.started_at))
                           * 86_400_000.0), Integer)


def _keys(order: Order, dialect: str) -> list[tuple[ColumnElement[Any], bool]]:
    """The sort key: (expression, descending) pairs, total (no NULLs), ending in the case id."""
    c = CASES.c
    if order.key == "started":
        return [(c.started_at, order.descending), (c.case_id, order.descending)]
    if order.key == "team":
        first: ColumnElement[Any] = func.coalesce(c.team, literal(""))
    elif order.key == "outcome":
        first = c.outcome
    else:
        never = _NEVER_DESC if order.descending else _NEVER_ASC
        first = func.coalesce(_connect_ms(dialect), literal(never, BigInteger))
    return [(first, order.descending), (c.started_at, True), (c.case_id, True)]


def _beyond(keys: Sequence[tuple[ColumnElement[Any], bool]], values: Sequence[Any],
            backwards: bool) -> ColumnElement[bool]:
    """Rows after `values` in the key's order (before them if `backwards`)."""
    alternatives = []
    for i, (expr, desc) in enumerate(keys):
        down = desc != backwards
        step = expr < values[i] if down else expr > values[i]
        alternatives.append(and_(*[keys[j][0] == values[j] for j in range(i)], step))
    # The first key's bound again, alone: it lets the index range start at the cursor.
    expr, desc = keys[0]
    bound = expr <= values[0] if desc != backwards else expr >= values[0]
    return and_(bound, or_(*alternatives))


def _select(dialect: str, filters: CallFilters, order: Order, only_surgeon: int | None):
    c = CASES.c
    accepted = aliased(DialAttemptRow, name="accepted")
    keys = _keys(order, dialect)
    query = (
        select(
            c.case_id, c.started_at, c.caller_number, c.caller_raw_safe, c.caller_class,
            c.partner_hospital_id, PartnerHospitalRow.name.label("hospital_name"), c.team,
            TeamRow.name_zh.label("team_name_zh"), TeamRow.name_en.label("team_name_en"),
            c.outcome, c.connected_at, c.connected_surgeon_id,
            accepted.name.label("connected_surgeon_name"), c.ended_at,
            c.recording_path.is_not(None).label("has_recording"), c.recording_s,
            *[expr.label(f"k{i}") for i, (expr, _) in enumerate(keys)],
        )
        .select_from(CASES)
        .outerjoin(PartnerHospitalRow, PartnerHospitalRow.id == c.partner_hospital_id)
        .outerjoin(TeamRow, TeamRow.code == c.team)
        .outerjoin(accepted, and_(accepted.case_id == c.case_id, accepted.seq == c.connected_seq))
        .where(*_conditions(filters, only_surgeon))
    )
    return query, keys


def _fetch(conn: Connection, filters: CallFilters, order: Order, limit: int, *,
           after: Sequence[Any] | None = None, before: Sequence[Any] | None = None,
           only_surgeon: int | None = None) -> list[Any]:
    query, keys = _select(conn.dialect.name, filters, order, only_surgeon)
    if after is not None:
        query = query.where(_beyond(keys, after, backwards=False))
    if before is not None:
        query = query.where(_beyond(keys, before, backwards=True))
    backwards = before is not None
    query = query.order_by(*[expr.desc() if desc != backwards else expr.asc()
                             for expr, desc in keys]).limit(limit)
    rows = list(conn.execute(query))
    if backwards:
        rows.reverse()
    return rows


def _row(r: Any) -> CallRow:
    return CallRow(
        case_id=r.case_id, started_at=r.started_at, caller_number=r.caller_number,
        caller_raw_safe=r.caller_raw_safe, caller_class=r.caller_class,
        hospital_id=r.partner_hospital_id, hospital_name=r.hospital_name, team=r.team,
        team_name_zh=r.team_name_zh, team_name_en=r.team_name_en, outcome=r.outcome,
        connected_at=r.connected_at, connected_surgeon_id=r.connected_surgeon_id,
        connected_surgeon_name=r.connected_surgeon_name, ended_at=r.ended_at,
        has_recording=bool(r.has_recording), recording_s=r.recording_s)


def _key_values(r: Any, order: Order) -> list[Any]:
    count = 2 if order.key == "started" else 3
    return [getattr(r, f"k{i}") for i in range(count)]


def _check_limit(limit: int) -> None:
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_LIMIT:
        raise ValueError(f"limit: 1..{MAX_LIMIT}")


def list_calls(engine: Engine, filters: CallFilters, order: Order = Order(), *,
               limit: int = PAGE_SIZE, after: str | None = None, before: str | None = None,
               only_surgeon: int | None = None) -> CallPage:
    """One page of calls in `order`: the first, or the one after / before a cursor.

    `only_surgeon`: the cases that surgeon took part in (a surgeon's own view).
    Raises BadCursor for a cursor that is not one of ours for this order.
    """
    _check_limit(limit)
    if after is not None and before is not None:
        raise ValueError("after or before, not both")
    after_v = decode_cursor(after, order) if after is not None else None
    before_v = decode_cursor(before, order) if before is not None else None
    with engine.connect() as conn:
        rows = _fetch(conn, filters, order, limit + 1, after=after_v, before=before_v,
                      only_surgeon=only_surgeon)
    more = len(rows) > limit
    if before_v is not None:
        rows = rows[-limit:] if more else rows
        prev = encode_cursor(order, _key_values(rows[0], order)) if more else None
        nxt = encode_cursor(order, _key_values(rows[-1], order)) if rows else None
    else:
        rows = rows[:limit]
        nxt = encode_cursor(order, _key_values(rows[-1], order)) if more else None
        prev = encode_cursor(order, _key_values(rows[0], order)) if after_v is not None and rows \
            else None
    return CallPage([_row(r) for r in rows], nxt, prev)


def count_calls(engine: Engine, filters: CallFilters, *, only_surgeon: int | None = None,
                cap: int = COUNT_CAP) -> Count:
    """How many calls match, counting at most `cap` + 1 (a count of millions costs seconds)."""
    if not 1 <= cap <= 10 * EXPORT_CAP:
        raise ValueError("cap: 1..1,000,000")
    inner = select(CASES.c.case_id).where(*_conditions(filters, only_surgeon)).limit(cap + 1)
    with engine.connect() as conn:
        n = conn.execute(select(func.count()).select_from(inner.subquery())).scalar_one()
    return Count(min(n, cap), n > cap)


def iter_calls(engine: Engine, filters: CallFilters, order: Order = Order(), *,
               only_surgeon: int | None = None, cap: int = EXPORT_CAP,
               batch: int | None = None) -> Iterator[CallRow]:
    """Every matching call in `order`, at most `cap`, read in keyset batches.

    Each batch is its own short read (no connection is held between batches),
    so a slow consumer -- a CSV download -- holds no database connection.
    Batches (default) are 1,000 rows in time order, where each walks an index
    from the cursor, and 10,000 in the other orders, where each sorts what is
    left of the range.
    """
    if batch is None:
        batch = 1000 if order.key == "started" else 10_000
    if isinstance(batch, bool) or not isinstance(batch, int) or not 1 <= batch <= 10_000:
        raise ValueError("batch: 1..10,000")
    if cap < 0:
        raise ValueError("cap: 0 or more")
    after: list[Any] | None = None
    left = cap
    while left > 0:
        want = min(batch, left)
        with engine.connect() as conn:
            rows = _fetch(conn, filters, order, want, after=after, only_surgeon=only_surgeon)
        for r in rows:
            yield _row(r)
        left -= len(rows)
        if len(rows) < want:
            return
        after = _key_values(rows[-1], order)


# --------------------------------------------------------------------------- cursors


def encode_cursor(order: Order, values: Sequence[Any]) -> str:
    """An opaque page cursor: the sort it belongs to and the row's key, base64url JSON."""
    shown = [v.astimezone(UTC).isoformat() if isinstance(v, datetime) else v for v in values]
    raw = json.dumps([order.key, int(order.descending), *shown], separators=(",", ":"),
                     ensure_ascii=True)
    return base64.urlsafe_b64encode(raw.encode("ascii")).decode("ascii").rstrip("=")


def decode_cursor(text: str, order: Order) -> list[Any]:
    """The key values of a cursor made by `encode_cursor` for `order`, each checked."""
    if not isinstance(text, str) or not 0 < len(text) <= MAX_CURSOR_CHARS:
        raise BadCursor("the cursor is empty or too long")
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
        data = json.loads(raw.decode("ascii"))
    except (binascii.Error, ValueError, UnicodeDecodeError, RecursionError):
        raise BadCursor("the cursor is not one of ours") from None
    if not isinstance(data, list) or len(data) < 2:
        raise BadCursor("the cursor is not one of ours")
    key, desc, *values = data
    if key != order.key or type(desc) is not int or desc != int(order.descending):
        raise BadCursor("the cursor belongs to another sort order")
    if order.key == "started":
        if len(values) != 2:
            raise BadCursor("the cursor is not one of ours")
        return [_cursor_time(values[0]), _cursor_case_id(values[1])]
    if len(values) != 3:
        raise BadCursor("the cursor is not one of ours")
    first = values[0]
    if order.key == "team":
        if not (isinstance(first, str) and (first == "" or TEAM_RE.fullmatch(first))):
            raise BadCursor("the cursor's team is not a team code")
    elif order.key == "outcome":
        if first not in OUTCOMES:
            raise BadCursor("the cursor's outcome is unknown")
    elif isinstance(first, bool) or not isinstance(first, int) or not -1 <= first <= _NEVER_ASC:
        raise BadCursor("the cursor's time to connect is not a number of milliseconds")
    return [first, _cursor_time(values[1]), _cursor_case_id(values[2])]


def _cursor_time(value: Any) -> datetime:
    if isinstance(value, str) and len(value) <= 40:
        try:
            when = datetime.fromisoformat(value)
        except ValueError:
            when = None
        if when is not None and when.tzinfo is not None and EARLIEST <= when < LATEST:
            return when.astimezone(UTC)
    raise BadCursor("the cursor's time is not a time")


def _cursor_case_id(value: Any) -> str:
    if isinstance(value, str) and CASE_ID_RE.fullmatch(value):
        return value
    raise BadCursor("the cursor's case id is not a case id")


# --------------------------------------------------------------------------- the filter form's choices


@dataclass(frozen=True)
class Choices:
    """What the filter form offers: (code, 中文, English) teams, (id, name) hospitals and surgeons."""

    teams: list[tuple[str, str, str]]
    hospitals: list[tuple[int, str]]
    surgeons: list[tuple[int, str]]


def filter_choices(engine: Engine) -> Choices:
    with engine.connect() as conn:
        teams = [tuple(r) for r in conn.execute(
            select(TeamRow.code, TeamRow.name_zh, TeamRow.name_en).order_by(TeamRow.code))]
        hospitals = [tuple(r) for r in conn.execute(
            select(PartnerHospitalRow.id, PartnerHospitalRow.name).order_by(PartnerHospitalRow.id))]
        surgeons = [tuple(r) for r in conn.execute(
            select(SurgeonRow.id, SurgeonRow.name).order_by(SurgeonRow.id))]
    return Choices(teams, hospitals, surgeons)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- the case detail


@dataclass(frozen=True)
class CaseContext:
    """Names the case record keeps only as ids: the partner hospital, the team."""

    hospital_name: str | None
    team_name_zh: str | None
    team_name_en: str | None


@dataclass(frozen=True)
class CaseNote:
    id: int
    case_id: str
    at: datetime
    user_id: int
    author: str  # the user's display name, else their username
    surgeon_id: int | None
    disposition: str | None  # one of DISPOSITIONS, or None: a plain note
    text: str


def case_context(engine: Engine, case_id: str) -> CaseContext:
    c = CASES.c
    with engine.connect() as conn:
        row = conn.execute(
            select(PartnerHospitalRow.name, TeamRow.name_zh, TeamRow.name_en)
            .select_from(CASES)
            .outerjoin(PartnerHospitalRow, PartnerHospitalRow.id == c.partner_hospital_id)
            .outerjoin(TeamRow, TeamRow.code == c.team)
            .where(c.case_id == case_id)).first()
    return CaseContext(*row) if row is not None else CaseContext(None, None, None)


def case_notes(engine: Engine, case_id: str, vault: Vault | None = None) -> list[CaseNote]:
    """The notes on a case, oldest first, opened with `vault` (sealed at rest)."""
    n = CaseNoteRow
    with engine.connect() as conn:
        rows = conn.execute(
            select(n.id, n.case_id, n.at, n.user_id, UserRow.display_name, UserRow.username,
                   n.surgeon_id, n.disposition, n.text)
            .join(UserRow, UserRow.id == n.user_id)
            .where(n.case_id == case_id).order_by(n.at, n.id))
        return [CaseNote(r.id, r.case_id, r.at, r.user_id, r.display_name or r.username,
                         r.surgeon_id, r.disposition, open_note(vault, r.text, r.case_id))
                for r in rows]


def seal_plain_notes(engine: Engine, vault: Vault, *, batch: int = 500) -> int:
    """Seal every note still stored plain (written without a vault: imported,
    generated, or before sealing was on); returns how many were sealed.

    Batch by batch by id, each batch in its own transaction, so a long backlog
    never holds one big lock; a note sealed meanwhile by another writer is
    left as it is (the update matches the plain text it read).
    """
    n = CaseNoteRow
    sealed, after = 0, 0
    while True:
        with engine.begin() as conn:
            rows = conn.execute(
                select(n.id, n.case_id, n.text)
                .where(n.id > after, ~n.text.startswith(NOTE_PREFIX, autoescape=True), n.text != "")
                .order_by(n.id).limit(batch)).all()
            for row in rows:
                sealed += conn.execute(
                    update(n).where(n.id == row.id, n.text == row.text)
                    .values(text=vault.seal_note(row.text, row.case_id))).rowcount
        if len(rows) < batch:
            return sealed
        after = rows[-1].id


def add_case_note(engine: Engine, case_id: str, *, user_id: int, surgeon_id: int | None,
                  text: str, disposition: str | None, at: datetime,
                  vault: Vault | None = None) -> int:
    """Write a note (and the disposition it records); returns its id.

    Text that no database can store (NUL, lone surrogates) becomes U+FFFD; with
    a vault the text is sealed (the disposition stays plain: the figures count it).
    """
    if disposition is not None and disposition not in DISPOSITIONS:
        raise ValueError(f"disposition: one of {', '.join(DISPOSITIONS)}")
    if not isinstance(text, str) or len(text) > MAX_NOTE:
        raise ValueError(f"a note is text of at most {MAX_NOTE} characters")
    if not text.strip() and disposition is None:
        raise ValueError("a note needs text or a disposition")
    with engine.begin() as conn:
        return conn.execute(insert(CaseNoteRow).values(
            case_id=case_id, at=at, user_id=user_id, surgeon_id=surgeon_id,
            disposition=disposition,
            text=seal_note(vault, _UNSTORABLE.sub("\ufffd", text), case_id),
        ).returning(CaseNoteRow.id)).scalar_one()

