"""Online learning with river: Half-Space Trees over min-max-scaled trip features.

One :class:`HalfSpaceTreesDetector` per elevator or per cohort; state round-trips through
bytes (:meth:`to_bytes` / :meth:`from_bytes`) for the worker's checkpoints.
"""

from __future__ import annotations

import math
import pickle
from typing import Any

from river import anomaly, compose, preprocessing


class HalfSpaceTreesDetector:
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
    >>> rng = np.random.default_rng(0)
    >>> det = HalfSpaceTreesDetector(seed=42)
    >>> for _ in range(300):
    ...     det.learn_one({"a": float(rng.normal(1.0, 0.05)), "b": float(rng.normal(2.0, 0.05))})
    >>> det.score_one({"a": 1.0, "b": 2.0}) < det.score_one({"a": 3.0, "b": -1.0})
    True
    >>> clone = HalfSpaceTreesDetector.from_bytes(det.to_bytes())
    >>> clone.score_one({"a": 1.0, "b": 2.0}) == det.score_one({"a": 1.0, "b": 2.0})
    True
    """

    def __init__(
        self, n_trees: int = 10, height: int = 8, window_size: int = 100, seed: int = 42
    ) -> None:
        self.n_trees = n_trees
        self.height = height
        self.window_size = window_size
        self.seed = seed
        self.model: Any = compose.Pipeline(
            preprocessing.MinMaxScaler(),
            anomaly.HalfSpaceTrees(
                n_trees=n_trees, height=height, window_size=window_size, seed=seed
            ),
        )
        self.learned = 0

    @staticmethod
    def _clean(x: dict[str, float]) -> dict[str, float]:
        return {k: float(v) for k, v in x.items() if v is not None and math.isfinite(v)}

    def learn_one(self, x: dict[str, float]) -> None:
        row = self._clean(x)
        if row:
            self.model.learn_one(row)
            self.learned += 1

    def score_one(self, x: dict[str, float]) -> float:
        """Anomaly score in [0, 1]; NaN if no feature is finite."""
        row = self._clean(x)
        if not row:
            return math.nan
        return float(self.model.score_one(row))

    def to_bytes(self) -> bytes:
        return pickle.dumps(self.__dict__, protocol=pickle.HIGHEST_PROTOCOL)

    @classmethod
    def from_bytes(cls, data: bytes) -> HalfSpaceTreesDetector:
        obj = cls.__new__(cls)
        obj.__dict__.update(pickle.loads(data))
        return obj
