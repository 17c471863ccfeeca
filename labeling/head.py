"""The fast head the labeling loop refits after every batch: a classifier on cached features.

The loop sees a model only through :class:`FeatureModel` (features in, probabilities out, never
crops); :class:`SklearnHead` is the scikit-learn implementation. Refit on 5,000 labels x 100
features takes well under a second on 2 cores (logistic regression). BLAS runs single-threaded
inside fit and predict: the matrices are small, and multi-threaded BLAS on a 2-core machine
shared with the app and the trainer spins (a simulated run was 5x slower).
"""

from __future__ import annotations

import hashlib
import logging
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.neural_network import MLPClassifier
from sklearn.preprocessing import StandardScaler
from sklearn.utils.class_weight import compute_sample_weight
from threadpoolctl import threadpool_limits

from labeling.errors import ConfigError, DataError, NotTrainedError

logger = logging.getLogger(__name__)

HEAD_KINDS = ("logreg", "mlp")


@runtime_checkable
class FeatureModel(Protocol):
    """A classifier over per-cell features, as the labeling loop uses it."""

    version: str
    classes_: tuple[str, ...]

    def fit(self, features: npt.NDArray[np.float32], labels: Sequence[str]) -> FeatureModel:
        """Train on (n, d) features and n class names; returns self."""
        ...

    def predict_proba(self, features: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        """(n, k) float32 probabilities, columns in the order of ``classes_``."""
        ...


@dataclass(frozen=True)
class HeadConfig:
    """How the head is trained."""

    kind: str = "logreg"  # "logreg" (class-balanced logistic regression) or "mlp" (one layer)
    C: float = 1.0  # inverse L2 strength (logreg); the MLP uses alpha = 1 / (C * n_labels)
    max_iter: int = 200  # optimiser iterations (logreg) or epochs (mlp)
    seed: int = 0  # seeds the solver
    hidden: int = 64  # hidden units of the mlp

    def __post_init__(self) -> None:
        if self.kind not in HEAD_KINDS:
            raise ConfigError(f"head.kind {self.kind!r}: allowed {HEAD_KINDS}")
        if not self.C > 0:
            raise ConfigError(f"head.C {self.C} must be > 0")
        if self.max_iter < 1 or self.hidden < 1:
            raise ConfigError(
                f"head.max_iter {self.max_iter} and head.hidden {self.hidden} must be >= 1"
            )


class SklearnHead:
    """StandardScaler + class-balanced logistic regression (or a one-hidden-layer MLP whose
    samples are weighted to balance the classes).

    With labels of a single class it predicts that class with probability 1 (one column of
    ones). Before :meth:`fit`, :meth:`predict_proba` raises NotTrainedError.

    Attributes:
        version: ``head-<n_labels>-<8 hex digits>``, a hash of the config, features and labels.
        classes_: the classes seen in training, sorted; the columns of predict_proba.
    """

    def __init__(self, config: HeadConfig | None = None) -> None:
        self.config = config or HeadConfig()
        self.version = "head-untrained"
        self.classes_: tuple[str, ...] = ()
        self._scaler: StandardScaler | None = None
        self._model: LogisticRegression | MLPClassifier | None = None

    def fit(self, features: npt.NDArray[np.float32], labels: Sequence[str]) -> SklearnHead:
        """Train on labeled cells.

        Args:
            features: (n, d) float32 features of the labeled cells.
            labels: n class names.

        Returns:
            self, with ``version`` and ``classes_`` updated.

        Raises:
            NotTrainedError: with no labels.
            DataError: when the shapes do not match.
        """
        x = np.asarray(features, dtype=np.float32)
        y = np.asarray([str(c) for c in labels], dtype=object)
        if len(y) == 0:
            raise NotTrainedError("no labels yet; label some cells before training the head")
        if x.ndim != 2 or len(x) != len(y):
            raise DataError(
                f"head: features of shape {x.shape} for {len(y)} labels; "
                "expected (n_labels, n_features)"
            )
        self.classes_ = tuple(sorted(set(y.tolist())))
        self.version = f"head-{len(y)}-{self._digest(x, y)}"
        if len(self.classes_) == 1:
            self._scaler, self._model = None, None
            return self
        self._scaler = StandardScaler().fit(x)
        self._model = self._new_model(len(y))
        xs = self._scaler.transform(x)
        with threadpool_limits(limits=1), warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", ConvergenceWarning)
            if isinstance(self._model, MLPClassifier):
                self._model.fit(xs, y, sample_weight=compute_sample_weight("balanced", y))
            else:
                self._model.fit(xs, y)
        if any(issubclass(w.category, ConvergenceWarning) for w in caught):
            logger.debug(
                "head %s: solver stopped at max_iter=%d", self.version, self.config.max_iter
            )
        return self

    def predict_proba(self, features: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        """Class probabilities.

        Args:
            features: (n, d) float32 features, same feature set as in :meth:`fit`.

        Returns:
            (n, k) float32, columns in the order of ``classes_``, rows sum to 1.

        Raises:
            NotTrainedError: before :meth:`fit`.
        """
        if not self.classes_:
            raise NotTrainedError("the head is not trained yet; call fit() with some labels")
        x = np.asarray(features, dtype=np.float32)
        if self._model is None or self._scaler is None:
            return np.ones((len(x), 1), dtype=np.float32)
        with threadpool_limits(limits=1):
            proba = self._model.predict_proba(self._scaler.transform(x))
        if tuple(self._model.classes_) != self.classes_:  # sklearn sorts too; never reorders
            raise NotTrainedError("head classes are out of order; refit the head")
        return proba.astype(np.float32, copy=False)

    def _new_model(self, n_labels: int) -> LogisticRegression | MLPClassifier:
        cfg = self.config
        if cfg.kind == "mlp":
            return MLPClassifier(
                hidden_layer_sizes=(cfg.hidden,),
                alpha=1.0 / (cfg.C * n_labels),
                max_iter=cfg.max_iter,
                batch_size=min(256, n_labels),
                random_state=cfg.seed,
                n_iter_no_change=5,
                tol=1e-3,
            )
        return LogisticRegression(
            C=cfg.C, class_weight="balanced", max_iter=cfg.max_iter, random_state=cfg.seed
        )

    def _digest(self, x: npt.NDArray[np.float32], y: npt.NDArray[np.object_]) -> str:
        h = hashlib.sha1(repr(self.config).encode())
        h.update(np.ascontiguousarray(x).tobytes())
        h.update("\x1f".join(y.tolist()).encode())
        return h.hexdigest()[:8]
