"""Issue 9 part 5: the hostile-input battery against the real console process.

`hotline console` runs as its own process (waitress, real HTTP on a port in
37000-37999) over a database holding the attack world (web_world.py), on
SQLite and on PostgreSQL. One test per kind of hostile input; each sends it
into EVERY form field of the console -- the forms are found by fetching every
page as admin, a department head and a surgeon and parsing their <form>s, so a
new field is covered without touching this file -- into every path parameter,
and into every JSON field, query parameter and path parameter the OpenAPI
document lists. Every answer must be a clean 2xx/3xx/4xx (never 5xx, never a
traceback), carry no injected header, and show no markup it was sent; after
each test the console still answers, no table is gone, the people, cases and
tokens are as they were, and the console's log holds no traceback.
"""
from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterator
from dataclasses import dataclass, field, fields
from html.parser import HTMLParser
from urllib.parse import quote, quote_from_bytes, urljoin, urlsplit

import pytest
import requests
from sqlalchemy import Engine, func, select, update

from db.models import Base, PartnerHospitalRow
from tests.security.web_live import LiveConsole, database, world_console  # noqa: F401 (fixture)
from tests.security.web_world import WATCHED
from tests.support.console import console_app

# -- the hostile inputs ---------------------------------------------------------------

GB18030_TEXT = "颌面部创伤 王建国 13800000001"
PAYLOADS: dict[str, str | bytes] = {
    "sql_or": "' OR 1=1 --",
    "sql_drop": "'; DROP TABLE cases; --",
    "shell_subst": "$(reboot)",
    "shell_backtick": "`id`",
    "shell_chain": "; rm -rf /",
    "dialplan_trunk": "500&PJSIP/trunk/0014165551212",
    "dialplan_shell": "${SHELL(id)}",
    "crlf": "a\r\nSet-Cookie: x=1",
    "traversal": "../../etc/passwd",
    "markup": "\"'><script>alert(1)</script><img src=x onerror=alert(2)>",
    "nul": "a\x00b",
    "kb": "汉" * 350,  # a little over 1 kB in UTF-8
    "mb": "A" * (1024 * 1024),
    "invalid_utf8": b"\xff\xfe\xc3\x28\xa0\xa1\xe2\x28\xa1\xf0\x28\x8c\xbc",
    "gb18030": GB18030_TEXT.encode("gb18030"),
}
# Rows no form may add or remove, whatever it is sent.
FIXED = ("cases", "users", "surgeons", "teams", "api_tokens", "shifts", "dial_attempts")
# Forms that end the session or only switch the language: not attack surface.
SKIP_ACTIONS = ("/logout", "/lang/")
LEAKS = (b"Traceback", b"File \"/", b"site-packages", b"sqlalchemy.", b"psycopg.",
         b"postgresql+", b"sqlite:///", b"(Background on this error")
PORTS = range(37080, 37120)


# -- the console process (tests/security/web_live.py) ---------------------------------------


@dataclass
class Live(LiveConsole):
    forms: list["Form"] = field(default_factory=list)
    operations: list["Operation"] = field(default_factory=list)
    paths: list[str] = field(default_factory=list)  # GET pages with an id in them


@pytest.fixture(scope="module")
def live(database, tmp_path_factory) -> Iterator[Live]:
    with world_console(database, tmp_path_factory, "webhostile", PORTS) as running:
        found = Live(**{f.name: getattr(running, f.name) for f in fields(LiveConsole)})
        _more_forms(found)
        _discover(found)
        yield found


# -- finding every form and every API field ------------------------------------------------


@dataclass
class Form:
    who: str
    page: str
    method: str
    action: str
    fields: dict[str, str]  # name -> the value the page gave it
    files: tuple[str, ...] = ()
    token: str = ""

    def key(self) -> tuple:
        return (re.sub(r"\d+", "N", urlsplit(self.action).path), self.method,
                tuple(sorted(self.fields)), self.files)


class _Forms(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.forms: list[dict] = []
        self._form: dict | None = None
        self._textarea: str | None = None
        self._select: str | None = None

    def handle_starttag(self, tag, attrs):
        a = {k: v or "" for k, v in attrs}
        if tag == "form":
            self._form = {"method": (a.get("method") or "get").upper(), "action": a.get("action", ""),
                          "fields": {}, "files": []}
            self.forms.append(self._form)
        elif self._form is None or "name" not in a:
            return
        elif tag == "input":
            kind = a.get("type", "text").lower()
            if kind == "file":
                self._form["files"].append(a["name"])
            elif kind in ("checkbox", "radio"):
                if "checked" in a or a["name"] not in self._form["fields"]:
                    self._form["fields"][a["name"]] = a.get("value", "on") if "checked" in a else ""
            elif kind not in ("submit", "button", "image", "reset"):
                self._form["fields"][a["name"]] = a.get("value", "")
        elif tag == "textarea":
            self._textarea = a["name"]
            self._form["fields"][a["name"]] = ""
        elif tag == "select":
            self._select = a["name"]
            self._form["fields"].setdefault(a["name"], None)
        elif tag == "button" and a.get("value"):
            self._form["fields"][a["name"]] = a["value"]

    def handle_data(self, data):
        if self._form is not None and self._textarea:
            self._form["fields"][self._textarea] += data

    def handle_endtag(self, tag):
        if tag == "form":
            self._form = None
        elif tag == "textarea":
            self._textarea = None
        elif tag == "select":
            if self._form is not None and self._form["fields"].get(self._select) is None:
                self._form["fields"][self._select] = ""
            self._select = None

    def handle_startendtag(self, tag, attrs):
        self.handle_starttag(tag, attrs)


class _Options(HTMLParser):
    """The first (or the selected) option of each <select> -- a legitimate choice."""

    def __init__(self) -> None:
        super().__init__()
        self.chosen: dict[str, str] = {}
        self._select: str | None = None

    def handle_starttag(self, tag, attrs):
        a = {k: v or "" for k, v in attrs}
        if tag == "select":
            self._select = a.get("name")
        elif tag == "option" and self._select:
            if self._select not in self.chosen or "selected" in a:
                self.chosen[self._select] = a.get("value", "")

    def handle_endtag(self, tag):
        if tag == "select":
            self._select = None


def _pages(live: Live) -> list[str]:
    """Every GET page of the console, ids filled with things that exist."""
    w = live.world
    app = console_app(live.engine)  # in-process, only for its url_map
    values = {"case_id": w.other_case, "task_id": w.own_task, "referral_id": w.other_referral,
              "trade_id": w.other_trade, "hospital_id": 1}
    pages = []
    for rule in app.url_map.iter_rules():
        if "GET" not in rule.methods or rule.rule.startswith(("/api/", "/static/", "/lang/")):
            continue
        if set(rule.arguments) - values.keys():
            continue
        path = re.sub(r"<(?:[a-z]+:)?([a-z_]+)>", lambda m: str(values[m.group(1)]), rule.rule)
        pages.append(path)
        if rule.arguments:
            live.paths.append(rule.rule)
    return sorted(set(pages) | {f"/cases/{w.own_case}", "/callbacks/?view=all"})


def _more_forms(live: Live) -> None:
    """A blocked number and an incident in force, so their undo forms are on the pages."""
    admin = live.sessions["admin"]
    page = admin.get(live.url + "/hospitals/blocklist", timeout=30).text
    token = re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)
    for path, data in (("/hospitals/blocklist/add", {"number": "13912349999", "reason": "骚扰"}),
                       ("/incidents/on", {"team": "facial", "note": "drill"})):
        answer = admin.post(live.url + path, data={**data, "csrf_token": token},
                            allow_redirects=False, timeout=30)
        assert answer.status_code in (302, 303), (path, answer.status_code, answer.text[:300])


def _discover(live: Live) -> None:
    forms: dict[tuple, Form] = {}
    for who, session in live.sessions.items():
        for page in _pages(live):
            answer = session.get(live.url + page, timeout=60)
            if answer.status_code != 200 or "html" not in answer.headers.get("Content-Type", ""):
                continue
            token = re.search(r'name="csrf_token" value="([^"]+)"', answer.text)
            parser, options = _Forms(), _Options()
            parser.feed(answer.text)
            options.feed(answer.text)
            for raw in parser.forms:
                action = urljoin(live.url + page, raw["action"] or page)
                if urlsplit(action).netloc != urlsplit(live.url).netloc or any(
                        skip in action for skip in SKIP_ACTIONS):
                    continue
                fields = {name: (options.chosen.get(name, "") if value == "" and name in options.chosen
                                 else value) for name, value in raw["fields"].items()}
                form = Form(who, page, raw["method"], action, fields, tuple(raw["files"]),
                            token.group(1) if token else "")
                forms.setdefault(form.key(), form)
    live.forms = list(forms.values())
    document = requests.get(live.url + "/api/v1/openapi.json", timeout=30).json()
    live.operations = _operations(document)


@dataclass(frozen=True)
class Operation:
    method: str
    path: str  # with {params}
    path_params: tuple[str, ...]
    query: tuple[str, ...]
    body: tuple[str, ...]  # JSON properties
    raw_body: bool  # text/csv, text/calendar ...


def _resolve(schema: dict, document: dict) -> dict:
    while "$ref" in schema:
        schema = document["components"]["schemas"][schema["$ref"].rsplit("/", 1)[1]]
    return schema


def _operations(document: dict) -> list[Operation]:
    found = []
    for path, item in document["paths"].items():
        for method, op in item.items():
            if method not in ("get", "post", "put", "patch", "delete"):
                continue
            params = [p if "$ref" not in p else {"name": "?", "in": "?"} for p in op.get("parameters", [])]
            content = op.get("requestBody", {}).get("content", {})
            schema = _resolve(content.get("application/json", {}).get("schema", {}), document)
            found.append(Operation(method.upper(), path,
                                   tuple(p["name"] for p in params if p["in"] == "path"),
                                   tuple(p["name"] for p in params if p["in"] == "query"),
                                   tuple(schema.get("properties", {})),
                                   bool(content) and "application/json" not in content))
    return found


# -- sending, and what every answer must be ------------------------------------------------


def _encode(fields: dict[str, str | bytes]) -> bytes:
    """A form body; bytes values go as their raw bytes (invalid UTF-8, GB18030)."""
    def part(value: str | bytes) -> str:
        return quote_from_bytes(value if isinstance(value, bytes) else value.encode("utf-8"), safe="")
    return "&".join(f"{part(k)}={part(v)}" for k, v in fields.items()).encode("ascii")


def _as_text(payload: str | bytes) -> str:
    return payload if isinstance(payload, str) else payload.decode("latin-1")


def _check(answer: requests.Response, payload: str | bytes, what: str) -> None:
    body = answer.content
    assert answer.status_code < 500, f"{what}: {answer.status_code} {body[:300]!r}"
    for leak in LEAKS:
        assert leak not in body, f"{what}: {leak!r} in the answer"
    # No header injected: none named by the payload, no cookie it set, no CR/LF in any value.
    raw_headers = answer.raw.headers if answer.raw is not None else answer.headers
    for name, value in raw_headers.items():
        assert "\r" not in value and "\n" not in value, f"{what}: header {name} split"
        assert not (name.lower() == "set-cookie" and value.startswith("x=")), f"{what}: cookie set"
    if payload == PAYLOADS["markup"] and "html" in answer.headers.get("Content-Type", ""):
        assert b"<script>alert(1)" not in body and b"<img src=x" not in body, f"{what}: markup shown"


def _counts(engine: Engine) -> dict[str, int]:
    with engine.connect() as conn:
        return {name: conn.execute(select(func.count()).select_from(Base.metadata.tables[name]))
                .scalar_one() for name in WATCHED}


def _log_size(live: Live) -> int:
    return live.log.stat().st_size


def _still_whole(live: Live, before: dict[str, int], log_from: int) -> None:
    assert requests.get(live.url + "/login", timeout=30).status_code == 200, "the console died"
    after = _counts(live.engine)  # raises if any watched table is gone
    for name in FIXED:
        assert after[name] == before[name], f"{name}: {before[name]} -> {after[name]} rows"
    with live.log.open("rb") as log:
        log.seek(log_from)
        written = log.read().decode("utf-8", "replace")
    assert "Traceback" not in written, written[-3000:]


def _submit(live: Live, form: Form, fields: dict, files: dict | None = None) -> requests.Response:
    session = live.sessions[form.who]
    if form.method == "GET":
        query = _encode(fields).decode("ascii")
        return session.get(form.action.split("?")[0] + "?" + query, allow_redirects=False, timeout=120)
    body = {**fields}
    if form.token:
        body.setdefault("csrf_token", form.token)
    if files:
        return session.post(form.action, data={k: _as_text(v) for k, v in body.items()},
                            files=files, allow_redirects=False, timeout=120)
    return session.post(form.action, data=_encode(body), allow_redirects=False, timeout=120,
                        headers={"Content-Type": "application/x-www-form-urlencoded"})


def _api_value(payload: str | bytes):
    return payload if isinstance(payload, str) else payload.decode("utf-8", "surrogateescape")


def _api(live: Live, op: Operation, payload: str | bytes) -> Iterator[tuple[str, requests.Response]]:
    """Every way `payload` enters one API operation: each path parameter, each query
    parameter, each JSON property (then all at once), or the raw body."""
    bearer = {"Authorization": f"Bearer {live.world.tokens['admin']}"}
    segment = quote_from_bytes(payload if isinstance(payload, bytes) else payload.encode(), safe="")
    fill = {"case_id": live.world.other_case, "task_id": str(live.world.own_task),
            "referral_id": str(live.world.other_referral), "trade_id": str(live.world.other_trade),
            "leave_id": "999999", "override_id": "999999", "rotation_id": "999999",
            "team": "facial", "surgeon_id": "2"}
    base = live.url + re.sub(r"\{([a-z_]+)\}", lambda m: fill.get(m.group(1), "1"), op.path)

    def send(url: str, **kwargs) -> requests.Response:
        return requests.request(op.method, url, headers={**bearer, **kwargs.pop("headers", {})},
                                allow_redirects=False, timeout=120, **kwargs)

    for name in op.path_params:
        url = live.url + re.sub(r"\{([a-z_]+)\}", lambda m: segment if m.group(1) == name
                                else fill.get(m.group(1), "1"), op.path)
        yield f"{op.method} {op.path} path {name}", send(url)
    for name in op.query:
        yield f"{op.method} {op.path} ?{name}", send(f"{base}?{quote(name)}={segment}")
    if op.body:
        for name in op.body:
            yield f"{op.method} {op.path} .{name}", send(base, json={name: _api_value(payload)})
        yield f"{op.method} {op.path} all", send(base, json={n: _api_value(payload) for n in op.body})
    if op.method in ("POST", "PUT", "PATCH"):
        raw = payload if isinstance(payload, bytes) else payload.encode()
        kind = "text/csv" if op.raw_body else "application/json"
        yield f"{op.method} {op.path} raw", send(base, data=raw, headers={"Content-Type": kind})


# -- the tests ------------------------------------------------------------------------------


def test_the_battery_found_the_forms_and_the_api(live):
    """Guards the enumeration itself: if parsing broke, the battery would test nothing."""
    actions = {urlsplit(f.action).path for f in live.forms}
    fields = sum(len(f.fields) + len(f.files) for f in live.forms)
    print(f"{len(live.forms)} forms, {fields} form fields, {len(live.operations)} API operations, "
          f"{sum(len(o.body) + len(o.query) + len(o.path_params) for o in live.operations)} API "
          f"fields, {len(live.paths)} page paths with ids")
    for expected in ("/rosters/trades/offer", "/rosters/trades/swap", "/cases/C-", "/referrals/1/status",
                     "/hospitals/blocklist/remove", "/incidents/off", "/hospitals/import",
                     "/hospitals/blocklist/add", "/incidents/on", "/calls/"):
        assert any(a.startswith(expected) for a in actions), (expected, sorted(actions))
    assert len(live.forms) >= 20 and fields >= 50, (len(live.forms), fields)
    assert len(live.operations) >= 30
    assert sum(len(o.body) + len(o.query) + len(o.path_params) for o in live.operations) >= 40


@pytest.mark.parametrize("kind", list(PAYLOADS))
def test_hostile_input_in_every_form_field(live, kind):
    payload = PAYLOADS[kind]
    before, log_from = _counts(live.engine), _log_size(live)
    sent = 0
    for form in live.forms:
        for name in form.fields:
            answer = _submit(live, form, {**form.fields, name: payload})
            _check(answer, payload, f"{form.who} {form.method} {form.action} [{name}]")
            sent += 1
        for name in form.files:
            raw = payload if isinstance(payload, bytes) else payload.encode()
            answer = _submit(live, form, form.fields, files={name: ("x.csv", raw, "text/csv")})
            _check(answer, payload, f"{form.who} {form.action} file [{name}]")
            sent += 1
        # The query string of the form's action (e.g. ?view=) is input too.
        if form.method == "POST":
            hostile = Form(form.who, form.page, form.method,
                           form.action.split("?")[0] + "?view=" + quote_from_bytes(
                               payload if isinstance(payload, bytes) else payload.encode(), safe=""),
                           form.fields, form.files, form.token)
            _check(_submit(live, hostile, form.fields), payload, f"{form.action} ?view")
            sent += 1
    assert sent >= 50
    _still_whole(live, before, log_from)


@pytest.mark.parametrize("kind", list(PAYLOADS))
def test_hostile_input_in_every_path_parameter(live, kind):
    payload = PAYLOADS[kind]
    if kind == "mb":
        pytest.skip("1 MB in a URL is sent as query strings by the API test, not per page path")
    segment = quote_from_bytes(payload if isinstance(payload, bytes) else payload.encode(), safe="")
    before, log_from = _counts(live.engine), _log_size(live)
    assert live.paths
    for rule in live.paths:
        path = re.sub(r"<(?:[a-z]+:)?[a-z_]+>", segment, rule)
        for who, session in live.sessions.items():
            answer = session.get(live.url + path, allow_redirects=False, timeout=60)
            _check(answer, payload, f"{who} GET {path[:80]}")
            if answer.status_code in (301, 308):  # werkzeug merging the "//" a decoded %2F made
                assert urlsplit(answer.headers["Location"]).netloc in ("", urlsplit(live.url).netloc)
                continue
            assert answer.status_code in (400, 403, 404), (path[:80], answer.status_code)
    _still_whole(live, before, log_from)


@pytest.mark.parametrize("kind", list(PAYLOADS))
def test_hostile_input_in_every_api_field(live, kind):
    payload = PAYLOADS[kind]
    before, log_from = _counts(live.engine), _log_size(live)
    sent = 0
    for op in live.operations:
        for what, answer in _api(live, op, payload):
            _check(answer, payload, what)
            if answer.status_code >= 400 and answer.status_code != 431:
                assert answer.headers["Content-Type"].startswith("application/json"), what
            sent += 1
    assert sent >= 60
    _still_whole(live, before, log_from)


def test_hostile_cells_in_a_hospital_csv_and_a_formula_exported_guarded(live):
    """Import a directory whose cells carry the payloads, then export it: a cell
    that a spreadsheet would run as a formula comes back with a leading apostrophe."""
    session = live.sessions["admin"]
    before, log_from = _counts(live.engine), _log_size(live)
    token = re.search(r'name="csrf_token" value="([^"]+)"',
                      session.get(live.url + "/hospitals/import", timeout=30).text).group(1)
    header = "编号,名称,等级,城市,电话,联系医生\r\n".encode("utf-8")
    for kind, payload in PAYLOADS.items():
        cell = payload if isinstance(payload, bytes) else payload.encode()
        cell = b'"' + cell.replace(b'"', b'""') + b'"'
        for column in range(6):
            row = [b"", b"", b"", b"", b"", b""]
            row[column] = cell
            data = header + b",".join(row) + b"\r\n"
            answer = session.post(live.url + "/hospitals/import", data={"csrf_token": token},
                                  files={"file": ("h.csv", data, "text/csv")},
                                  allow_redirects=False, timeout=120)
            _check(answer, payload, f"csv {kind} column {column}")
    # A formula cell is refused at import (nothing is written) ...
    formulas = ("=cmd|' /C calc'!A0", "+1+1", "-2+3", "@SUM(A1)")
    for formula in formulas:
        quoted = formula.replace('"', '""')
        data = header + f'900,"{quoted}",三级甲等,"{quoted}",043190000000,\r\n'.encode()
        hospitals = _counts(live.engine)["partner_hospitals"]
        preview = session.post(live.url + "/hospitals/import", data={"csrf_token": token},
                               files={"file": ("h.csv", data, "text/csv")}, timeout=120)
        _check(preview, formula, f"csv formula {formula}")
        assert preview.status_code == 422 and 'name="digest"' not in preview.text, formula
        assert _counts(live.engine)["partner_hospitals"] == hospitals
    # ... and one that reached the database anyway (edited by hand) is exported guarded,
    # as is the hostile caller ID "=1+2" of case C-4 in the call list's export.
    with live.engine.begin() as conn:
        conn.execute(update(PartnerHospitalRow).where(PartnerHospitalRow.id == 1)
                     .values(name=formulas[0], city=formulas[2]))
    export = session.get(live.url + "/hospitals/export.csv", timeout=60)
    calls = session.get(live.url + "/calls/export.csv?from=2026-02-01&to=2026-03-11", timeout=60)
    assert export.status_code == 200 and calls.status_code == 200
    hospitals_csv = list(csv.reader(io.StringIO(export.content.decode("utf-8-sig"))))
    row = next(r for r in hospitals_csv if r[0] == "1")
    assert row[1] == "'" + formulas[0] and row[3] == "'" + formulas[2], row
    calls_csv = list(csv.reader(io.StringIO(calls.content.decode("utf-8-sig"))))
    cells = [cell for r in calls_csv for cell in r if "=1+2" in cell]
    assert cells and all(cell.startswith("'") for cell in cells), cells
    for table in (hospitals_csv, calls_csv):
        assert not [c for r in table for c in r if c[:1] in ("=", "+", "@") and len(c) > 1]
    _still_whole(live, before, log_from)
