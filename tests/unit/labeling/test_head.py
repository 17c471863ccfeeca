"""The fast head: a class-balanced classifier on cached features."""

from __future__ import annotations

import re

import numpy as np
import pytest

from labeling.errors import ConfigError, DataError, NotTrainedError
from labeling.head import FeatureModel, HeadConfig, SklearnHead


def _blobs(counts: dict[str, int], d: int = 8, spread: float = 0.3, seed: int = 0):
    """Gaussian blobs, one per class, centres 3 apart on separate axes."""
    rng = np.random.default_rng(seed)
    xs, ys = [], []
    for i, (name, n) in enumerate(counts.items()):
        centre = np.zeros(d)
        centre[i % d] = 3.0
        xs.append(centre + spread * rng.normal(size=(n, d)))
        ys += [name] * n
    return np.concatenate(xs).astype(np.float32), ys


@pytest.mark.parametrize("kind", ["logreg", "mlp"])
def test_fits_blobs_and_returns_float32_columns_in_class_order(kind):
    x, y = _blobs({"b": 30, "a": 30, "c": 30})
    head = SklearnHead(HeadConfig(kind=kind)).fit(x, y)
    proba = head.predict_proba(x)
    assert head.classes_ == ("a", "b", "c")
    assert proba.shape == (90, 3) and proba.dtype == np.float32
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, atol=1e-5)
    predicted = np.asarray(head.classes_)[proba.argmax(axis=1)]
    assert (predicted == np.asarray(y)).mean() > 0.95


def test_class_balancing_keeps_a_rare_class_visible():
    # 300 common vs 4 rare cells, overlapping: unweighted, two of the four get p < 0.5
    x, y = _blobs({"common": 300, "rare": 4}, spread=2.0, seed=1)
    head = SklearnHead().fit(x, y)
    rare_rows = np.asarray(y) == "rare"
    p_rare = head.predict_proba(x)[:, head.classes_.index("rare")]
    assert (p_rare[rare_rows] > 0.5).all()


def test_single_class_predicts_that_class_with_probability_one():
    x, _ = _blobs({"a": 5})
    head = SklearnHead().fit(x, ["only"] * 5)
    assert head.classes_ == ("only",)
    proba = head.predict_proba(np.zeros((3, x.shape[1]), np.float32))
    np.testing.assert_array_equal(proba, np.ones((3, 1), np.float32))


def test_no_labels_and_untrained_head_raise_not_trained():
    with pytest.raises(NotTrainedError, match="no labels yet"):
        SklearnHead().fit(np.zeros((0, 4), np.float32), [])
    with pytest.raises(NotTrainedError, match="not trained yet"):
        SklearnHead().predict_proba(np.zeros((2, 4), np.float32))


def test_shape_mismatch_is_a_data_error():
    with pytest.raises(DataError, match=r"features of shape \(3, 4\) for 2 labels"):
        SklearnHead().fit(np.zeros((3, 4), np.float32), ["a", "b"])


def test_version_names_label_count_and_changes_with_the_labels():
    x, y = _blobs({"a": 10, "b": 10})
    v1 = SklearnHead().fit(x, y).version
    assert re.fullmatch(r"head-20-[0-9a-f]{8}", v1)
    assert SklearnHead().fit(x, y).version == v1
    flipped = ["b" if c == "a" else "a" for c in y]
    assert SklearnHead().fit(x, flipped).version != v1
    assert SklearnHead(HeadConfig(C=0.1)).fit(x, y).version != v1


def test_config_is_validated():
    with pytest.raises(ConfigError, match="head.kind 'svm'"):
        HeadConfig(kind="svm")
    with pytest.raises(ConfigError, match="head.C"):
        HeadConfig(C=0)


def test_head_satisfies_the_feature_model_protocol():
    assert isinstance(SklearnHead(), FeatureModel)
