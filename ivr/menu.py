"""The menu config (ivr/menu.toml): loaded, validated, and handed to the renderer.

Validation is strict because every value ends up in a dialplan: keys are single
digits, team codes and prompt names are lower-case identifiers, numbers are
digits. A bad file fails `hotline render` with a message naming the field.
"""
from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass
from pathlib import Path

LANGUAGES = ("zh", "en")
_IDENT = re.compile(r"^[a-z][a-z0-9_]{0,31}$", re.ASCII)
_DIGITS = re.compile(r"^[0-9]{3,20}$", re.ASCII)
_KEY = re.compile(r"^[0-9]$", re.ASCII)

# Prompts every language must have; whisper prompts are only for surgeons (zh).
REQUIRED_PROMPTS = (
    "greeting", "partner_greeting", "invalid", "timeout", "to_nurse",
    "consent", "hold", "voicemail", "goodbye",
    "incident", "incident_queue",  # major-incident mode (docs/major-incidents.md)
)
SURGEON_PROMPTS = ("whisper_nurse", "whisper_partner", "press1")
# What a surgeon hears when the service places a callback (hotline-callback).
# A menu file may word them; otherwise these are used.
CALLBACK_SURGEON_PROMPTS = {
    "callback_whisper": "96608 热线回拨任务。按1开始回拨来电者，挂机则放弃。",
    "callback_unavailable": "回拨任务已失效，再见。",
}


class MenuError(ValueError):
    """The menu config is invalid; the message names the field."""


@dataclass(frozen=True)
class MenuOption:
    key: str
    team: str


@dataclass(frozen=True)
class Menu:
    number: str
    default_language: str
    english_key: str
    timeout_s: int
    max_retries: int
    duty_nurse_key: str
    duty_nurse_number: str
    duty_nurse_ring_s: int
    fallback_ring_s: int
    accept_timeout_s: int
    accept_tries: int
    record_calls: bool
    options: tuple[MenuOption, ...]
    prompts: dict[str, dict[str, str]]  # language -> prompt name -> text
    # "Call me back" (需要回拨请按8): the call ends with a confirmation and a
    # callback task opens. None: the menu has no such key.
    callback_key: str | None = None

    @property
    def teams(self) -> tuple[str, ...]:
        return tuple(o.team for o in self.options)

    def team_for_key(self, key: str) -> str | None:
        return next((o.team for o in self.options if o.key == key), None)


def load_menu(path: Path) -> Menu:
    try:
        data = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise MenuError(f"{path}: {exc}") from exc
    return parse_menu(data, source=str(path))


def parse_menu(data: dict, source: str = "menu") -> Menu:
    h = data.get("hotline", {})

    def need(name: str, kind: type, pattern: re.Pattern[str] | None = None):
        if name not in h:
            raise MenuError(f"{source}: [hotline].{name} is missing")
        value = h[name]
        if not isinstance(value, kind) or isinstance(value, bool) and kind is int:
            raise MenuError(f"{source}: [hotline].{name} must be {kind.__name__}")
        if pattern is not None and not pattern.fullmatch(str(value)):
            raise MenuError(f"{source}: [hotline].{name} has an invalid value {value!r}")
        return value

    def seconds(name: str, lo: int, hi: int) -> int:
        value = need(name, int)
        if not lo <= value <= hi:
            raise MenuError(f"{source}: [hotline].{name} must be between {lo} and {hi}")
        return value

    number = need("number", str, re.compile(r"^[0-9]{3,10}$"))
    options = []
    seen_keys: set[str] = set()
    for i, raw in enumerate(data.get("options", [])):
        key, team = str(raw.get("key", "")), str(raw.get("team", ""))
        if not _KEY.fullmatch(key):
            raise MenuError(f"{source}: options[{i}].key must be one digit, got {key!r}")
        if not _IDENT.fullmatch(team):
            raise MenuError(f"{source}: options[{i}].team must be a team code, got {team!r}")
        if key in seen_keys:
            raise MenuError(f"{source}: key {key} is used twice")
        seen_keys.add(key)
        options.append(MenuOption(key, team))
    if not options:
        raise MenuError(f"{source}: the menu has no [[options]]")
    english_key = need("english_key", str, _KEY)
    nurse_key = need("duty_nurse_key", str, _KEY)
    for setting, special in (("english_key", english_key), ("duty_nurse_key", nurse_key)):
        if special in seen_keys:
            raise MenuError(f"{source}: [hotline].{setting} {special} is also an option's key")
    if english_key == nurse_key:
        raise MenuError(f"{source}: english_key and duty_nurse_key are the same")
    callback_key = h.get("callback_key")
    if callback_key is not None:
        if not isinstance(callback_key, str) or not _KEY.fullmatch(callback_key):
            raise MenuError(f"{source}: [hotline].callback_key must be one digit")
        if callback_key in seen_keys or callback_key in (english_key, nurse_key):
            raise MenuError(f"{source}: [hotline].callback_key {callback_key} is already used")
    default_language = need("default_language", str)
    if default_language not in LANGUAGES:
        raise MenuError(f"{source}: default_language must be one of {LANGUAGES}")

    prompts: dict[str, dict[str, str]] = {}
    for lang in LANGUAGES:
        texts = data.get("prompts", {}).get(lang, {})
        required = REQUIRED_PROMPTS + (
            SURGEON_PROMPTS + tuple(f"whisper_{o.team}" for o in options) if lang == "zh" else ()
        )
        if callback_key is not None:
            required += ("callback_confirm",)
        for name in required:
            if not isinstance(texts.get(name), str) or not texts[name].strip():
                raise MenuError(f"{source}: [prompts.{lang}].{name} is missing")
        for name in texts:
            if not _IDENT.fullmatch(name):
                raise MenuError(f"{source}: prompt name {name!r} is not an identifier")
        prompts[lang] = dict(texts)
    for name, text in CALLBACK_SURGEON_PROMPTS.items():
        prompts["zh"].setdefault(name, text)

    return Menu(
        number=number,
        default_language=default_language,
        english_key=english_key,
        timeout_s=seconds("timeout_s", 1, 30),
        max_retries=seconds("max_retries", 0, 5),
        duty_nurse_key=nurse_key,
        duty_nurse_number=need("duty_nurse_number", str, _DIGITS),
        duty_nurse_ring_s=seconds("duty_nurse_ring_s", 5, 120),
        fallback_ring_s=seconds("fallback_ring_s", 5, 120),
        accept_timeout_s=seconds("accept_timeout_s", 2, 30),
        accept_tries=seconds("accept_tries", 1, 5),
        record_calls=bool(h.get("record_calls", True)),
        options=tuple(options),
        prompts=prompts,
        callback_key=callback_key,
    )
