"""vault/: recordings and notes sealed at rest (AES-256-GCM, keys outside the database)."""
from __future__ import annotations

import base64
import io
import os
import stat
import time
import wave
from pathlib import Path

import pytest

from vault import (MAGIC, NOTE_PREFIX, RECORDING, Vault, VaultError, is_sealed_file, load_keyring,
                   new_key, open_note, read_recording, seal_file, seal_note, seal_tree)


def wav_bytes(seconds: float = 1.0) -> bytes:
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(8000)
        w.writeframes(b"\x01\x02" * int(8000 * seconds))
    return buffer.getvalue()


def test_seal_and_open_round_trip_and_the_sealed_form_hides_the_data():
    vault = Vault([new_key()])
    plain = wav_bytes()
    sealed = vault.seal(plain, RECORDING)
    assert sealed.startswith(MAGIC) and plain[44:1044] not in sealed
    assert vault.open(sealed, RECORDING) == plain
    assert vault.seal(plain, RECORDING) != sealed  # a fresh nonce each time


def test_changed_or_misplaced_data_does_not_open():
    vault = Vault([new_key()])
    sealed = bytearray(vault.seal(b"patient audio", RECORDING))
    sealed[-1] ^= 1
    with pytest.raises(VaultError):
        vault.open(bytes(sealed), RECORDING)
    note = vault.seal_note("左手示指离断，冰袋保存", "C-1")
    assert vault.open_note(note, "C-1") == "左手示指离断，冰袋保存"
    with pytest.raises(VaultError):  # a note copied onto another case
        vault.open_note(note, "C-2")
    with pytest.raises(VaultError):
        Vault([new_key()]).open_note(note, "C-1")  # another key ring
    with pytest.raises(VaultError):
        vault.open_note(NOTE_PREFIX + "!!not base64!!", "C-1")
    for cut in (4, 8, 20, 35):  # a truncated file: the magic and part of the rest
        with pytest.raises(VaultError):
            vault.open(bytes(sealed)[:cut], RECORDING)


def test_plain_data_written_before_sealing_passes_through():
    vault = Vault([new_key()])
    assert vault.open(b"RIFF....WAVE", RECORDING) == b"RIFF....WAVE"
    assert vault.open_note("旧的明文备注", "C-1") == "旧的明文备注"
    assert open_note(None, "旧的明文备注", "C-1") == "旧的明文备注"


def test_without_a_vault_a_sealed_note_shows_as_sealed_and_never_raises():
    vault = Vault([new_key()])
    stored = seal_note(vault, "秘密", "C-1")
    assert stored.startswith(NOTE_PREFIX) and "秘密" not in stored
    assert open_note(None, stored, "C-1") == "[已加密 sealed]"
    assert open_note(Vault([new_key()]), stored, "C-1") == "[无法解密 cannot be opened]"
    assert seal_note(None, "明文", "C-1") == "明文"


def test_rotation_old_keys_open_and_files_are_resealed_with_the_new_key(tmp_path):
    old, new = new_key(), new_key()
    recording = tmp_path / "C-1.wav"
    recording.write_bytes(wav_bytes())
    assert seal_file(recording, Vault([old])) is True
    assert seal_file(recording, Vault([old])) is False  # already sealed with the current key
    rotated = Vault([new, old])
    assert read_recording(recording, rotated) == wav_bytes()
    assert seal_file(recording, rotated) is True  # re-sealed with the new key
    with pytest.raises(VaultError):
        read_recording(recording, Vault([old]))  # the old key alone no longer opens it
    assert read_recording(recording, Vault([new])) == wav_bytes()
    assert stat.S_IMODE(recording.stat().st_mode) == 0o600
    assert list(tmp_path.iterdir()) == [recording]  # no .sealing leftovers


def test_a_sealed_recording_needs_a_vault(tmp_path):
    recording = tmp_path / "C-1.wav"
    recording.write_bytes(wav_bytes())
    assert read_recording(recording, None) == wav_bytes() and not is_sealed_file(recording)
    seal_file(recording, Vault([new_key()]))
    assert is_sealed_file(recording)
    with pytest.raises(VaultError):
        read_recording(recording, None)


def test_the_key_ring_is_made_once_0600_and_checked(tmp_path):
    ring = tmp_path / "inst" / "data.key"
    keys = load_keyring(ring)
    assert len(keys) == 1 and len(keys[0]) == 32
    assert stat.S_IMODE(ring.stat().st_mode) == 0o600
    assert load_keyring(ring) == keys  # never overwritten
    with pytest.raises(FileNotFoundError):
        load_keyring(tmp_path / "missing.key", create=False)
    bad = tmp_path / "bad.key"
    bad.write_text("# comment\n" + base64.b64encode(b"short").decode() + "\n")
    with pytest.raises(ValueError, match="line 2"):
        load_keyring(bad)
    bad.write_text("# nothing but comments\n")
    with pytest.raises(ValueError, match="no key"):
        load_keyring(bad)
    with pytest.raises(ValueError):
        Vault([])


def test_the_sweep_seals_quiet_files_only_and_skips_symlinks(tmp_path):
    vault = Vault([new_key()])
    root = tmp_path / "recordings"
    (root / "2026").mkdir(parents=True)
    done, busy, outside = root / "2026" / "A.wav", root / "B.wav", tmp_path / "outside.wav"
    for path in (done, busy, outside):
        path.write_bytes(wav_bytes())
    (root / "link.wav").symlink_to(outside)
    now = time.time()
    os.utime(done, (now - 7200, now - 7200))
    assert seal_tree(root, vault, quiet_s=3600, now=now) == (1, 0)
    assert is_sealed_file(done) and not is_sealed_file(busy) and not is_sealed_file(outside)
    assert seal_tree(root, vault, quiet_s=3600, now=now) == (0, 0)  # nothing left to do
    assert seal_tree(root, vault, quiet_s=0, now=now + 1) == (1, 0)  # B is quiet now
    foreign = root / "C.wav"
    foreign.write_bytes(Vault([new_key()]).seal(wav_bytes(), RECORDING))
    assert seal_tree(root, vault, quiet_s=0, now=now + 2) == (0, 1)  # counted, not lost
    assert Path(foreign).read_bytes().startswith(MAGIC)
