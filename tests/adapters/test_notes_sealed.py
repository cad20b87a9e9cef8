"""Case notes stored plain by any path are sealed by the service's sweep (issue 18 item 6)."""
from __future__ import annotations

from sqlalchemy import Engine, insert, select

from db.calls_query import add_case_note, case_notes, seal_plain_notes
from db.models import CaseNoteRow
from hotline.jobs import seal_recordings_job
from tests.adapters.test_privacy_purge import NOW, add_case, add_user
from vault import NOTE_PREFIX, Vault, new_key


def _stored(engine: Engine) -> dict[int, str]:
    with engine.connect() as conn:
        return dict(conn.execute(select(CaseNoteRow.id, CaseNoteRow.text)).all())


def _plain_note(engine: Engine, case_id: str, user: int, text: str) -> None:
    # As a generator, an import or an old version writes it: straight into the table.
    with engine.begin() as conn:
        conn.execute(insert(CaseNoteRow).values(case_id=case_id, at=NOW, user_id=user,
                                                surgeon_id=None, disposition="advice_only",
                                                text=text))


def test_plain_notes_are_sealed_once_and_read_back_whole(engine):
    vault = Vault([new_key()])
    user = add_user(engine)
    add_case(engine, "c-1", NOW, full=False)
    add_case(engine, "c-2", NOW, full=False)
    _plain_note(engine, "c-1", user, "左手示指离断, 已建议冷藏断指")
    _plain_note(engine, "c-2", user, "已回电。")
    _plain_note(engine, "c-2", user, "")  # a disposition alone: nothing to seal
    add_case_note(engine, "c-2", user_id=user, surgeon_id=None, text="已安排转运。",
                  disposition=None, at=NOW, vault=vault)
    already = {i: t for i, t in _stored(engine).items() if t.startswith(NOTE_PREFIX)}
    assert len(already) == 1

    assert seal_plain_notes(engine, vault, batch=1) == 2  # batches of one: paging is exercised
    stored = _stored(engine)
    assert all(t.startswith(NOTE_PREFIX) for t in stored.values() if t)
    assert "已回电" not in "".join(stored.values())
    assert {i: stored[i] for i in already} == already  # a sealed note is not sealed again
    assert [n.text for n in case_notes(engine, "c-1", vault)] == ["左手示指离断, 已建议冷藏断指"]
    assert sorted(n.text for n in case_notes(engine, "c-2", vault)) == ["", "已回电。", "已安排转运。"]
    assert seal_plain_notes(engine, vault) == 0  # nothing left


def test_the_hourly_sweep_seals_notes_beside_recordings(engine, tmp_path):
    vault = Vault([new_key()])
    user = add_user(engine)
    add_case(engine, "c-1", NOW, full=False)
    _plain_note(engine, "c-1", user, "护士已给予建议。")
    assert seal_recordings_job(tmp_path, vault, engine) == (1, 0)
    assert all(t.startswith(NOTE_PREFIX) for t in _stored(engine).values())
    assert seal_recordings_job(tmp_path, vault, engine) == (0, 0)
