"""Upload links and case photos in the database, their files beside the recordings.

A photo goes in as one transaction: claim a slot on the link (an UPDATE that
only matches a link still open for this case and not used up, so two phones
replaying one link at once cannot pass `max_uploads`), insert the row, write
the sealed JPEG and thumbnail (`photos.files`), set their paths, write the
audit row. If anything fails the transaction rolls back and the files written
for it are removed: no row without its file, no file without its row.

The caller's note is sealed like a case note (vault/, `note:<case id>`).
Every staff view of a photo is audited by the console (`view_photo`) before a
byte is served.
"""
from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

from sqlalchemy import Engine, insert, or_, select, update

from db.models import AuditRow, CasePhotoRow, CaseRow, SurgeonRow, TeamRow, UploadLinkRow
from db.users import audit_row
from photos.delivery import CASE_OPEN_ACTOR, PHONE_VIEW_ACTOR, AcceptedCase, OpenCase, Try
from photos.files import read_photo, seal_photo, write_atomic
from photos.images import ProcessedPhoto
from photos.links import (DEFAULT_MAX_UPLOADS, DEFAULT_TTL, LinkError, LinkRefusal, UploadLink,
                          link_terms, looks_like_token, may_upload, new_token, same_hash,
                          token_hash)
from photos.rules import clean_note, photo_paths
from vault import Vault, open_note, seal_note

logger = logging.getLogger(__name__)
UTC = timezone.utc


class LinkClosed(Exception):
    """The link may not take this photo; `refusal` says why (for logs and tests only)."""

    def __init__(self, refusal: LinkRefusal) -> None:
        super().__init__(refusal.value)
        self.refusal = refusal


@dataclass(frozen=True)
class CasePhoto:
    id: int
    case_id: str
    link_id: int | None
    at: datetime
    note: str  # opened (or the vault's marker when it cannot be)
    path: str
    thumb_path: str
    bytes: int
    width: int
    height: int
    sha256: str
    sender: str


def _link(row) -> UploadLink:
    return UploadLink(row.id, row.case_id, row.token_hash, row.created_at, row.expires_at,
                      row.max_uploads, row.uploads, row.revoked_at, row.created_by)


class PhotoStore:
    """Links and photos of cases; files under `root` (the recordings dir)."""

    def __init__(self, engine: Engine, root: Path, vault: Vault | None,
                 clock: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self.engine = engine
        self.root = Path(root)
        self.vault = vault
        self.clock = clock

    # -- links ----------------------------------------------------------------------
    def create_link(self, case_id: str, *, by: str, ttl: timedelta = DEFAULT_TTL,
                    max_uploads: int = DEFAULT_MAX_UPLOADS, ip: str = "") -> tuple[str, UploadLink]:
        """A new link for the case: (token, link). The token is shown once and kept nowhere."""
        now = self.clock()
        expires_at, max_uploads = link_terms(now, ttl, max_uploads)
        token = new_token()
        with self.engine.begin() as conn:
            if conn.execute(select(CaseRow.case_id).where(CaseRow.case_id == case_id)).first() is None:
                raise LinkError("no such case")
            link_id = conn.execute(insert(UploadLinkRow).values(
                case_id=case_id, token_hash=token_hash(token), created_at=now,
                expires_at=expires_at, max_uploads=max_uploads, uploads=0, created_by=by[:128],
            )).inserted_primary_key[0]
            audit_row(conn, now, by, "create_upload_link", "case", case_id,
                      {"link": link_id, "expires_at": expires_at.isoformat(),
                       "max_uploads": max_uploads}, ip=ip)
            row = conn.execute(select(UploadLinkRow).where(UploadLinkRow.id == link_id)).one()
        return token, _link(row)

    def link_for(self, token: str) -> UploadLink | None:
        """The link a token names, whatever its state; None for anything else."""
        if not looks_like_token(token):
            return None
        with self.engine.connect() as conn:
            row = conn.execute(select(UploadLinkRow).where(
                UploadLinkRow.token_hash == token_hash(token))).first()
        if row is None:
            return None
        link = _link(row)
        return link if same_hash(link, token) else None

    def links_of(self, case_id: str) -> list[UploadLink]:
        with self.engine.connect() as conn:
            rows = conn.execute(select(UploadLinkRow).where(UploadLinkRow.case_id == case_id)
                                .order_by(UploadLinkRow.id)).all()
        return [_link(r) for r in rows]

    def revoke_link(self, case_id: str, link_id: int, *, by: str, ip: str = "") -> bool:
        """Close a link of this case now; False if there is none or it was closed already."""
        now = self.clock()
        with self.engine.begin() as conn:
            done = conn.execute(update(UploadLinkRow).where(
                UploadLinkRow.id == link_id, UploadLinkRow.case_id == case_id,
                UploadLinkRow.revoked_at.is_(None)).values(revoked_at=now)).rowcount == 1
            if done:
                audit_row(conn, now, by, "revoke_upload_link", "case", case_id, {"link": link_id},
                          ip=ip)
        return done

    def record_delivery(self, case_id: str, link_id: int, *, by: str, sent: list[str],
                        failed: list[str], to: str, ip: str = "") -> None:
        """Audit a link's delivery (`send_upload_link`): the channels it went out on and
        those that failed; `to` is the caller's number *masked*. A delivery that failed
        everywhere revokes its link in the same transaction: a link nobody got stays closed."""
        now = self.clock()
        with self.engine.begin() as conn:
            if not sent:
                conn.execute(update(UploadLinkRow).where(
                    UploadLinkRow.id == link_id, UploadLinkRow.case_id == case_id,
                    UploadLinkRow.revoked_at.is_(None)).values(revoked_at=now))
            audit_row(conn, now, by, "send_upload_link", "case", case_id,
                      {"link": link_id, "sent": sent, "failed": failed, "to": to[:32]}, ip=ip)

    def young_cases(self, since: datetime) -> list[OpenCase]:
        """Cases started at or after `since` that have not ended: the case-open job's candidates."""
        c = CaseRow
        with self.engine.connect() as conn:
            rows = conn.execute(select(c.case_id, c.caller_number, c.caller_class, c.outcome,
                                       c.team, c.started_at, c.ended_at)
                                .where(c.started_at >= since, c.ended_at.is_(None))
                                .order_by(c.started_at).limit(500)).all()
        return [OpenCase(*r) for r in rows]

    def accepted_cases(self, since: datetime) -> list[AcceptedCase]:
        """Cases a surgeon accepted at or after `since`, with that surgeon's phone."""
        c, s, team = CaseRow, SurgeonRow, TeamRow
        with self.engine.connect() as conn:
            rows = conn.execute(select(c.case_id, c.team, c.connected_at, c.connected_surgeon_id, s.phone,
                                       team.name_zh)
                                .join(s, s.id == c.connected_surgeon_id, isouter=True)
                                .join(team, team.code == c.team, isouter=True)
                                .where(c.connected_at >= since, c.connected_surgeon_id.is_not(None))
                                .order_by(c.connected_at).limit(500)).all()
        return [AcceptedCase(*r) for r in rows]

    def phone_view_sent(self, case_id: str) -> bool:
        """Whether the accepting surgeon was already texted this case's phone view (its audit row)."""
        with self.engine.connect() as conn:
            return conn.execute(select(AuditRow.id).where(
                AuditRow.subject == "case", AuditRow.subject_id == case_id,
                AuditRow.action == "send_phone_view").limit(1)).first() is not None

    def record_phone_view(self, case_id: str, surgeon_id: int, *, sent: bool, to: str) -> None:
        """Audit the phone view's SMS to the accepting surgeon (`to` masked); one row per
        case whether it went or not: the job does not text a surgeon twice."""
        with self.engine.begin() as conn:
            audit_row(conn, self.clock(), PHONE_VIEW_ACTOR, "send_phone_view", "case", case_id,
                      {"surgeon": surgeon_id, "sent": sent, "to": to[:32]})

    def case_open_tries(self, case_id: str) -> list[Try]:
        """The links the case-open job made for this case (revoked: a try that failed)."""
        with self.engine.connect() as conn:
            rows = conn.execute(select(UploadLinkRow.id, UploadLinkRow.created_at,
                                       UploadLinkRow.revoked_at)
                                .where(UploadLinkRow.case_id == case_id,
                                       UploadLinkRow.created_by == CASE_OPEN_ACTOR)
                                .order_by(UploadLinkRow.id)).all()
        return [Try(*r) for r in rows]

    # -- photos ---------------------------------------------------------------------
    def add_photo(self, link: UploadLink, photo: ProcessedPhoto, *, note: str = "",
                  case_id: str | None = None, sender: str = "caller", ip: str = "") -> CasePhoto:
        """Store one processed photo through `link`; raises LinkClosed, photos.rules.NoteError."""
        now = self.clock()
        refusal = may_upload(link, now, 1, case_id)
        if refusal is not None:
            raise LinkClosed(refusal)
        text = clean_note(note)
        case_id = link.case_id
        written: list[Path] = []
        try:
            with self.engine.begin() as conn:
                claimed = conn.execute(update(UploadLinkRow).where(
                    UploadLinkRow.id == link.id, UploadLinkRow.case_id == case_id,
                    or_(UploadLinkRow.revoked_at.is_(None), UploadLinkRow.revoked_at > now),
                    UploadLinkRow.expires_at > now,
                    UploadLinkRow.uploads < UploadLinkRow.max_uploads,
                ).values(uploads=UploadLinkRow.uploads + 1)).rowcount
                if claimed != 1:
                    # Closed since it was read (another upload took the last slot,
                    # someone revoked it): the reason from the row as it is now.
                    row = conn.execute(select(UploadLinkRow).where(
                        UploadLinkRow.id == link.id)).first()
                    raise LinkClosed(may_upload(_link(row) if row else None, now)
                                     or LinkRefusal.USED_UP)
                photo_id = conn.execute(insert(CasePhotoRow).values(
                    case_id=case_id, link_id=link.id, at=now, note=seal_note(self.vault, text, case_id),
                    path="", thumb_path="", bytes=len(photo.jpeg), width=photo.width,
                    height=photo.height, sha256=photo.sha256, sender=sender,
                )).inserted_primary_key[0]
                rel, thumb_rel = photo_paths(case_id, photo_id)
                for stored, data in ((rel, photo.jpeg), (thumb_rel, photo.thumb)):
                    path = self.root / stored
                    written.append(path)
                    write_atomic(path, seal_photo(data, case_id, self.vault))
                conn.execute(update(CasePhotoRow).where(CasePhotoRow.id == photo_id)
                             .values(path=rel, thumb_path=thumb_rel))
                audit_row(conn, now, f"upload_link:{link.id}", "upload_photo", "case", case_id,
                          {"photo": photo_id, "bytes": len(photo.jpeg), "kind": photo.kind.value,
                           "sender": sender}, ip=ip)
        except BaseException:
            for path in written:
                path.unlink(missing_ok=True)
            raise
        return self.photo(case_id, photo_id)  # type: ignore[return-value]

    def photos_of(self, case_id: str) -> list[CasePhoto]:
        """The case's photos, oldest first."""
        with self.engine.connect() as conn:
            rows = conn.execute(select(CasePhotoRow).where(CasePhotoRow.case_id == case_id)
                                .order_by(CasePhotoRow.at, CasePhotoRow.id)).all()
        return [self._photo(r) for r in rows]

    def photos_after(self, case_id: str, after_id: int = 0, limit: int = 100) -> list[CasePhoto]:
        """The case's photos with an id above `after_id` (what a polling page has not got), oldest first."""
        with self.engine.connect() as conn:
            rows = conn.execute(select(CasePhotoRow).where(CasePhotoRow.case_id == case_id,
                                                           CasePhotoRow.id > after_id)
                                .order_by(CasePhotoRow.id).limit(limit)).all()
        return [self._photo(r) for r in rows]

    def photo(self, case_id: str, photo_id: int) -> CasePhoto | None:
        """The photo if it is this case's: another case's photo id is None, as an unknown one."""
        with self.engine.connect() as conn:
            row = conn.execute(select(CasePhotoRow).where(
                CasePhotoRow.id == photo_id, CasePhotoRow.case_id == case_id)).first()
        return self._photo(row) if row is not None else None

    def read(self, photo: CasePhoto, *, thumb: bool = False) -> bytes:
        """The JPEG (opened in memory). Raises photos.files.OutsidePhotos, OSError, VaultError."""
        return read_photo(self.root, photo.thumb_path if thumb else photo.path, photo.case_id,
                          self.vault)

    def _photo(self, row) -> CasePhoto:
        return CasePhoto(row.id, row.case_id, row.link_id, row.at,
                         open_note(self.vault, row.note, row.case_id), row.path, row.thumb_path,
                         row.bytes, row.width, row.height, row.sha256, row.sender)
