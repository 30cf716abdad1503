"""Errors every layer raises alike, so that a bad label reads the same whichever device found it."""
from __future__ import annotations


def label_out_of_range(row: int, value: int, n_classes: int, ignore_index: int) -> ValueError:
    return ValueError(f"label {value} at row {row} is out of range: labels must lie in [0, {n_classes}) "
                      f"or equal ignore_index={ignore_index}")


def check_label_range(xp, labels, n_classes: int, ignore_index: int) -> None:
    """Raise :func:`label_out_of_range` for the first label outside ``[0, n_classes)`` that is not ignored."""
    bad = (labels != ignore_index) & ((labels < 0) | (labels >= n_classes))
    if bool(bad.any()):
        row = int(xp.argmax(bad))
        raise label_out_of_range(row, int(labels[row]), n_classes, ignore_index)
