"""Figures of results (matplotlib): scans and exclusion contours (:mod:`.exclusion`), fits and limits.

Each function takes a result hf2ppl already returns and gives back a matplotlib ``Figure``.
"""

from __future__ import annotations

from .exclusion import plot_exclusion

__all__ = ["plot_exclusion"]
