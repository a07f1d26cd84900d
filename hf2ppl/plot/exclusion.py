"""Exclusion contours of a patchset scan in the plane of two metadata labels."""

from __future__ import annotations


def plot_exclusion(result, x: str | None = None, y: str | None = None, **kwargs):  # pragma: no cover - filled in by the scan work
    raise NotImplementedError("plot_exclusion: work in progress")
