"""Reading the dataset and choosing samples. Reading is checked field by field
so a bad file gives one line naming the field and the fix; the file is only
read, never executed."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from scheduler.spec import DatasetSpec, SpecError


@dataclass(frozen=True)
class Sample:
    index: int       # row number in the dataset file (0-based, header excluded)
    text: str
    label: str


def read_rows(spec: DatasetSpec) -> pd.DataFrame:
    path = Path(spec.path)
    if path.is_dir():
        raise SpecError(f"dataset.path: {path} is a directory: give the path of a CSV file")
    if not path.exists():
        raise SpecError(f"dataset.path: no such file {path}: fix the path (relative paths are "
                        "relative to the experiment file)")
    try:
        frame = pd.read_csv(path, dtype=str, keep_default_na=False, encoding="utf-8")
    except UnicodeDecodeError:
        raise SpecError(f"dataset.path: {path} is not UTF-8 text: re-save it as UTF-8") from None
    except pd.errors.EmptyDataError:
        raise SpecError(f"dataset.path: {path} is empty: give a CSV with a header and rows") from None
    except pd.errors.ParserError as exc:
        raise SpecError(f"dataset.path: {path} is not valid CSV ({' '.join(str(exc).split())}): "
                        "give a CSV file with a header row and one sample per line") from None
    for field in ("text_column", "label_column"):
        column = getattr(spec, field)
        if column not in frame.columns:
            raise SpecError(f"dataset.{field}: no column {column!r} in {path.name} "
                            f"(columns: {', '.join(map(str, frame.columns))}): name one of those")
    if frame.empty:
        raise SpecError(f"dataset.path: {path.name} has a header but no rows: add data")
    for field in ("text_column", "label_column"):
        nul = frame[getattr(spec, field)].str.contains("\x00", regex=False)
        if nul.any():   # Postgres text cannot hold NUL: refuse here, before anything is written
            raise SpecError(f"dataset.{field}: row {int(nul.idxmax()) + 1} of {path.name} (header excluded) "
                            "contains a NUL byte: remove it from the file")
    labels = frame[spec.label_column].str.strip().str.lower()
    known = {x.lower() for x in spec.labels}
    unknown = labels[~labels.isin(known)]
    if len(unknown):
        counts = unknown.value_counts()
        first = ", ".join(f"{k!r} ({v} rows)" for k, v in counts.head(3).items())
        raise SpecError(f"dataset.labels: the data has labels not in labels: {first}: "
                        "add them to dataset.labels or remove those rows")
    canonical = {x.lower(): x for x in spec.labels}
    return pd.DataFrame({"text": frame[spec.text_column], "label": labels.map(canonical)})


def choose_indices(labels: np.ndarray, sample: int | None, stratify: bool, seed: int) -> np.ndarray:
    """Row indices of the sample, sorted; stratified by label when asked. Pure."""
    n = len(labels)
    if sample is None or sample == n:
        return np.arange(n)
    if sample > n:
        raise SpecError(f"dataset.sample: {sample} is more than the {n} rows: lower it or remove it")
    from sklearn.model_selection import train_test_split

    counts = pd.Series(labels).value_counts()
    can_stratify = stratify and counts.min() >= 2 and sample >= len(counts) and n - sample >= len(counts)
    chosen, _ = train_test_split(np.arange(n), train_size=sample, random_state=seed,
                                 stratify=labels if can_stratify else None)
    return np.sort(chosen)


def round_order(labels: np.ndarray, seed: int) -> np.ndarray:
    """An order of positions 0..n-1 of a sample (its true `labels`) such that every prefix
    is itself stratified: after k picks each label has floor or ceil of k x its share
    (largest deficit first, ties in label order). Deterministic from `seed`; pure.
    Used to run a stop-when-decided experiment in rounds (scheduler.submit)."""
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    kinds, counts = np.unique(labels, return_counts=True)
    pools = [list(rng.permutation(np.flatnonzero(labels == k))) for k in kinds]
    share = counts / counts.sum()
    taken = np.zeros(len(kinds))
    order = []
    for k in range(len(labels)):
        deficit = np.where([bool(p) for p in pools], (k + 1) * share - taken, -np.inf)
        pick = int(np.argmax(deficit))
        order.append(pools[pick].pop(0))
        taken[pick] += 1
    return np.asarray(order, dtype=int)


def few_shot(frame: pd.DataFrame, exclude: np.ndarray, k: int, labels: list[str], seed: int
             ) -> list[tuple[str, str]]:
    """k examples outside the sample, taking labels in turn. Pure."""
    if k == 0:
        return []
    rest = frame.drop(index=exclude)
    rest = rest[rest["text"].str.strip() != ""].sample(frac=1.0, random_state=seed)
    pools = {label: list(rest[rest["label"] == label].itertuples(index=False)) for label in labels}
    examples: list[tuple[str, str]] = []
    while len(examples) < k and any(pools.values()):
        for label in labels:
            if pools[label] and len(examples) < k:
                row = pools[label].pop(0)
                examples.append((row.text, row.label))
    return examples


MAX_DATASET_BYTES = 512 * 2**20   # shared.config.Settings.max_dataset_bytes's default


def check_regular_file(path: Path, max_bytes: int) -> None:
    """Refuse what is not a regular file of at most `max_bytes` bytes, before it is opened:
    a FIFO would block submit forever, /dev/zero would fill the memory."""
    import stat

    try:
        st = path.stat()
    except OSError:
        return   # missing or unreadable: read_rows names it
    if stat.S_ISDIR(st.st_mode):
        return
    if not stat.S_ISREG(st.st_mode):
        kind = ("a FIFO (named pipe)" if stat.S_ISFIFO(st.st_mode) else "a device" if
                stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode) else "a socket" if
                stat.S_ISSOCK(st.st_mode) else "not a regular file")
        raise SpecError(f"dataset.path: {path} is {kind}: give the path of a regular CSV file")
    if st.st_size > max_bytes:
        raise SpecError(f"dataset.path: {path} is {st.st_size / 2**20:.1f} MiB, more than the "
                        f"{max_bytes / 2**20:.1f} MiB limit: use a smaller file, or raise "
                        "GREENCTL_MAX_DATASET_BYTES")


def load_samples(spec: DatasetSpec, few_shot_k: int = 0, max_bytes: int = MAX_DATASET_BYTES
                 ) -> tuple[list[Sample], list[tuple[str, str]]]:
    check_regular_file(Path(spec.path), max_bytes)
    frame = read_rows(spec)
    idx = choose_indices(frame["label"].to_numpy(), spec.sample, spec.stratify, spec.seed)
    samples = [Sample(int(i), frame.at[i, "text"], frame.at[i, "label"]) for i in idx]
    return samples, few_shot(frame, idx, few_shot_k, spec.labels, spec.seed)
