"""`hotline hospital ...` and `hotline block ...` against a real database (SQLite and PostgreSQL)."""
from __future__ import annotations

import getpass

import pytest
from sqlalchemy import select

from db.blocklist import BlockList
from db.hospitals import HospitalStore
from db.models import AuditRow, PartnerHospitalRow
from db.seed import DEMO_HOSPITALS, seed_partners
from hotline.cli import main
from tests.support.db_helpers import count


@pytest.fixture
def hotline(engine, db_url, tmp_path, monkeypatch, capsys):
    """Run `hotline ...` in-process on the test database; returns (exit code, stdout, stderr)."""
    seed_partners(engine, DEMO_HOSPITALS)
    monkeypatch.setenv("HOTLINE_DATABASE_URL", db_url)
    monkeypatch.setenv("HOTLINE_VAR_DIR", str(tmp_path / "var"))
    monkeypatch.delenv("HOTLINE_CONFIG", raising=False)

    def run(*argv: str) -> tuple[int, str, str]:
        try:
            code = main(list(argv))
        except SystemExit as exc:  # argparse usage errors
            code = exc.code
        out = capsys.readouterr()
        return code, out.out, out.err
    return run


def test_import_dry_run_then_for_real_then_export_round_trips(hotline, engine, tmp_path):
    data = tmp_path / "directory.csv"
    data.write_bytes(("名称\t等级\t城市\t电话\t联系医生\n"
                      "梅河口市中心医院\t三甲\t梅河口市\t0435-8888 8806\t刘芳 副主任医师 13900000006\n"
                      ).encode("utf-16"))
    code, out, _ = hotline("hospital", "import", str(data), "--dry-run")
    assert code == 0 and "add    #6 梅河口市中心医院" in out and "dry run" in out
    assert count(engine, PartnerHospitalRow) == 5
    code, out, _ = hotline("hospital", "import", str(data))
    assert code == 0 and "1 added, 0 changed" in out and "written" in out
    assert HospitalStore(engine).get(6).numbers == ("043588888806",)
    with engine.connect() as conn:
        actor = conn.execute(select(AuditRow.actor).where(AuditRow.subject == "hospital")).scalar_one()
    assert actor == f"cli:{getpass.getuser()}"

    exported = tmp_path / "out.csv"
    assert hotline("hospital", "export", str(exported))[0] == 0
    assert exported.read_bytes().startswith(b"\xef\xbb\xbf")  # BOM: Excel reads it as UTF-8
    code, out, _ = hotline("hospital", "import", str(exported))
    assert code == 0 and "0 added, 0 changed, 6 unchanged" in out and "nothing to write" in out


def test_a_bad_file_exits_2_lists_every_line_and_writes_nothing(hotline, engine, tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("名称,等级,电话\n=cmd|' /C calc'!A0,三甲,13900000001\n好医院,四级,043188888888\n",
                   encoding="utf-8")
    code, out, err = hotline("hospital", "import", str(bad))
    assert code == 2
    assert "line 2, name" in out and "line 3, level" in out and "line 3, numbers" in out
    assert "nothing was changed" in err
    assert count(engine, PartnerHospitalRow) == 5 and count(engine, AuditRow) == 0
    assert hotline("hospital", "import", str(tmp_path / "missing.csv"))[0] == 2


def test_list_show_and_numbers(hotline, engine):
    code, out, _ = hotline("hospital", "list")
    assert code == 0 and "长春市中心医院" in out and "043188888888" in out
    code, out, _ = hotline("hospital", "show", "1")
    assert code == 0 and "calls 0" in out and "numbers / 登记号码: 043188888801, 043188888888" in out
    assert hotline("hospital", "show", "99")[0] == 2
    assert hotline("hospital", "show", "abc")[0] == 2  # argparse: a usage error
    code, out, _ = hotline("hospital", "add-number", "2", "+86 432 8888 8812")
    assert code == 0 and "043288888812" in out
    code, _, err = hotline("hospital", "add-number", "3", "043288888812")
    assert code == 1 and "refused" in err
    assert hotline("hospital", "add-number", "2", "not-a-number")[0] == 2
    assert hotline("hospital", "remove-number", "043288888812")[0] == 0
    assert hotline("hospital", "remove-number", "043288888812")[0] == 2


def test_block_add_list_remove_and_the_hospital_refusal(hotline, engine):
    code, _, err = hotline("block", "add", "043188888888", "--reason", "prank")
    assert code == 1 and "长春市中心医院" in err and "合作医院" in err
    assert hotline("block", "add", "junk!", "--reason", "x")[0] == 2
    assert hotline("block", "add", "13912345678")[0] == 2  # --reason is required
    code, out, _ = hotline("block", "add", "139 1234 5678", "--reason", "abusive\r\ncalls")
    assert code == 0 and "13912345678 blocked" in out
    assert hotline("block", "add", "13912345678", "--reason", "again")[0] == 1
    code, out, _ = hotline("block", "list")
    assert "13912345678" in out and "abusive calls" in out
    assert hotline("block", "remove", "13912345678")[0] == 0
    assert hotline("block", "remove", "13912345678")[0] == 1
    assert "13912345678" not in hotline("block", "list")[1]
    assert "13912345678" in hotline("block", "list", "--all")[1]
    assert BlockList(engine).active() == frozenset()


def test_every_verb_has_help(hotline):
    for argv in (("hospital", "--help"), ("hospital", "import", "--help"), ("block", "--help"),
                 ("block", "add", "--help")):
        code, out, _ = hotline(*argv)
        assert code == 0 and "usage:" in out
