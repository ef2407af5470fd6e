"""Online learning with river: Half-Space Trees over min-max-scaled trip features.

One :class:`HalfSpaceTreesDetector` per elevator or per cohort. It is a msgspec Struct like
every detector state: the river pipeline is its :class:`~detectors.state.PickledModel`
field, checkpointed by :mod:`detectors.state`.
"""

from __future__ import annotations

import math
from typing import Any

import msgspec
from river import anomaly, compose, preprocessing

from .state import PickledModel


class HalfSpaceTreesDetector(msgspec.Struct):
    """``MinMaxScaler | HalfSpaceTrees``, seeded; scores in [0, 1] (high = anomalous).

    Non-finite features are dropped from the row before scoring and learning (river's
    models take sparse dicts: a missing feature is simply absent).

    Parameters
    ----------
    n_trees, height, window_size
        As :class:`river.anomaly.HalfSpaceTrees`.
    seed
        Seeds the trees: the same seed and inputs give the same scores.

    Examples
    --------
    >>> import numpy as np
    >>> from detectors.state import decode_state, encode_state
    >>> rng = np.random.default_rng(0)
    >>> det = HalfSpaceTreesDetector(seed=42)
    >>> for _ in range(300):
    ...     det.learn_one({"a": float(rng.normal(1.0, 0.05)), "b": float(rng.normal(2.0, 0.05))})
    >>> det.score_one({"a": 1.0, "b": 2.0}) < det.score_one({"a": 3.0, "b": -1.0})
    True
    >>> clone = decode_state(encode_state(det), HalfSpaceTreesDetector)
    >>> clone.score_one({"a": 1.0, "b": 2.0}) == det.score_one({"a": 1.0, "b": 2.0})
    True
    """

    n_trees: int = 10
    height: int = 8
    window_size: int = 100
    seed: int = 42
    learned: int = 0
    #: The river pipeline; None only until ``__post_init__`` builds it.
    model: PickledModel | None = None

    def __post_init__(self) -> None:
        if self.model is None:
            self.model = PickledModel(
                compose.Pipeline(
                    preprocessing.MinMaxScaler(),
                    anomaly.HalfSpaceTrees(
                        n_trees=self.n_trees,
                        height=self.height,
                        window_size=self.window_size,
                        seed=self.seed,
                    ),
                )
            )

    @property
    def _pipeline(self) -> Any:
        assert self.model is not None  # built by __post_init__
        return self.model.model

    @staticmethod
    def _clean(x: dict[str, float]) -> dict[str, float]:
        return {k: float(v) for k, v in x.items() if v is not None and math.isfinite(v)}

    def learn_one(self, x: dict[str, float]) -> None:
        row = self._clean(x)
        if row:
            self._pipeline.learn_one(row)
            self.learned += 1

    def score_one(self, x: dict[str, float]) -> float:
        """Anomaly score in [0, 1]; NaN if no feature is finite."""
        row = self._clean(x)
        if not row:
            return math.nan
        return float(self._pipeline.score_one(row))
