"""The menu config: the shipped files load; every invalid value is refused with its field named."""
from __future__ import annotations

import copy
import tomllib
from pathlib import Path

import pytest

from ivr.menu import REQUIRED_PROMPTS, SURGEON_PROMPTS, Menu, MenuError, load_menu, parse_menu

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = ROOT / "ivr" / "menu.toml"
TEST_MENU = ROOT / "tests" / "integration" / "menu-test.toml"


@pytest.fixture
def data() -> dict:
    """The shipped menu as data, to break one value at a time."""
    return tomllib.loads(SHIPPED.read_text(encoding="utf-8"))


def refused(data: dict) -> str:
    with pytest.raises(MenuError) as info:
        parse_menu(data, source="menu.toml")
    message = str(info.value)
    assert message.startswith("menu.toml: ")
    return message


@pytest.mark.parametrize("path", [SHIPPED, TEST_MENU], ids=["shipped", "test"])
def test_shipped_menus_load(path):
    menu = load_menu(path)
    assert isinstance(menu, Menu)
    assert menu.number == "96608" and menu.default_language == "zh"
    assert [(o.key, o.team) for o in menu.options] == [
        ("1", "facial"), ("2", "replant"), ("3", "burns"), ("4", "referral")]
    assert menu.teams == ("facial", "replant", "burns", "referral")
    assert (menu.english_key, menu.duty_nurse_key, menu.duty_nurse_number) == ("9", "0", "13900000000")
    assert menu.team_for_key("2") == "replant" and menu.team_for_key("0") is None
    for lang in ("zh", "en"):
        assert set(REQUIRED_PROMPTS) <= set(menu.prompts[lang])
    assert set(SURGEON_PROMPTS) | {f"whisper_{t}" for t in menu.teams} <= set(menu.prompts["zh"])


def test_the_test_menu_is_the_shipped_menu_with_shorter_times():
    shipped, test = load_menu(SHIPPED), load_menu(TEST_MENU)
    assert test.options == shipped.options and test.number == shipped.number
    assert set(test.prompts["zh"]) == set(shipped.prompts["zh"])
    assert test.timeout_s <= shipped.timeout_s and test.accept_timeout_s <= shipped.accept_timeout_s


def test_duplicate_key(data):
    data["options"][1]["key"] = "1"
    assert "key 1 is used twice" in refused(data)


@pytest.mark.parametrize("key", ["10", "a", "", "*", " 1", "1\n", "１"])
def test_key_that_is_not_one_digit(data, key):
    data["options"][2]["key"] = key
    message = refused(data)
    assert "options[2].key" in message and repr(key) in message


@pytest.mark.parametrize("team", ["Bad Team", "bad-team", "1team", "", "facial\n", "a" * 33, "facial;x"])
def test_team_that_is_not_a_team_code(data, team):
    data["options"][0]["team"] = team
    message = refused(data)
    assert "options[0].team" in message and repr(team) in message


@pytest.mark.parametrize(("setting", "key"), [("english_key", "1"), ("duty_nurse_key", "4")])
def test_special_key_equal_to_an_option_key(data, setting, key):
    data["hotline"][setting] = key
    message = refused(data)
    assert f"[hotline].{setting}" in message and key in message


def test_english_and_nurse_key_the_same(data):
    data["hotline"]["english_key"] = "0"
    message = refused(data)
    assert "english_key" in message and "duty_nurse_key" in message


@pytest.mark.parametrize(("lang", "name"), [
    ("zh", "greeting"), ("zh", "consent"), ("zh", "press1"), ("zh", "whisper_burns"),
    ("en", "voicemail"), ("en", "goodbye"),
])
def test_missing_required_prompt(data, lang, name):
    del data["prompts"][lang][name]
    assert f"[prompts.{lang}].{name} is missing" in refused(data)


def test_blank_prompt_is_missing(data):
    data["prompts"]["zh"]["goodbye"] = "   "
    assert "[prompts.zh].goodbye is missing" in refused(data)


def test_english_needs_no_surgeon_prompts(data):
    assert "press1" not in data["prompts"]["en"]
    parse_menu(data)


def test_prompt_name_that_is_not_an_identifier(data):
    data["prompts"]["zh"]["../etc"] = "x"
    assert "prompt name '../etc'" in refused(data)


@pytest.mark.parametrize(("setting", "value", "bounds"), [
    ("timeout_s", 0, "between 1 and 30"),
    ("timeout_s", 31, "between 1 and 30"),
    ("max_retries", 6, "between 0 and 5"),
    ("duty_nurse_ring_s", 4, "between 5 and 120"),
    ("fallback_ring_s", 121, "between 5 and 120"),
    ("accept_timeout_s", 1, "between 2 and 30"),
    ("accept_tries", 0, "between 1 and 5"),
])
def test_time_out_of_range(data, setting, value, bounds):
    data["hotline"][setting] = value
    message = refused(data)
    assert f"[hotline].{setting}" in message and bounds in message


@pytest.mark.parametrize("value", ["6", 6.0, True])
def test_time_that_is_not_an_integer(data, value):
    data["hotline"]["timeout_s"] = value
    assert "[hotline].timeout_s must be int" in refused(data)


@pytest.mark.parametrize(("setting", "value"), [
    ("number", "96608\n"),  # would render 'exten => 96608' and ',1,Goto(...)' on two lines
    ("number", "966O8"),
    ("number", "12"),
    ("number", "96608,1,Hangup"),
    ("english_key", "9\n"),
    ("english_key", "99"),
    ("duty_nurse_key", "#"),
    ("duty_nurse_number", "13900000000\n"),
    ("duty_nurse_number", "139-0000-0000"),
    ("duty_nurse_number", "13900000000&PJSIP/trunk/001"),
])
def test_value_that_does_not_fit_its_pattern(data, setting, value):
    data["hotline"][setting] = value
    message = refused(data)
    assert f"[hotline].{setting}" in message and repr(value) in message


@pytest.mark.parametrize("setting", ["number", "english_key", "duty_nurse_key", "duty_nurse_number",
                                     "default_language", "timeout_s", "accept_tries"])
def test_missing_setting(data, setting):
    del data["hotline"][setting]
    assert f"[hotline].{setting} is missing" in refused(data)


def test_unknown_language(data):
    data["hotline"]["default_language"] = "fr"
    assert "default_language" in refused(data)


def test_no_options(data):
    data["options"] = []
    assert "no [[options]]" in refused(data)


def test_whisper_prompt_required_for_every_team(data):
    data["options"].append({"key": "5", "team": "hand"})
    assert "[prompts.zh].whisper_hand is missing" in refused(data)
    data["prompts"]["zh"]["whisper_hand"] = "手外科。"
    assert parse_menu(data).team_for_key("5") == "hand"


def test_load_menu_names_the_file_on_a_syntax_error(tmp_path):
    bad = tmp_path / "menu.toml"
    bad.write_text("[hotline\nnumber = 1\n", encoding="utf-8")
    with pytest.raises(MenuError, match=str(bad)):
        load_menu(bad)
    with pytest.raises(MenuError, match="missing.toml"):
        load_menu(tmp_path / "missing.toml")


def test_parse_menu_does_not_change_its_input(data):
    before = copy.deepcopy(data)
    parse_menu(data)
    assert data == before
