"""The recipe's seeded train/test split, applied by the runner to whatever a load step returns."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from crispml.errors import UsageError
from crispml.recipe import Split
from crispml.results import Dataset


def split_indices(n: int, spec: Split, labels: Any = None) -> tuple[Any, Any]:
    """Row positions ``(train, test)``: a seeded shuffle, per class when ``labels`` are given.

    Deterministic for a given ``n``, ``spec`` and ``labels``: the same recipe splits the same way.
    """
    import numpy as np  # numpy, not a backend: imported when a run splits, never at start-up

    rng = np.random.default_rng(spec.seed)
    if labels is None:
        order = rng.permutation(n)
        n_test = max(1, int(round(spec.test_size * n))) if n > 1 else 0
        test = order[:n_test]
    else:
        labels = np.asarray(labels)
        parts = []
        for value in sorted(set(labels.tolist()), key=str):
            members = np.flatnonzero(labels == value)
            members = members[rng.permutation(len(members))]
            k = int(round(spec.test_size * len(members)))
            parts.append(members[:k])
        test = np.concatenate(parts) if parts else np.array([], dtype=int)
    test = np.sort(test)
    mask = np.ones(n, dtype=bool)
    mask[test] = False
    return np.flatnonzero(mask), test


def apply_split(dataset: Dataset, spec: Split | None) -> Dataset:
    """``dataset`` with ``train_index``/``test_index`` set from ``spec`` (unchanged for ``None``)."""
    if spec is None:
        return dataset
    labels = None
    if spec.stratify is not None:
        if spec.stratify not in dataset.frame.columns:
            columns = ", ".join(map(str, dataset.frame.columns))
            raise UsageError(f"split.stratify: column '{spec.stratify}' is not in the data (columns: {columns})")
        labels = dataset.frame[spec.stratify].to_numpy()
    train, test = split_indices(len(dataset.frame), spec, labels)
    return replace(dataset, train_index=train, test_index=test)
