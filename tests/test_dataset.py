"""Reading the dataset and choosing samples."""
from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from scheduler.dataset import choose_indices, load_samples, read_rows
from scheduler.spec import DatasetSpec, SpecError
from tests.processes import DATASET

LABELS = ["positive", "negative", "neutral"]


def spec(path, **kw) -> DatasetSpec:
    return DatasetSpec(path=path, labels=kw.pop("labels", LABELS), **kw)


def test_stratified_sample_keeps_label_shares_and_is_reproducible():
    samples, _ = load_samples(spec(DATASET, sample=60, seed=42))
    again, _ = load_samples(spec(DATASET, sample=60, seed=42))
    assert [s.index for s in samples] == [s.index for s in again]
    counts = Counter(s.label for s in samples)
    # 5,842 rows: neutral 53.6 %, positive 31.7 %, negative 14.7 %
    assert counts == {"neutral": 32, "positive": 19, "negative": 9}


def test_few_shot_examples_come_from_outside_the_sample_and_rotate_labels():
    samples, examples = load_samples(spec(DATASET, sample=30), few_shot_k=4)
    chosen = {s.text for s in samples}
    assert len(examples) == 4 and not chosen & {t for t, _ in examples}
    assert [label for _, label in examples[:3]] == LABELS


def test_choose_indices_is_sorted_and_bounded():
    labels = np.array(["a", "b"] * 10)
    idx = choose_indices(labels, 6, True, 0)
    assert list(idx) == sorted(idx) and len(set(idx)) == 6
    with pytest.raises(SpecError, match="dataset.sample: 50 is more than the 20 rows"):
        choose_indices(labels, 50, True, 0)


@pytest.mark.parametrize("content,kw,message", [
    ("text,label\nup,positive\n", {"text_column": "sentence"}, "dataset.text_column: no column 'sentence'"),
    ("text,label\nup,bullish\n", {}, "dataset.labels: the data has labels not in labels: 'bullish' (1 rows)"),
    ("text,label\n", {}, "has a header but no rows"),
    ("", {}, "is empty"),
])
def test_bad_dataset_files(tmp_path, content, kw, message):
    path = tmp_path / "d.csv"
    path.write_text(content)
    with pytest.raises(SpecError) as err:
        read_rows(spec(path, **kw))
    assert message in str(err.value)


def test_dataset_path_problems(tmp_path):
    with pytest.raises(SpecError, match="is a directory"):
        read_rows(spec(tmp_path))
    with pytest.raises(SpecError, match="no such file"):
        read_rows(spec(tmp_path / "nope.csv"))
    latin = tmp_path / "latin.csv"
    latin.write_bytes("text,label\ncaf\xe9 up,positive\n".encode("latin-1"))
    with pytest.raises(SpecError, match="not UTF-8"):
        read_rows(spec(latin))


def test_labels_are_matched_case_insensitively(tmp_path):
    path = tmp_path / "d.csv"
    path.write_text("text,label\nup, Positive \ndown,NEGATIVE\n")
    rows = read_rows(spec(path, labels=["positive", "negative"]))
    assert list(rows["label"]) == ["positive", "negative"]
