"""What the simulated models read from a prompt, where Ark's models read intent: how many images a group should
hold, and which aspect a size preset should take. Deliberately simple, and documented in arksim/README.md."""

from __future__ import annotations

import re

WORD_NUMBERS = {
    "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7, "eight": 8, "nine": 9, "ten": 10,
    "eleven": 11, "twelve": 12, "thirteen": 13, "fourteen": 14, "fifteen": 15, "a pair of": 2, "a couple of": 2,
}
CHINESE_DIGITS = {"一": 1, "二": 2, "两": 2, "三": 3, "四": 4, "五": 5, "六": 6, "七": 7, "八": 8, "九": 9}
_NUMBER = r"(\d{1,2}|" + "|".join(sorted(WORD_NUMBERS, key=len, reverse=True)) + ")"
_PICTURES = (r"(?:images?|pictures?|pics|photos?|illustrations?|drawings?|paintings?|posters?|panels?|frames?|"
             r"views?|variations?|versions?|shots?|scenes?|stickers?|icons?|logos?|cards?|pages?)")
COUNT_PATTERNS = (
    re.compile(rf"\b{_NUMBER}\s+(?:[\w'-]+\s+){{0,2}}?{_PICTURES}\b", re.IGNORECASE),
    re.compile(rf"\b(?:set|series|group|sequence|collection|storyboard)\s+of\s+{_NUMBER}\b", re.IGNORECASE),
)
CHINESE_COUNT = re.compile(r"(\d{1,2}|十[一二三四五]?|[一二两三四五六七八九])\s*[张幅]")

ASPECT_RATIO = re.compile(r"(?<![\d.])(1:1|4:3|3:4|16:9|9:16|3:2|2:3|21:9)(?![\d.])")
ASPECT_WORDS = (
    (re.compile(r"\bsquare\b|方形|正方形", re.IGNORECASE), "1:1"),
    (re.compile(r"\bwide ?screen\b|横屏", re.IGNORECASE), "16:9"),
    (re.compile(r"\bpanoram(?:a|ic)\b|全景", re.IGNORECASE), "21:9"),
    (re.compile(r"\bvertical\b|竖屏", re.IGNORECASE), "9:16"),
)


def _number(text: str) -> int:
    text = text.lower()
    if text.isdigit():
        return int(text)
    if text in WORD_NUMBERS:
        return WORD_NUMBERS[text]
    if text.startswith("十"):  # 十, 十一 ... 十五
        return 10 + (CHINESE_DIGITS[text[1]] if len(text) > 1 else 0)
    return CHINESE_DIGITS[text]


def requested_count(prompt: str) -> int:
    """How many images the prompt asks for ("four images of ...", "a set of 3", "生成4张"); 1 when it names none."""
    for pattern in (*COUNT_PATTERNS, CHINESE_COUNT):
        match = pattern.search(prompt)
        if match:
            return max(1, _number(match[1]))
    return 1


def requested_aspect(prompt: str) -> str | None:
    """The aspect the prompt asks for ("16:9", "a square icon", "竖屏"), or None."""
    match = ASPECT_RATIO.search(prompt.replace("：", ":"))
    if match:
        return match[1]
    for pattern, ratio in ASPECT_WORDS:
        if pattern.search(prompt):
            return ratio
    return None
