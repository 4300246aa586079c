"""Prompt building and answer parsing: pure functions, no I/O.

Templates are built by concatenation, never `str.format` on user data, so a
dataset text cannot reach attributes through a format string.

`label-only` puts everything shared (instructions, few-shot turns) before the
sample, so an engine with a prompt cache evaluates that prefix once per worker.
`paper-checklist` is the seed paper's Figure 2 prompt (label + reasoning, the
text in the middle of the instructions): the naive protocol we compare against.
"""
from __future__ import annotations

import re
from typing import Sequence

FIGURE_2_HEAD = (
    "Sentiment Assessment Instructions\n"
    "Instructions: Assess the sentiment of the given text by identifying the presence of "
    "sentiment indicators such as emotional language, positive or negative expressions, and "
    "tone shifts. Mark the sentiment as positive, negative, or neutral and provide reasoning.\n"
    "Text: "
)
FIGURE_2_TAIL = (
    "\nSentiment Indicators Checklist:\n"
    "Emotional Language: Words that convey strong feelings (e.g., joy, anger, sadness, excitement).\n"
    "Positive Expressions: Words or phrases that promote positive feelings or optimism.\n"
    "Negative Expressions: Words or phrases that express criticism or negativity.\n"
    "Tone Shifts: Noticeable changes in tone that affect how the content is perceived.\n"
    "Balanced or Neutral Tone: The absence of strong emotional language, implying neutrality.\n"
    "Response Format:\n"
    "Positive/Negative/Neutral [Reasoning]"
)


def display_label(label: str) -> str:
    """How a label is written in prompts and answers: capitalized ("Positive").

    Small instruction-tuned models put far more probability on the capitalized
    word as the first token of an answer; with lower-case choices SmolLM2-135M
    answered "positive" to almost everything (weighted F1 0.16 vs 0.45 on 90
    stratified samples, q8_0, 3-shot). Parsing is case-insensitive.
    """
    return label[:1].upper() + label[1:]


def _label_list(labels: Sequence[str]) -> str:
    labels = [display_label(x) for x in labels]
    return ", ".join(labels[:-1]) + " or " + labels[-1] if len(labels) > 1 else labels[0]


def label_only(text: str, labels: Sequence[str], examples: Sequence[tuple[str, str]] = ()) -> list[dict]:
    """Instructions and few-shot turns first (a cacheable prefix), then the sample."""
    system = ("You classify the sentiment of financial text. Answer with exactly one word: "
              + _label_list(labels) + ".")
    messages = [{"role": "system", "content": system}]
    for ex_text, ex_label in examples:
        messages.append({"role": "user", "content": "Text: " + ex_text + "\nSentiment:"})
        messages.append({"role": "assistant", "content": display_label(ex_label)})
    messages.append({"role": "user", "content": "Text: " + text + "\nSentiment:"})
    return messages


def paper_checklist(text: str, labels: Sequence[str], examples: Sequence[tuple[str, str]] = ()) -> list[dict]:
    """The seed paper's Figure 2 prompt, one user turn, the text inside the instructions."""
    messages = []
    for ex_text, ex_label in examples:
        messages.append({"role": "user", "content": FIGURE_2_HEAD + ex_text + FIGURE_2_TAIL})
        messages.append({"role": "assistant", "content": display_label(ex_label)})
    messages.append({"role": "user", "content": FIGURE_2_HEAD + text + FIGURE_2_TAIL})
    return messages


TEMPLATES = {"label-only": label_only, "paper-checklist": paper_checklist}


def build_messages(template: str, text: str, labels: Sequence[str],
                   examples: Sequence[tuple[str, str]] = ()) -> list[dict]:
    return TEMPLATES[template](text, labels, examples)


def render_plain(messages: Sequence[dict]) -> str:
    """Messages as one plain-text prompt, for base (non-chat) models."""
    parts = []
    for m in messages:
        parts.append(m["content"] if m["role"] != "assistant" else " " + m["content"] + "\n\n")
    return "".join(parts).rstrip() + " "


def parse_label(output: str, labels: Sequence[str]) -> str | None:
    """The label the answer states first, or None when it names none.

    Case-insensitive, whole words only ("neutrality" is not "neutral"), in any script.
    A word ends at anything but a letter or digit: markdown's "_Positive_" and
    "**Positive**" name the label (a regex word character alone would count "_" as part of the word).
    """
    found = []
    lowered = output.lower()
    for label in labels:
        match = re.search(r"(?<![^\W_])" + re.escape(label.lower()) + r"(?![^\W_])", lowered)
        if match:
            found.append((match.start(), label))
    return min(found)[1] if found else None
