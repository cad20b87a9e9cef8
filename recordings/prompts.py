"""Prompt audio: synthesised from the menu's texts with espeak-ng, 8 kHz mono WAV.

Synthesis is cached by a hash of (voice, text), so re-running after editing one
prompt re-synthesises only that one. A studio recording of the same name wins.
"""
from __future__ import annotations

import hashlib
import json
import logging
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Mapping

logger = logging.getLogger(__name__)

VOICES = {"zh": "cmn", "en": "en-us"}
HOLD_MUSIC = "hold_music"


def studio_dir() -> Path:
    return Path(__file__).resolve().parent / "studio"


def generate_prompts(
    prompts: Mapping[str, Mapping[str, str]], out_dir: Path, studio: Path | None = None
) -> list[Path]:
    """Write `<out_dir>/<lang>/<name>.wav` for every prompt; returns the files written anew."""
    studio = studio_dir() if studio is None else studio
    for tool in ("espeak-ng", "sox"):
        if shutil.which(tool) is None:
            raise RuntimeError(f"{tool} is not installed (apt-get install espeak-ng sox)")
    written: list[Path] = []
    for lang, texts in prompts.items():
        lang_dir = out_dir / lang
        lang_dir.mkdir(parents=True, exist_ok=True)
        manifest_path = lang_dir / "manifest.json"
        try:
            manifest = json.loads(manifest_path.read_text())
        except (OSError, ValueError):
            manifest = {}
        for name, text in texts.items():
            target = lang_dir / f"{name}.wav"
            studio_file = studio / lang / f"{name}.wav"
            if studio_file.is_file():
                key = "studio:" + _file_digest(studio_file)
                if manifest.get(name) != key or not target.exists():
                    _to_asterisk_wav(studio_file, target)
                    manifest[name] = key
                    written.append(target)
                continue
            key = hashlib.sha256(f"{VOICES[lang]}\0{text}".encode()).hexdigest()
            if manifest.get(name) == key and target.exists():
                continue
            _synthesise(text, VOICES[lang], target)
            manifest[name] = key
            written.append(target)
        manifest_path.write_text(json.dumps(manifest, indent=1, sort_keys=True))
    moh = out_dir / "moh" / f"{HOLD_MUSIC}.wav"
    if not moh.exists():
        moh.parent.mkdir(parents=True, exist_ok=True)
        _hold_music(moh)
        written.append(moh)
    return written


def _synthesise(text: str, voice: str, target: Path) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        raw = Path(tmp) / "raw.wav"
        # Text goes in on stdin, never on a command line, so no quoting issues.
        subprocess.run(
            ["espeak-ng", "-v", voice, "-s", "150", "-w", str(raw), "--stdin"],
            input=text.encode("utf-8"), check=True, capture_output=True, timeout=60,
        )
        _to_asterisk_wav(raw, target)


def _to_asterisk_wav(source: Path, target: Path) -> None:
    tmp = target.with_suffix(".tmp.wav")
    subprocess.run(
        ["sox", str(source), "-r", "8000", "-c", "1", "-b", "16", "-e", "signed-integer",
         str(tmp), "norm", "-3"],
        check=True, capture_output=True, timeout=60,
    )
    tmp.replace(target)


def _hold_music(target: Path) -> None:
    """A calm two-chord loop (30 s) so a caller on hold never hears silence."""
    tmp = target.with_suffix(".tmp.wav")
    subprocess.run(
        ["sox", "-n", "-r", "8000", "-c", "1", "-b", "16", str(tmp),
         "synth", "2", "sine", "392", "sine", "494", "sine", "587", "remix", "-",
         "fade", "q", "0.3", "2", "0.3", "repeat", "14", "vol", "0.25"],
        check=True, capture_output=True, timeout=60,
    )
    tmp.replace(target)


def _file_digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def wav_duration_s(path: Path) -> float | None:
    """Seconds of audio in a WAV file, or None when it is missing or not a WAV."""
    import wave

    try:
        with wave.open(str(path), "rb") as w:
            rate = w.getframerate()
            return w.getnframes() / float(rate) if rate > 0 else None
    except (OSError, EOFError, wave.Error):
        return None
