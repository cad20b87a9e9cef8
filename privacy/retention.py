"""How long each kind of data is kept, and the cut-off that follows for a given `now`.

Pure: no clock, no I/O. The purge itself is `db.retention.purge`; the periods
come from the configuration (`retention_<kind>_days`) through `load_policy`.

Periods and why (docs/privacy.md has the long form):

- cases: the case record with its ring attempts, menu events, notes, referral
  (and its events) and callback task -- 15 years (5475 days), the minimum for
  outpatient and emergency medical records (门(急)诊病历) under the NHC's
  医疗机构病历管理规定 (2013) art. 29. A case is medical documentation of an
  emergency consultation, so it is kept like one.
- recordings: the bridged conversation and voicemail audio files -- 3 years.
  The case keeps its row; only the file goes, and `recording_path` /
  `voicemail_path` become NULL (`recording_s` and `voicemail_at` stay, so the
  record still says there was a recording and how long it was).
- audit: the console's audit log and the roster's change log -- 3 years; never
  under 6 months, the minimum for network logs under the Cybersecurity Law
  (网络安全法 art. 21(3)).
- notices: notification outbox rows already sent or given up -- 90 days.
- sessions: console sign-in sessions (they hold the IP address) -- 30 days.
- blocklist: block-list entries that were removed -- 1 year.
"""
from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, fields
from datetime import datetime, timedelta


class RetentionError(ValueError):
    """A retention setting makes no sense or breaks a legal minimum (the message says which)."""


class DataKind(str, enum.Enum):
    """A kind of personal data with its own retention period; the value names the config key."""

    CASES = "cases"
    RECORDINGS = "recordings"
    AUDIT = "audit"
    NOTICES = "notices"
    SESSIONS = "sessions"
    BLOCKLIST = "blocklist"

    @property
    def config_key(self) -> str:
        return f"retention_{self.value}_days"


CASE_RECORD_DAYS = 15 * 365  # 医疗机构病历管理规定 art. 29: outpatient/emergency records >= 15 years
# 网络安全法 art. 21(3): network logs >= 6 months. 184 days covers the longest
# six calendar months (July to December), so no reading of "6 months" is short.
AUDIT_MIN_DAYS = 184
# The outbox keeps a notice's key once (exactly-once delivery); producers look
# back at most a day (hotline.networkjobs, oncall.notices), so a sent notice
# must outlive that or it could be made and sent again.
NOTICES_MIN_DAYS = 7
# A console session lives 8 hours (console PERMANENT_SESSION_LIFETIME); the
# purge deletes by creation time, so a period shorter than that would sign
# people out.
SESSIONS_MIN_DAYS = 1
MAX_DAYS = 100 * 366  # beyond a century is a typo, and far enough to overflow datetime arithmetic

LABELS = {
    DataKind.CASES: ("病例记录(含呼叫尝试、菜单选择、备注、转诊、回拨任务)",
                     "case records with ring attempts, menu events, notes, referrals, callbacks"),
    DataKind.RECORDINGS: ("通话录音与语音留言文件", "call recordings and voicemail audio files"),
    DataKind.AUDIT: ("审计日志(控制台与排班变更)", "audit log (console and roster changes)"),
    DataKind.NOTICES: ("已发送的通知", "notification outbox rows already sent or given up"),
    DataKind.SESSIONS: ("控制台登录会话", "console sign-in sessions"),
    DataKind.BLOCKLIST: ("已解除的黑名单条目", "block-list entries already removed"),
}


@dataclass(frozen=True)
class RetentionPolicy:
    """Days each data kind is kept; checked on construction (RetentionError)."""

    cases_days: int = CASE_RECORD_DAYS
    recordings_days: int = 3 * 365
    audit_days: int = 3 * 365
    notices_days: int = 90
    sessions_days: int = 30
    blocklist_days: int = 365

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            # bool is an int to Python; "true" days is a config mistake, not 1.
            if not isinstance(value, int) or isinstance(value, bool):
                raise RetentionError(f"{f.name}: a whole number of days, not {type(value).__name__}")
            if value < 1:
                raise RetentionError(f"{f.name}: at least 1 day (got {value})")
            if value > MAX_DAYS:
                raise RetentionError(f"{f.name}: at most {MAX_DAYS} days (got {value})")
        if self.audit_days < AUDIT_MIN_DAYS:
            raise RetentionError(
                f"audit_days: at least {AUDIT_MIN_DAYS} days -- the Cybersecurity Law keeps "
                f"network logs 6 months or more (网络安全法第二十一条) (got {self.audit_days})")
        if self.recordings_days > self.cases_days:
            raise RetentionError(
                f"recordings_days ({self.recordings_days}) is longer than cases_days "
                f"({self.cases_days}): a recording cannot outlive its case")
        if self.notices_days < NOTICES_MIN_DAYS:
            raise RetentionError(
                f"notices_days: at least {NOTICES_MIN_DAYS} days, or a notice could be sent twice "
                f"(got {self.notices_days})")
        if self.sessions_days < SESSIONS_MIN_DAYS:
            raise RetentionError(f"sessions_days: at least {SESSIONS_MIN_DAYS} day")

    def days(self, kind: DataKind) -> int:
        return getattr(self, f"{DataKind(kind).value}_days")

    def warnings(self) -> list[str]:
        """Settings that are allowed but deserve a second look (printed by `hotline privacy policy`)."""
        out = []
        if self.cases_days < CASE_RECORD_DAYS:
            out.append(f"cases_days {self.cases_days} is under 15 years ({CASE_RECORD_DAYS} days), "
                       "the minimum for emergency medical records (医疗机构病历管理规定第二十九条)")
        return out


def load_policy(overrides: Mapping[str, int] | None = None) -> RetentionPolicy:
    """The default policy with `overrides` applied; raises RetentionError.

    Keys may be a kind ("recordings"), a field ("recordings_days") or a config
    key ("retention_recordings_days"); an unknown key is refused, not ignored,
    so a typo cannot silently keep the default.
    """
    names = {n: kind for kind in DataKind
             for n in (kind.value, f"{kind.value}_days", kind.config_key)}
    values: dict[str, int] = {}
    for key, value in (overrides or {}).items():
        kind = names.get(key) if isinstance(key, str) else None
        if kind is None:
            known = ", ".join(k.config_key for k in DataKind)
            raise RetentionError(f"unknown retention setting {str(key)[:60]!r} (known: {known})")
        values[f"{kind.value}_days"] = value
    return RetentionPolicy(**values)


def policy_from_config(config: object) -> RetentionPolicy:
    """The policy from a config's `retention_<kind>_days` attributes; one it lacks keeps its default.

    Duck-typed on purpose: `hotline.config.HotlineConfig` gains these keys
    without this module importing it.
    """
    overrides = {}
    for kind in DataKind:
        value = getattr(config, kind.config_key, None)
        if value is not None:
            overrides[kind.config_key] = value
    return load_policy(overrides)


def cutoffs(policy: RetentionPolicy, now: datetime) -> dict[DataKind, datetime]:
    """Per kind, the instant before which that data is due for deletion at `now`.

    Exactly `days` × 24 h back, in UTC: a day-aligned cut-off would only move
    the edge by hours on a period of years. A naive `now` raises ValueError.
    """
    if now.tzinfo is None or now.utcoffset() is None:
        raise ValueError("naive datetime: pass an aware `now`")
    return {kind: now - timedelta(days=policy.days(kind)) for kind in DataKind}
