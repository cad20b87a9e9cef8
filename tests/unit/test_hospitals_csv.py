"""The partner-hospital directory CSV: encodings, separators, levels, contacts, hostile cells, the plan."""
from __future__ import annotations

import codecs

import pytest

from network.hospitals import (
    LEVELS,
    UNRATED,
    Contact,
    Hospital,
    HospitalError,
    check_level,
    check_name,
    check_number,
    export_csv,
    parse_contact,
    parse_hospital_csv,
)

CHANGCHUN = Hospital(1, "长春市中心医院", "三级甲等", "长春市", ("043188888801", "043188888888"),
                     (Contact("王立军", "主任", "13900000001"),))
JILIN = Hospital(2, "吉林市中心医院", "三级甲等", "吉林市", ("043288888802",))
DIRECTORY = (CHANGCHUN, JILIN)

GOOD = (
    "编号,名称,等级,城市,电话,联系医生\n"
    "1,长春市中心医院,三级甲等,长春市,043188888888;0431-8888 8801,王立军 主任 13900000001\n"
    "2,吉林市中心医院,三甲,吉林市,+86 432 8888 8802,\n"
    ",梅河口市中心医院,二级甲等,梅河口市,0435-8888 8806、13900000006,刘芳 副主任医师; 陈晨\n"
)


def plan_of(text: str, existing=DIRECTORY, blocked=(), encoding="utf-8", **kw):
    return parse_hospital_csv(text.encode(encoding), existing, blocked, **kw)


def errors_at(plan, line: int, column: str | None = None):
    return [p for p in plan.errors if p.line == line and (column is None or p.column == column)]


def test_a_good_file_adds_one_changes_none_and_keeps_two():
    plan = plan_of(GOOD)
    assert plan.ok, plan.report()
    assert plan.unchanged == DIRECTORY
    assert plan.changed == ()
    (added,) = plan.added
    assert added == Hospital(3, "梅河口市中心医院", "二级甲等", "梅河口市", ("043588888806", "13900000006"),
                             (Contact("刘芳", "副主任医师"), Contact("陈晨")))
    assert plan.lines == {1: 2, 2: 3, 3: 4}
    assert plan.summary() == {"added": 1, "changed": 0, "unchanged": 2, "removed": 0}


@pytest.mark.parametrize("encoding", ["utf-8", "utf-8-sig", "gb18030", "utf-16"])
@pytest.mark.parametrize("separator", [",", "\t", "，"])
def test_every_encoding_and_separator_reads_the_same(encoding, separator):
    text = GOOD.replace(",", separator)
    plan = plan_of(text, encoding=encoding)
    assert plan.ok, plan.report()
    assert plan.added[0].name == "梅河口市中心医院"
    assert plan.unchanged == DIRECTORY


def test_utf16_without_bom_and_latin1_junk_are_refused_as_unknown_encoding():
    plan = parse_hospital_csv(GOOD.encode("utf-16-le"), DIRECTORY)
    assert not plan.ok and "encoding" in plan.errors[0].message
    assert codecs.BOM_UTF16_LE not in GOOD.encode("utf-16-le")[:2]


def test_english_headers_in_any_case_and_width():
    text = ("ID,Name,LEVEL,City,Numbers,Contacts,Notes\n"
            "2,吉林市中心医院,Grade IIIA,吉林市,043288888802,,ignored note\n"
            ",ＸＹ Hospital,3B,Yanji,13900000009,Li 主任 13900000010\n")
    plan = plan_of(text)
    assert plan.ok, plan.report()
    assert plan.unchanged == (JILIN,)
    assert plan.added == (Hospital(3, "XY Hospital", "三级乙等", "Yanji", ("13900000009",),
                                   (Contact("Li", "主任", "13900000010"),)),)


@pytest.mark.parametrize("text, level", [
    ("三级甲等", "三级甲等"), ("三甲", "三级甲等"), ("3A", "三级甲等"), ("3级甲等", "三级甲等"),
    ("Grade IIIA", "三级甲等"), ("tertiary A", "三级甲等"), ("三乙", "三级乙等"), ("二级乙等", "二级乙等"),
    ("二甲", "二级甲等"), ("2B", "二级乙等"), ("二级", "二级"), ("一级", "一级"), ("三级特等", "三级特等"),
    ("", UNRATED), ("未定级", UNRATED), ("其它", "其他"), ("ＩＩＩａ", "三级甲等"),
])
def test_levels_as_real_lists_write_them(text, level):
    assert check_level(text) == level
    assert level in LEVELS


@pytest.mark.parametrize("junk", ["四级", "5A", "甲等", "=1+1", "三级甲等医院吗", "A" * 100, "特级"])
def test_junk_levels_are_refused_in_both_languages(junk):
    with pytest.raises(HospitalError) as refused:
        check_level(junk)
    assert "grade" in refused.value.message and "等级" in refused.value.message_zh


@pytest.mark.parametrize("text, number", [
    ("0431-8888 8888", "043188888888"), ("+86 431 88888888", "043188888888"),
    ("13900000001", "13900000001"), ("+8613900000001", "13900000001"), ("００４９ ３０ １２３４５６７８", "00493012345678"),
])
def test_numbers_are_normalised_as_caller_id_lookup_reads_them(text, number):
    assert check_number(text) == number


@pytest.mark.parametrize("junk", ["110", "12345", "88888888", "0431-8888-8888-8888-8888", "١٣٩٠٠٠٠٠٠٠١",
                                  "=13900000001", "1390000000\n1", "abc"])
def test_not_a_hospital_number(junk):
    with pytest.raises(HospitalError):
        check_number(junk)


def test_contacts_name_title_and_phone():
    assert parse_contact("王立军 主任 13900000001") == Contact("王立军", "主任", "13900000001")
    assert parse_contact("  刘芳   副主任医师 ") == Contact("刘芳", "副主任医师")
    assert parse_contact("欧阳·娜娜 0431-88880000") == Contact("欧阳·娜娜", "", "043188880000")
    assert parse_contact("Anna Schmidt 主任医师 13900000011") == Contact("Anna Schmidt", "主任医师", "13900000011")
    with pytest.raises(HospitalError):
        parse_contact("王 主任 13900000001 extra words here")
    with pytest.raises(HospitalError):
        parse_contact("=HYPERLINK(\"http://x\") 主任")


@pytest.mark.parametrize("cell", [
    "=cmd|' /C calc'!A0", "+SUM(A1:A2)", "@SUM(1)", "-2+3", "长春\r\n医院", "长春医院\x00", "<script>", "a'b",
])
def test_hostile_names_are_refused_and_shown_escaped(cell):
    with pytest.raises(HospitalError):
        check_name(cell)
    quoted = '"' + cell.replace('"', '""') + '"'
    plan = plan_of(f"名称,电话\n{quoted},13900000001\n")
    assert not plan.ok
    # A NUL refuses the whole file (no CSV holds one); anything else is the name cell.
    (problem,) = errors_at(plan, 0 if "\x00" in cell else 2)
    assert "\r" not in problem.message and "\n" not in problem.message and "\x00" not in problem.message
    assert plan.added == ()


def test_a_kilobyte_cell_is_refused_and_never_shown_whole():
    big = "长" * 1024
    plan = plan_of(f"名称,城市\n{big},长春市\n长春医院,{'x' * 1500}\n")
    name_problem, = errors_at(plan, 2, "name")
    city_problem, = errors_at(plan, 3, "city")
    assert "at most" in name_problem.message and "最多" in name_problem.message_zh
    assert "1,500 characters" in city_problem.message
    assert len(name_problem.message) < 300 and len(city_problem.message) < 300


def test_a_number_on_two_lines_is_an_error_naming_both():
    text = "名称,电话\n甲医院,13900000001\n乙医院,139-0000-0001\n"
    plan = plan_of(text, existing=())
    (problem,) = plan.errors
    assert (problem.line, problem.column) == (3, "numbers")
    assert "line 2" in problem.message and "第 2 行" in problem.message_zh


def test_a_number_twice_on_one_line_is_an_error():
    plan = plan_of("名称,电话\n甲医院,13900000001;+86 139 0000 0001\n", existing=())
    assert [p.line for p in plan.errors] == [2]


def test_a_blocked_number_is_refused():
    plan = plan_of("名称,电话\n甲医院,13900000001\n", existing=(), blocked=frozenset({"13900000001"}))
    (problem,) = plan.errors
    assert "block list" in problem.message and "黑名单" in problem.message_zh


def test_a_number_of_a_hospital_the_file_leaves_alone_is_taken():
    plan = plan_of("名称,电话\n新医院,043288888802\n")
    (problem,) = plan.errors
    assert "吉林市中心医院" in problem.message and problem.line == 2
    # Removing the missing ones frees the number: then it is a move, not a clash.
    moved = plan_of("名称,电话\n新医院,043288888802\n", remove_missing=True)
    assert moved.ok, moved.report()
    assert moved.removed == DIRECTORY
    assert moved.added[0].numbers == ("043288888802",)


def test_a_number_moves_between_two_hospitals_both_in_the_file():
    text = ("编号,名称,等级,城市,电话\n"
            "1,长春市中心医院,三级甲等,长春市,043188888888\n"
            "2,吉林市中心医院,三级甲等,吉林市,043188888801;043288888802\n")
    plan = plan_of(text)
    assert plan.ok, plan.report()
    assert [after.numbers for _, after in plan.changed] == [("043188888888",),
                                                           ("043188888801", "043288888802")]


def test_changed_fields_and_ids_matched_by_name():
    text = "名称,等级,城市,电话\n吉林市中心医院,三级乙等,吉林市,043288888802\n"
    plan = plan_of(text)
    ((before, after),) = plan.changed
    assert before == JILIN and after == Hospital(2, "吉林市中心医院", "三级乙等", "吉林市", ("043288888802",))
    assert plan.unchanged == () and plan.removed == ()


def test_duplicate_ids_names_and_a_name_under_another_id():
    text = ("编号,名称\n"
            "7,甲医院\n"
            "7,乙医院\n"
            "8,甲医院\n"
            "9,长春市中心医院\n")
    plan = plan_of(text)
    messages = {(p.line, p.column) for p in plan.errors}
    assert (3, "id") in messages  # id 7 twice
    assert (4, "name") in messages  # 甲医院 twice
    assert (5, "name") in messages  # 长春市中心医院 is #1


@pytest.mark.parametrize("text, word", [
    ("医院名称,传真\n甲医院,1\n", "传真"),
    ("等级,城市\n三甲,长春市\n", "名称"),
    ("名称,名称\n甲医院,乙医院\n", "duplicate"),
    ("编号,名称\nabc,甲医院\n", "id"),
    ("编号,名称\n1000000,甲医院\n", "id"),
    ("名称,电话\n甲医院,13900000001,extra\n", "more cells"),
    ("名称\n", "no hospitals"),
    ("", "empty"),
])
def test_file_level_problems(text, word):
    plan = plan_of(text, existing=())
    assert not plan.ok
    assert any(word in p.message or word in p.message_zh for p in plan.errors), plan.report()


def test_every_problem_is_in_both_languages_with_a_line():
    text = "名称,等级,电话\n=1,四级,110\n"
    plan = plan_of(text, existing=())
    assert len(plan.errors) == 3
    for problem in plan.errors:
        assert problem.line == 2 and problem.message and problem.message_zh
        assert any("\u4e00" <= ch <= "\u9fff" for ch in problem.message_zh)


def test_export_reads_back_unchanged_and_is_spreadsheet_safe():
    hospitals = (*DIRECTORY, Hospital(5, "通化市人民医院", "二级甲等", "通化市", ("043588888805",),
                                      (Contact("李明", "主任医师", "13900000005"), Contact("张伟"))))
    text = export_csv(hospitals)
    assert text.splitlines()[0] == "编号,名称,等级,城市,电话,联系医生"
    plan = parse_hospital_csv(text.encode("utf-8"), hospitals)
    assert plan.ok and plan.unchanged == hospitals and not plan.writes
    hand_edited = Hospital(9, "=cmd|' /C calc'!A0", "@x", "-1", ())
    row = export_csv([hand_edited]).splitlines()[1]
    assert ",'=cmd" in row and ",'@x," in row and ",'-1," in row


def test_limits_refuse_before_reading():
    assert not parse_hospital_csv(b"x" * (2 * 1024 * 1024 + 1), ()).ok
    many = "名称\n" + "".join(f"医院{i}\n" for i in range(5001))
    assert "lines" in plan_of(many, existing=()).errors[0].message


def test_a_line_with_another_problem_still_has_its_numbers_checked():
    text = "名称,等级,电话\n甲医院,四级,13900000001\n乙医院,三甲,13900000001;13900000002\n"
    plan = plan_of(text, existing=(), blocked=frozenset({"13900000002"}))
    found = sorted((p.line, p.column) for p in plan.errors)
    assert found == [(2, "level"), (3, "numbers"), (3, "numbers")]
    assert any("line 2" in p.message for p in plan.errors if p.line == 3)
