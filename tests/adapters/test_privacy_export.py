"""One caller's data export (privacy.export) on SQLite and PostgreSQL, with real files."""
from __future__ import annotations

import json
import logging
import stat
import zipfile
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import Engine, select

from db.models import AuditRow
from hotline.config import HotlineConfig
from privacy.export import ExportError, export_patient
from tests.adapters.test_privacy_purge import (NOW, PATIENT, _cli, add_case, add_user, ago,
                                               snapshot)
from tests.support.db_helpers import write_wav

OTHER = "13800000000"
OTHER_NOTE = "OTHER PATIENT 另一位患者"


@pytest.fixture
def rec_dir(tmp_path: Path) -> Path:
    path = tmp_path / "recordings"
    path.mkdir()
    return path


@pytest.fixture
def out_dir(tmp_path: Path) -> Path:
    path = tmp_path / "out"
    path.mkdir()
    return path


def seed(engine: Engine, rec_dir: Path) -> dict[str, Path]:
    files = {}
    for name in ("p1-call", "p1-vm", "cb-call", "o-call", "o-vm"):
        files[name] = rec_dir / f"{name}.wav"
        write_wav(files[name], 0.1 + len(files) / 100)  # each a different length: distinct bytes
    user = add_user(engine)
    # The patient: two calls, one recorded with a voicemail too, notes and a referral each.
    add_case(engine, "p1", ago(30), recording=files["p1-call"], voicemail=files["p1-vm"],
             user_id=user)
    add_case(engine, "p2", ago(3), user_id=user)
    # The callback call the hotline placed back to them (its own case names p2).
    add_case(engine, "p2-callback", ago(2), number=None, linked="p2", recording=files["cb-call"],
             full=False)
    # A call from a withheld number whose callback task was to call the patient.
    add_case(engine, "anon", ago(10), number=None, callback_number=PATIENT)
    # Another caller, with everything too.
    add_case(engine, "o1", ago(5), number=OTHER, recording=files["o-call"], voicemail=files["o-vm"],
             user_id=user, note=OTHER_NOTE)
    return files


def read_zip(path: Path) -> dict[str, bytes]:
    with zipfile.ZipFile(path) as archive:
        assert archive.testzip() is None
        return {name: archive.read(name) for name in archive.namelist()}


def audits(engine: Engine) -> list:
    with engine.connect() as conn:
        return conn.execute(select(AuditRow).where(AuditRow.action == "privacy_export")).all()


def test_export_holds_exactly_that_numbers_cases_and_files(engine, rec_dir, out_dir, caplog):
    files = seed(engine, rec_dir)
    out = out_dir / "patient.zip"
    caplog.set_level(logging.DEBUG)
    summary = export_patient(engine, "+86 139 1234 5678", out, rec_dir, NOW, "cli:admin",
                             ip="127.0.0.1")
    assert summary.cases == 4 and summary.files == 3 and summary.missing_files == 0
    assert summary.masked_number == "139****5678"
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    assert sorted(p.name for p in out_dir.iterdir()) == ["patient.zip"]  # no temp file left

    members = read_zip(out)
    assert set(members) == {"README.txt", "cases.json", "recordings/p1-call.wav",
                            "recordings/p1-voicemail.wav", "recordings/p2-callback-call.wav"}
    assert members["recordings/p1-call.wav"] == files["p1-call"].read_bytes()
    assert members["recordings/p1-voicemail.wav"] == files["p1-vm"].read_bytes()
    assert members["recordings/p2-callback-call.wav"] == files["cb-call"].read_bytes()
    doc = json.loads(members["cases.json"])
    assert doc["number"] == PATIENT
    assert [c["case_id"] for c in doc["cases"]] == ["p1", "anon", "p2", "p2-callback"]
    p1 = doc["cases"][0]
    assert [m["choice"] for m in p1["menu_events"]] == ["2", "1"]
    assert [a["outcome"] for a in p1["attempts"]] == ["no-answer", "accepted"]
    assert all("phone" not in a for a in p1["attempts"])  # the surgeons' numbers are theirs
    assert p1["notes"][0]["text"].startswith("左手示指离断")
    assert p1["referral"]["status"] == "admitted"
    assert [e["status"] for e in p1["referral"]["events"]] == ["en_route", "admitted"]
    assert "actor" not in p1["referral"]["events"][0]
    assert p1["callback"]["number"] == PATIENT and "placed_by" not in p1["callback"]
    assert {n["kind"] for n in p1["notices"]} == {"missed_call", "callback_due"}
    assert p1["recording"] == {"included": True, "file": "recordings/p1-call.wav"}
    assert doc["cases"][1]["callback"]["number"] == PATIENT
    readme = members["README.txt"].decode()
    assert "139****5678" in readme and "个人信息保护法" in readme and "cases.json" in readme

    # Nothing of the other caller, anywhere in the zip.
    for name, data in members.items():
        assert OTHER.encode() not in data and OTHER_NOTE.encode() not in data, name
        assert data != files["o-call"].read_bytes() and data != files["o-vm"].read_bytes()

    (row,) = audits(engine)
    assert (row.actor, row.subject, row.subject_id, row.ip) == (
        "cli:admin", "number", "139****5678", "127.0.0.1")
    assert json.loads(row.detail) == {"cases": 4, "files": 3, "missing_files": 0,
                                      "bytes": out.stat().st_size}
    # The full number is in no audit row and no log line.
    with engine.connect() as conn:
        for r in conn.execute(select(AuditRow)):
            assert PATIENT not in f"{r.subject_id} {r.detail}"
    assert PATIENT not in caplog.text and "139****5678" in caplog.text


def test_a_number_with_no_cases_gives_an_empty_export(engine, rec_dir, out_dir):
    seed(engine, rec_dir)
    summary = export_patient(engine, "13700000000", out_dir / "none.zip", rec_dir, NOW, "cli:x")
    assert summary.cases == 0
    members = read_zip(out_dir / "none.zip")
    assert set(members) == {"README.txt", "cases.json"}
    assert json.loads(members["cases.json"])["cases"] == []
    assert len(audits(engine)) == 1


def test_an_existing_file_is_never_overwritten(engine, rec_dir, out_dir, tmp_path):
    seed(engine, rec_dir)
    existing = out_dir / "taken.zip"
    existing.write_bytes(b"keep me")
    with pytest.raises(ExportError, match="exists"):
        export_patient(engine, PATIENT, existing, rec_dir, NOW, "cli:x")
    assert existing.read_bytes() == b"keep me"
    # A symlink (even a dangling one) is a taken name too.
    link = out_dir / "link.zip"
    link.symlink_to(tmp_path / "elsewhere.zip")
    with pytest.raises(ExportError, match="exists"):
        export_patient(engine, PATIENT, link, rec_dir, NOW, "cli:x")
    assert not (tmp_path / "elsewhere.zip").exists()
    with pytest.raises(ExportError, match="directory"):
        export_patient(engine, PATIENT, out_dir / "no-such-dir" / "x.zip", rec_dir, NOW, "cli:x")
    assert sorted(p.name for p in out_dir.iterdir()) == ["link.zip", "taken.zip"]
    assert audits(engine) == []


@pytest.mark.parametrize("raw", [
    "139'; DROP TABLE cases; --", "13912345678' OR '1'='1", "139$(touch /tmp/pwned)",
    "13912345678; rm -rf /", "`id`", "1" * 1024, "x" * 1024, "１３９１２３４５６７８",
    "139１２３４５６７８", "13912345678\r\nINJECTED", "", "%", "_", "13912345678%",
])
def test_hostile_numbers_are_refused_cleanly(engine, rec_dir, out_dir, raw):
    seed(engine, rec_dir)
    before = snapshot(engine)
    with pytest.raises(ExportError) as caught:
        export_patient(engine, raw, out_dir / "x.zip", rec_dir, NOW, "cli:x")
    assert raw not in str(caught.value) or len(raw) <= 1
    assert list(out_dir.iterdir()) == []
    assert snapshot(engine) == before  # no audit row, nothing else either


def test_recordings_outside_the_dir_or_purged_are_left_out(engine, rec_dir, out_dir, tmp_path):
    secret = tmp_path / "secret.wav"
    write_wav(secret, 0.1)
    (rec_dir / "link.wav").symlink_to(secret)
    add_case(engine, "sym", ago(20), recording=rec_dir / "link.wav", full=False)
    add_case(engine, "dotdot", ago(19), voicemail=f"{rec_dir}/../secret.wav", full=False)
    add_case(engine, "remote", ago(18), recording="https://api.twilio.com/x/RE1", full=False)
    add_case(engine, "gone", ago(17), recording=rec_dir / "never.wav", full=False)
    add_case(engine, "purged", ago(16), full=False)
    from sqlalchemy import update

    from db.models import CaseRow
    with engine.begin() as conn:  # what the retention purge leaves: the length, no path
        conn.execute(update(CaseRow).where(CaseRow.case_id == "purged").values(recording_s=30))
    summary = export_patient(engine, PATIENT, out_dir / "p.zip", rec_dir, NOW, "cli:x")
    members = read_zip(out_dir / "p.zip")
    assert set(members) == {"README.txt", "cases.json"}
    assert secret.read_bytes() not in members.values()
    cases = {c["case_id"]: c for c in json.loads(members["cases.json"])["cases"]}
    assert cases["sym"]["recording"] == {"included": False, "reason": "not readable"}
    assert cases["dotdot"]["voicemail"] == {"included": False, "reason": "not readable"}
    assert cases["remote"]["recording"] == {"included": False, "reason": "still at the carrier"}
    assert cases["gone"]["recording"] == {"included": False, "reason": "file not found"}
    assert cases["purged"]["recording"] == {"included": False, "reason": "deleted (retention)"}
    assert summary.missing_files == 5
    assert "Audio not included: 5" in members["README.txt"].decode()


def test_sealed_data_is_opened_through_the_hooks(engine, rec_dir, out_dir):
    """Decryption plugs in through `read` and `open_note`: every audio byte and note goes through them."""
    seed(engine, rec_dir)
    seen = []

    def read(path: Path) -> bytes:
        seen.append(path.name)
        return b"decrypted:" + path.name.encode()

    export_patient(engine, PATIENT, out_dir / "p.zip", rec_dir, NOW, "cli:x", read=read,
                   open_note=lambda stored, case_id: f"opened({case_id}):{stored}")
    members = read_zip(out_dir / "p.zip")
    assert sorted(seen) == ["cb-call.wav", "p1-call.wav", "p1-vm.wav"]
    assert members["recordings/p1-call.wav"] == b"decrypted:p1-call.wav"
    notes = [n["text"] for c in json.loads(members["cases.json"])["cases"] for n in c["notes"]]
    assert notes == ["opened(p1):左手示指离断, 已建议冷藏断指", "opened(p2):左手示指离断, 已建议冷藏断指"]


def test_cli_export(engine, db_url, tmp_path, capsys):
    config = HotlineConfig(var_dir=tmp_path / "var", database_url=db_url)
    config.recordings_dir.mkdir(parents=True)
    seed(engine, config.recordings_dir)
    out = tmp_path / "cli.zip"
    assert _cli(config, ["privacy", "export", "--number", PATIENT, "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "4 case(s)" in printed and "139****5678" in printed and PATIENT not in printed
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    assert _cli(config, ["privacy", "export", "--number", PATIENT, "--out", str(out)]) == 2
    assert "exists" in capsys.readouterr().err
    assert _cli(config, ["privacy", "export", "--number", "１３９; rm -rf /",
                         "--out", str(tmp_path / "y.zip")]) == 2
    err = capsys.readouterr().err
    assert "not a phone number" in err and "rm -rf" not in err
    assert not (tmp_path / "y.zip").exists()
    assert [r.actor.startswith("cli:") for r in audits(engine)] == [True]


def test_made_at_is_now(engine, rec_dir, out_dir):
    add_case(engine, "one", NOW - timedelta(days=1), full=False)
    export_patient(engine, PATIENT, out_dir / "p.zip", rec_dir, NOW, "cli:x")
    assert json.loads(read_zip(out_dir / "p.zip")["cases.json"])["made_at"] == NOW.isoformat()


def test_cli_export_opens_sealed_recordings_and_notes(engine, db_url, tmp_path):
    """Sealed at rest (vault/), the copy handed to the patient is plain audio and text."""
    from vault import MAGIC, seal_file, seal_note

    config = HotlineConfig(var_dir=tmp_path / "var", database_url=db_url)
    config.recordings_dir.mkdir(parents=True)
    files = seed(engine, config.recordings_dir)
    vault = config.vault()
    plain = files["p1-call"].read_bytes()
    for path in files.values():
        seal_file(path, vault)
    assert files["p1-call"].read_bytes()[:4] == MAGIC
    from db.models import CaseNoteRow
    with engine.begin() as conn:
        for row in conn.execute(select(CaseNoteRow.id, CaseNoteRow.case_id, CaseNoteRow.text)).all():
            conn.execute(CaseNoteRow.__table__.update().where(CaseNoteRow.id == row.id)
                         .values(text=seal_note(vault, row.text, row.case_id)))
    out = tmp_path / "sealed.zip"
    assert _cli(config, ["privacy", "export", "--number", PATIENT, "--out", str(out)]) == 0
    members = read_zip(out)
    assert members["recordings/p1-call.wav"] == plain
    notes = [n["text"] for c in json.loads(members["cases.json"])["cases"] for n in c["notes"]]
    assert notes and all(not text.startswith("hlv1:") for text in notes)
