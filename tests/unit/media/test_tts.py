"""TPL-1..5: template validation, parameter checks, reading rules, a real espeak-ng render."""

from __future__ import annotations

from pathlib import Path

import pytest
import soundfile as sf

from media.config import MediaConfig
from media.errors import TemplateError, TtsError
from media.prompt import validate_play_file
from media.tts import (
    TtsRenderer,
    fill_template,
    run_tool,
    spoken_text,
    template_bytes,
    validate_template,
)

CODE = "您的验证码为${NUM_6}，请在${TXT_4}分钟内输入。"


def test_variables_are_found_in_order() -> None:
    names = [v.name for v in validate_template("${DATE},${TIME} ${TXT_3} code ${NUM_6}")]
    assert names == ["DATE", "TIME", "TXT_3", "NUM_6"]


def test_size_counts_cjk_as_three_bytes() -> None:
    assert template_bytes("验证a") == 7
    validate_template("验" * 300)  # exactly 900 bytes
    with pytest.raises(TemplateError, match="901 bytes"):
        validate_template("验" * 300 + "a")


@pytest.mark.parametrize(
    ("text", "msg"),
    [
        ("", "empty"),
        ("hello ${FOO}", "unknown variable"),
        ("hello ${NUM_0}", "n must be"),
        ("hello ${NUM_33}", "n must be"),
        ("hello ${NUM_4", "unterminated"),
        ("at ${DATE}${TIME}", "comma"),
        ("at ${DATE} ${TIME}", "comma"),
    ],
)
def test_bad_templates(text: str, msg: str) -> None:
    with pytest.raises(TemplateError, match=msg):
        validate_template(text)


def test_date_time_separated_by_either_comma() -> None:
    validate_template("${DATE},${TIME}")
    validate_template("${DATE}，${TIME}")


def test_fill_in_order() -> None:
    assert fill_template(CODE, ["123456", "5"]) == "您的验证码为123456，请在5分钟内输入。"


@pytest.mark.parametrize(
    ("params", "msg"),
    [
        (["123456"], "2 variables but templateParas has 1"),
        (["12345a", "5"], r"templateParas\[0\] for \$\{NUM_6\} must contain only digits"),
        (["1234567", "5"], "at most 6"),
        (["１２３", "5"], "only digits"),  # full-width digits are not 0-9
        (["123", "12345"], r"templateParas\[1\] for \$\{TXT_4\} has 5 characters"),
        (["123", "验证码验"], None),  # 4 chars, 12 bytes: fine
    ],
)
def test_param_checks(params: list[str], msg: str | None) -> None:
    if msg is None:
        fill_template(CODE, params)
        return
    with pytest.raises(TemplateError, match=msg):
        fill_template(CODE, params)


def test_value_byte_limit() -> None:
    with pytest.raises(TemplateError, match="32 bytes"):
        fill_template("${TXT_32}", ["验" * 11])


@pytest.mark.parametrize(
    ("value", "ok"),
    [("2017/12/31", True), ("2017/2/31", False), ("2017/02/30", False), ("17/12/31", False)],
)
def test_date_param(value: str, ok: bool) -> None:
    if ok:
        fill_template("${DATE}", [value])
    else:
        with pytest.raises(TemplateError, match="DATE"):
            fill_template("${DATE}", [value])


@pytest.mark.parametrize(
    ("value", "ok"), [("23:59", True), ("23:59:59", True), ("24:00", False), ("9:00", False)]
)
def test_time_param(value: str, ok: bool) -> None:
    if ok:
        fill_template("${TIME}", [value])
    else:
        with pytest.raises(TemplateError, match="TIME"):
            fill_template("${TIME}", [value])


def test_mandarin_digits_are_read_one_by_one() -> None:
    assert spoken_text("验证码${NUM_4}", ["1234"], 2) == "验证码一二三四"
    assert spoken_text("验证码${NUM_6}", ["012340"], 2) == "验证码零一二三四零"


def test_english_digits_are_read_one_by_one() -> None:
    assert spoken_text("Your code is ${NUM_4}.", ["1234"], 1) == (
        "Your code is one two three four.")


def test_mandarin_date_and_time() -> None:
    assert spoken_text("${DATE},${TIME}", ["2017/12/31", "23:59:59"], 2) == (
        "二零一七年十二月三十一日,二十三点五十九分五十九秒")
    assert spoken_text("${TIME}", ["08:05"], 2) == "八点零五分"
    assert spoken_text("${TIME}", ["10:00"], 2) == "十点整"


def test_english_date_and_time() -> None:
    assert spoken_text("On ${DATE}, ${TIME}", ["2017/12/31", "23:59:59"], 1) == (
        "On December thirty-first, two thousand seventeen, twenty-three fifty-nine and "
        "fifty-nine seconds")


def test_plain_text_rules_apply_to_fixed_text_and_txt_values() -> None:
    assert spoken_text("本次通话时长还剩1分钟", [], 2) == "本次通话时长还剩一分钟"
    assert spoken_text("金额${TXT_5}元", ["12.5"], 2) == "金额一二点五元"
    assert spoken_text("截止2017/12/31 23:59:59", [], 2) == (
        "截止二零一七年十二月三十一日 二十三点五十九分五十九秒")


def test_unknown_language() -> None:
    with pytest.raises(TemplateError, match="languageType"):
        spoken_text("x", [], 3)


async def test_real_render_gives_valid_alaw_and_is_cached(tmp_path: Path) -> None:
    r = TtsRenderer(tmp_path / "tts", MediaConfig())
    p1 = await r.render(CODE, ["123456", "5"], 2)
    validate_play_file(p1)
    info = sf.info(str(p1))
    assert (info.samplerate, info.channels, info.subtype) == (8000, 1, "ALAW")
    assert info.duration > 2.0
    mtime = p1.stat().st_mtime_ns
    p2 = await r.render(CODE, ["123456", "5"], 2)
    assert p2 == p1 and p2.stat().st_mtime_ns == mtime
    p3 = await r.render("Your code is ${NUM_4}", ["1234"], 1)
    assert p3 != p1 and sf.info(str(p3)).duration > 1.0


async def test_tool_timeout_kills_the_process() -> None:
    with pytest.raises(TtsError, match="did not finish"):
        await run_tool(["sleep", "5"], None, 0.2)


async def test_tool_failure_is_reported() -> None:
    with pytest.raises(TtsError, match="failed"):
        await run_tool(["sox", "/nonexistent.wav", "/tmp/x.wav"], None, 5)


def test_one_fixed_female_voice_per_language(tmp_path: Path) -> None:
    r = TtsRenderer(tmp_path, MediaConfig())
    assert (r.voice_for(2), r.voice_for(1)) == ("cmn+f3", "en+f3")
    plain = TtsRenderer(tmp_path, MediaConfig(tts_variant=""))
    assert plain.voice_for(2) == "cmn"
    with pytest.raises(TemplateError):
        r.voice_for(3)


def test_already_filled_text_may_exceed_the_template_limit_and_keep_literal_braces() -> None:
    filled = "验证码" * 290 + "1234"  # 2,614 bytes: far over the 900-byte template limit
    assert spoken_text(filled, [], 2).endswith("一二三四")
    assert spoken_text("price ${x} 12", [], 1) == "price ${x} one two"
    with pytest.raises(TemplateError, match="2 variables"):
        spoken_text(CODE, [], 2)  # a real template without its parameters
    with pytest.raises(TemplateError, match="4096"):
        spoken_text("a" * 5000, [], 1)
