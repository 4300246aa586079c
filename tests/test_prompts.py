"""Prompt building and answer parsing (pure)."""
from __future__ import annotations

import pytest
from hypothesis import given, settings, strategies as st

from shared.prompts import FIGURE_2_HEAD, FIGURE_2_TAIL, build_messages, parse_label, render_plain

LABELS = ["positive", "negative", "neutral"]


def test_label_only_puts_the_shared_prefix_first():
    a = build_messages("label-only", "Profit rose.", LABELS, [("Sales fell.", "negative")])
    b = build_messages("label-only", "Shares flat.", LABELS, [("Sales fell.", "negative")])
    assert a[:-1] == b[:-1]          # everything but the sample is identical: cacheable
    assert a[-1]["content"] == "Text: Profit rose.\nSentiment:"
    assert "Positive, Negative or Neutral" in a[0]["content"]
    assert a[2] == {"role": "assistant", "content": "Negative"}


def test_paper_checklist_is_figure_2_with_the_text_inside():
    (msg,) = build_messages("paper-checklist", "Profit rose.", LABELS)
    assert msg["content"] == FIGURE_2_HEAD + "Profit rose." + FIGURE_2_TAIL
    assert "Sentiment Indicators Checklist" in msg["content"]
    assert msg["content"].endswith("Positive/Negative/Neutral [Reasoning]")


@given(st.text())
def test_any_text_is_carried_verbatim_never_formatted(text):
    for template in ("label-only", "paper-checklist"):
        messages = build_messages(template, text, LABELS)
        assert text in messages[-1]["content"]


def test_format_strings_in_data_stay_text():
    text = "{0.__class__.__mro__} {labels} %s"
    assert text in build_messages("label-only", text, LABELS)[-1]["content"]


def test_parse_label_takes_the_first_stated_label():
    assert parse_label("Negative [Reasoning: not positive at all]", LABELS) == "negative"
    assert parse_label("  NEUTRAL", LABELS) == "neutral"
    assert parse_label("The sentiment is positive.", LABELS) == "positive"
    assert parse_label("neutrality prevails", LABELS) is None
    assert parse_label("", LABELS) is None


@pytest.mark.parametrize("answer", ["_POSITIVE_", "**Positive**", "*positive*", "`positive`", "(Positive)"])
def test_markdown_emphasis_around_a_label_parses(answer):
    assert parse_label(answer, LABELS) == "positive"


def test_underscore_joined_words_are_not_the_label():
    assert parse_label("positive_outlook", LABELS) == "positive"   # "_" ends a word, as in markdown
    assert parse_label("positively", LABELS) is None


@settings(derandomize=True)
@given(st.sampled_from(LABELS), st.text(alphabet=st.characters(categories=["Zs", "P"])))
def test_a_label_with_punctuation_around_it_parses(label, noise):
    assert parse_label(noise + label.upper() + noise, LABELS) == label


def test_render_plain_for_base_models():
    text = render_plain(build_messages("label-only", "Up.", LABELS, [("Down.", "negative")]))
    assert text.endswith("Text: Up.\nSentiment: ")
    assert " Negative\n\n" in text
