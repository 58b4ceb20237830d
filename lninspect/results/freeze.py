"""What freezing the norms' scale costs (--freeze-scale; lninspect.hooks.freeze): the change
of the LM loss with s replaced by constants from calibration text. No torch.

A change is loss(frozen) - loss(as is): on the run's text (`change`), and on each held-out
text (`changes`), whose constants are taken from the other calibration texts (leave one out,
as the spike ablation does), which gives the spread (mean ± sd).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

VARIANTS = ("median", "classes")  # one constant; the first token's and the rest's
SPREAD_FACTOR = 2.0  # a change moves the loss when |mean| > this many standard errors


@dataclass
class FreezeChange:
    """The loss change of one frozen configuration."""

    change: float  # on the run's text
    changes: list[float] = field(default_factory=list)  # on each held-out text

    @property
    def mean(self) -> float:
        return float(np.mean(self.changes)) if self.changes else math.nan

    @property
    def sd(self) -> float:
        return float(np.std(self.changes, ddof=1)) if len(self.changes) > 1 else math.nan

    @property
    def moves(self) -> bool:
        """Whether the mean change over the held-out texts is beyond its spread: more than
        SPREAD_FACTOR standard errors (sd / sqrt(texts)) away from 0."""
        n = len(self.changes)
        return n > 1 and abs(self.mean) > SPREAD_FACTOR * self.sd / math.sqrt(n)


@dataclass
class NormFreeze:
    """One norm frozen alone: its constants (from every calibration text) and the changes."""

    median: FreezeChange  # s = the median s of the calibration tokens that are not first
    classes: FreezeChange  # s = the first token's median s there, and the rest's
    constant: float  # the median s of the tokens that are not first
    first: float  # the median s of the first tokens


@dataclass
class GroupFreeze:
    """Every norm of one group (role and placement; lninspect.streams) frozen at once."""

    role: str
    placement: str
    reads: str
    norms: int
    median: FreezeChange
    classes: FreezeChange


@dataclass
class AllFreeze:
    """Every norm frozen at once."""

    median: FreezeChange
    classes: FreezeChange


@dataclass
class Freeze:
    """The document's `freeze`: the losses as they are, the groups and all at once."""

    loss: float  # of the run's text, nothing frozen
    texts: int  # held-out texts of the spread
    tokens: int  # calibration tokens per text, at most
    groups: list[GroupFreeze]
    all: AllFreeze
    moved: list[str] = field(default_factory=list)  # norms alone whose `median` moves the loss
    losses: list[float] = field(default_factory=list)  # per held-out text, nothing frozen
