"""Bring the Twilio carrier's recordings home: download, attach, delete at Twilio.

A Twilio call's recording (and a voicemail) first reaches the case as the URL
Twilio's recording callback named (`carrier.twilio_voice.recording`). This
module fetches each one into the recordings dir -- the same place, access
rules and player as the Asterisk path's MixMonitor files -- points the case at
the local file, seals it at rest (vault/), and then deletes the recording at Twilio, so patients' voices
are not left with a third party (docs/twilio.md).

Surprising on purpose:
- Only the recording's *path* is taken from the case; the host is always the
  configured API base (`twilio_base_url`, else https://api.twilio.com), and the
  account in the path must be ours. A crafted URL cannot send our credentials
  elsewhere.
- The case is pointed at the file before the Twilio copy is deleted: a crash
  in between leaves a copy at Twilio (audited), never a case without audio.
- Failures back off per recording (in memory); a process restart retries at once.
"""
from __future__ import annotations

import logging
import os
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

import requests
from sqlalchemy import Engine, or_, select, tuple_

from cases import lifecycle
from cases.lifecycle import Case, CaseError
from db.repo import CASES, CaseRepository
from db.users import AuditLog
from recordings.prompts import wav_duration_s
from vault import Vault, VaultError, seal_file

logger = logging.getLogger(__name__)

TWILIO_API = "https://api.twilio.com"
REMOTE = re.compile(
    r"https://api\.twilio\.com(/2010-04-01/Accounts/(AC[0-9a-f]{32})/Recordings/(RE[0-9a-f]{32}))",
    re.ASCII)
CASE_ID = re.compile(r"[0-9A-Za-z][0-9A-Za-z-]{0,63}", re.ASCII)
REMOTE_PREFIX = "https://api.twilio.com/"
MAX_BYTES = 256 * 1024 * 1024  # a 2-hour mono 8 kHz WAV is ~115 MB; dual-channel twice
CHUNK = 64 * 1024
AUDIT_ACTOR = "twilio"
FETCHED = "twilio_recording_fetched"
NOT_DELETED = "twilio_recording_not_deleted"
BACKOFF_MAX_S = 3600.0


@dataclass(frozen=True)
class RemoteRecording:
    """One recording of a case that is still at Twilio."""

    case_id: str
    kind: str  # "call" | "voicemail"
    url: str  # as the case holds it
    path: str  # /2010-04-01/Accounts/AC.../Recordings/RE...
    account_sid: str
    recording_sid: str

    def local_name(self) -> str:
        """The file name in the recordings dir: built only from validated parts."""
        return f"twilio-{self.case_id}-{self.kind}-{self.recording_sid}.wav"


def remote_recordings(case: Case) -> list[RemoteRecording]:
    """The case's recordings that are Twilio URLs (anything else is left alone)."""
    found = []
    if not CASE_ID.fullmatch(case.case_id):
        return found
    for kind, value in (("call", case.recording_path), ("voicemail", case.voicemail_path)):
        match = REMOTE.fullmatch(value or "")
        if match:
            found.append(RemoteRecording(case.case_id, kind, value, match.group(1),
                                         match.group(2), match.group(3)))
    return found


class FetchError(Exception):
    """A recording could not be brought home this time; the case is unchanged."""


@dataclass
class FetchSummary:
    fetched: int = 0
    failed: int = 0
    deleted: int = 0
    not_deleted: int = 0
    skipped: int = 0  # backing off after an earlier failure

    def __str__(self) -> str:
        return (f"fetched {self.fetched}, failed {self.failed}, deleted at Twilio {self.deleted}, "
                f"not deleted {self.not_deleted}, waiting to retry {self.skipped}")


class RecordingFetcher:
    """Downloads the recordings still at Twilio for cases started in the last `window`."""

    def __init__(self, engine: Engine, recordings_dir: Path, account_sid: str, token: str, *,
                 base_url: str = "", delete_at_twilio: bool = True,
                 clock: Callable[[], datetime] | None = None,
                 window: timedelta = timedelta(days=14), timeout_s: float = 30.0,
                 max_bytes: int = MAX_BYTES, session: requests.Session | None = None,
                 monotonic: Callable[[], float] = time.monotonic,
                 vault: Vault | None = None) -> None:
        if not re.fullmatch(r"AC[0-9a-f]{32}", account_sid or "", re.ASCII):
            raise ValueError("a Twilio account SID is AC followed by 32 hex digits")
        if not token:
            raise ValueError("the Twilio auth token is needed to fetch recordings")
        self._engine = engine
        self._clock = clock or (lambda: datetime.now(timezone.utc))
        self._cases = CaseRepository(engine, clock=self._clock)
        self._audit = AuditLog(engine, clock=self._clock)
        self._dir = Path(recordings_dir)
        self._sid = account_sid
        self._auth = (account_sid, token)
        self._base = (base_url or TWILIO_API).rstrip("/")
        self._delete = delete_at_twilio
        self._window = window
        self._timeout = (5.0, timeout_s)
        self._max_bytes = max_bytes
        self._http = session or requests.Session()
        self._monotonic = monotonic
        self._vault = vault  # seals the fetched file once the case points at it
        self._failures: dict[str, tuple[int, float]] = {}  # url -> (count, retry after)

    # -- which cases ---------------------------------------------------------
    def pending_case_ids(self, since: datetime | None = None,
                         limit: int = 100) -> list[str]:
        """Cases started since `since` (default: the window) holding a Twilio URL, oldest first.

        All of them, read `limit` at a time: recordings that keep failing must
        not hide newer ones behind them.
        """
        since = since or self._clock() - self._window
        remote = REMOTE_PREFIX + "%"
        found: list[str] = []
        after: tuple[datetime, str] | None = None
        with self._engine.connect() as conn:
            while True:
                query = (select(CASES.c.started_at, CASES.c.case_id)
                         .where(CASES.c.started_at >= since)
                         .where(or_(CASES.c.recording_path.like(remote),
                                    CASES.c.voicemail_path.like(remote))))
                if after is not None:
                    query = query.where(tuple_(CASES.c.started_at, CASES.c.case_id) > after)
                rows = conn.execute(query.order_by(CASES.c.started_at, CASES.c.case_id)
                                    .limit(limit)).all()
                found.extend(row.case_id for row in rows)
                if len(rows) < limit:
                    return found
                after = (rows[-1].started_at, rows[-1].case_id)

    # -- one round -----------------------------------------------------------
    def run_once(self, since: datetime | None = None) -> FetchSummary:
        """Fetch what is pending now; never raises for one recording's failure."""
        summary = FetchSummary()
        for case_id in self.pending_case_ids(since=since):
            case = self._cases.get(case_id)
            if case is None:
                continue
            for remote in remote_recordings(case):
                if not self._due(remote.url):
                    summary.skipped += 1
                    continue
                try:
                    deleted = self.fetch(remote)
                except FetchError as exc:
                    summary.failed += 1
                    self._failed(remote.url)
                    logger.warning("twilio recording of case %s (%s) not fetched: %s",
                                   remote.case_id, remote.kind, exc)
                    continue
                self._failures.pop(remote.url, None)
                summary.fetched += 1
                if deleted is True:
                    summary.deleted += 1
                elif deleted is False:
                    summary.not_deleted += 1
        return summary

    def fetch(self, remote: RemoteRecording) -> bool | None:
        """Download one recording, attach it, delete it at Twilio.

        Returns whether the Twilio copy was deleted (None: not asked to).
        Raises FetchError when the case could not be pointed at a local file.
        """
        if remote.account_sid != self._sid:
            raise FetchError("the recording belongs to another Twilio account")
        self._dir.mkdir(parents=True, exist_ok=True)
        target = self._dir / remote.local_name()
        if not target.is_file():
            self._download(remote, target)
        seconds = wav_duration_s(target)
        if seconds is None:
            target.unlink(missing_ok=True)
            raise FetchError("the downloaded file is not a WAV recording")
        self._attach(remote, str(target))
        if self._vault is not None:
            try:
                seal_file(target, self._vault)
            except (OSError, VaultError) as exc:  # the hourly sweep seals it later
                logger.error("sealing the fetched recording of case %s failed (%s)",
                             remote.case_id, type(exc).__name__)
        self._audit.record(AUDIT_ACTOR, FETCHED, "case", remote.case_id,
                           detail={"kind": remote.kind, "recording_sid": remote.recording_sid,
                                   "seconds": round(seconds)})
        if not self._delete:
            return None
        return self._delete_remote(remote)

    def _download(self, remote: RemoteRecording, target: Path) -> None:
        part = target.with_name(target.name + ".part")
        try:
            with self._http.get(self._base + remote.path + ".wav", auth=self._auth,
                                timeout=self._timeout, stream=True,
                                allow_redirects=False) as answer:
                if answer.status_code != 200:
                    raise FetchError(f"Twilio answered HTTP {answer.status_code}")
                size = 0
                with open(part, "wb") as out:
                    for chunk in answer.iter_content(CHUNK):
                        size += len(chunk)
                        if size > self._max_bytes:
                            raise FetchError(f"larger than {self._max_bytes} bytes")
                        out.write(chunk)
                    out.flush()
                    os.fsync(out.fileno())
            with open(part, "rb") as check:
                head = check.read(12)
            if head[:4] != b"RIFF" or head[8:12] != b"WAVE":
                raise FetchError("the downloaded file is not a WAV recording")
            os.chmod(part, 0o600)  # the instance's own user only, like every file it writes
            os.replace(part, target)
        except requests.RequestException as exc:
            raise FetchError(f"{type(exc).__name__} talking to Twilio") from None
        finally:
            part.unlink(missing_ok=True)

    def _attach(self, remote: RemoteRecording, local: str) -> None:
        for _ in range(3):
            case = self._cases.get(remote.case_id)
            if case is None:
                raise FetchError("the case is gone")
            before = case.revision
            try:
                lifecycle.relocate_recording(case, self._clock(), remote.kind, remote.url, local)
            except CaseError as exc:
                raise FetchError(str(exc)) from None
            if case.revision == before or self._cases.save(case, expect_revision=before):
                return
        raise FetchError("the case kept changing while the recording was attached")

    def _delete_remote(self, remote: RemoteRecording) -> bool:
        try:
            answer = self._http.delete(self._base + remote.path + ".json", auth=self._auth,
                                       timeout=self._timeout, allow_redirects=False)
            ok = answer.status_code in (204, 404)  # 404: already gone
            reason = f"HTTP {answer.status_code}"
        except requests.RequestException as exc:
            ok, reason = False, type(exc).__name__
        if not ok:
            # The case already points at the local copy, so nothing retries this:
            # the audit row is what tells a person to delete it at Twilio.
            logger.warning("twilio recording %s of case %s fetched but not deleted at Twilio: %s",
                           remote.recording_sid, remote.case_id, reason)
            self._audit.record(AUDIT_ACTOR, NOT_DELETED, "case", remote.case_id,
                               detail={"recording_sid": remote.recording_sid, "reason": reason})
        return ok

    # -- backoff ---------------------------------------------------------------
    def _due(self, url: str) -> bool:
        _, after = self._failures.get(url, (0, 0.0))
        return self._monotonic() >= after

    def _failed(self, url: str) -> None:
        count, _ = self._failures.get(url, (0, 0.0))
        delay = min(BACKOFF_MAX_S, 30.0 * 2 ** count)
        self._failures[url] = (count + 1, self._monotonic() + delay)

    # -- the loop --------------------------------------------------------------
    def run_forever(self, stop: threading.Event, interval_s: float = 15.0) -> None:
        """Every `interval_s` until `stop` is set; a database outage only delays it."""
        while not stop.is_set():
            try:
                summary = self.run_once()
                if summary.fetched or summary.failed:
                    logger.info("twilio recordings: %s", summary)
            except Exception:
                logger.exception("twilio recordings: this round failed; trying again later")
            stop.wait(interval_s)
