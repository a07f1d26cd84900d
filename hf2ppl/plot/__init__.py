"""Figures of results (matplotlib): scans and exclusion contours (:mod:`.exclusion`), fits (:mod:`.fit`)
and limits (:mod:`.limits`).

Each function takes a result hf2ppl already returns and gives back a matplotlib ``Figure`` (drawn on an
Agg canvas: no pyplot state; ``fig.savefig(path)`` writes it, a notebook shows it).
"""

from __future__ import annotations

from .exclusion import plot_exclusion
from .fit import plot_correlation, plot_postfit, plot_prefit, plot_profile, plot_pulls, plot_ranking
from .limits import plot_brazil, plot_crosscheck

__all__ = ["plot_exclusion", "plot_brazil", "plot_crosscheck", "plot_pulls", "plot_ranking", "plot_correlation",
           "plot_postfit", "plot_prefit", "plot_profile"]
