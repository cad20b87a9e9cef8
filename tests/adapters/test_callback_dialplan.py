"""The callback parts of the rendered dialplan: menu key 8, [hotline-callback], the AMI grant."""
from __future__ import annotations

import re

import pytest

from ivr.menu import MenuError, load_menu, parse_menu
from tests.adapters.test_dialplan import MENUS, _sections, render


@pytest.fixture(params=sorted(MENUS), ids=sorted(MENUS))
def rendered(request, tmp_path):
    return render(tmp_path, MENUS[request.param])


def context(rendered, name: str) -> list[str]:
    return [line.app for line in rendered.lines() if line.context == name]


def test_call_me_back_confirms_and_ends_the_call(rendered):
    key = rendered.menu.callback_key
    assert key == "8"
    assert f'GotoIf($["${{HOTLINE_CHOICE}}" = "{key}"]?callback,1)' in rendered.dialplan
    apps = [line.app for line in rendered.lines()
            if line.context == "hotline-menu" and line.exten == "callback"]
    assert apps == ["Gosub(hotline-agi,s,1(menu,callback))",
                    "Playback(${HOTLINE_PROMPTS}/${HOTLINE_LANG}/callback_confirm)",
                    "Set(HOTLINE_SYSTEM_HANGUP=1)", "Hangup()"]


def test_the_callback_context_trusts_only_hotline_ok_and_dials_filtered_digits_after_a_1(rendered):
    apps = context(rendered, "hotline-callback")
    start = apps.index("Gosub(hotline-agi,s,1(callback_start,${HOTLINE_CB}))")
    assert apps[start + 1] == 'GotoIf($["${HOTLINE_OK}" != "1"]?gone)'
    assert apps[0] == "Set(HOTLINE_CB=${FILTER(0123456789,${HOTLINE_CALLBACK})})"
    assert "Set(HOTLINE_TARGET=${FILTER(0123456789,${HOTLINE_TARGET})})" in apps
    dial = [i for i, app in enumerate(apps) if app.startswith("Dial(")]
    assert len(dial) == 1 and apps[dial[0]] == "Dial(PJSIP/${HOTLINE_TARGET}@surgeons,${HOTLINE_RING_S})"
    press = apps.index('GotoIf($["${HOTLINE_KEY}" = "1"]?place)')
    accepted = apps.index("Gosub(hotline-agi,s,1(callback_accepted,${HOTLINE_CB}))")
    assert press < accepted < dial[0]
    # the caller is dialled only with the service's word that it took the acceptance
    assert apps[accepted + 1] == 'GotoIf($["${HOTLINE_OK}" != "1"]?gone)'
    assert any(app.startswith("MixMonitor(${HOTLINE_RECORDINGS}/${HOTLINE_FILE_ID}.wav,b)")
               for app in apps[accepted:dial[0]])
    # The hang-up handler reports how far it got, whatever ended it.
    assert "Set(CHANNEL(hangup_handler_push)=hotline-callback-end,s,1)" in apps
    end = context(rendered, "hotline-callback-end")
    assert any(re.match(r"Gosub\(hotline-agi,s,1\(callback_end,\$\{HOTLINE_CB\},", app) for app in end)


def test_only_the_service_account_may_originate(rendered):
    sections = dict(_sections(rendered.files["manager.conf"]))
    assert "originate" in {p.strip() for p in sections["hotline"]["write"][0].split(",")}
    assert sections["console"]["write"] == ["reporting"]


def test_the_callback_key_is_checked_like_the_others():
    menu = load_menu(MENUS["test"])
    assert menu.prompts["zh"]["callback_whisper"]
    import tomllib
    data = tomllib.loads(MENUS["test"].read_text(encoding="utf-8"))
    for bad in ("88", "x", "1", "9", "0"):  # not a digit, or a key already used
        data["hotline"]["callback_key"] = bad
        with pytest.raises(MenuError):
            parse_menu(data)
    data["hotline"]["callback_key"] = "7"
    del data["prompts"]["en"]["callback_confirm"]
    with pytest.raises(MenuError, match="callback_confirm"):
        parse_menu(data)
    del data["hotline"]["callback_key"]
    assert parse_menu(data).callback_key is None
