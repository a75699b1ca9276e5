"""Datasets are deterministic: the same seed gives the same split; different seeds differ."""

import numpy as np
import pytest

from codesign import data
from codesign.config import DataConfig


@pytest.mark.parametrize("name, layout, shape", [
    ("digits", "flat", (64,)), ("digits", "image", (1, 8, 8)), ("wine", "flat", (13,)),
    ("breast_cancer", "flat", (30,)), ("synthetic_jets", "flat", (16,)), ("mnist1d", "signal", (1, 40)),
])
def test_shapes_and_determinism(name, layout, shape):
    cfg = DataConfig(dataset=name, layout=layout)
    a, b = data.load(cfg, seed=3), data.load(cfg, seed=3)
    assert a.input_shape == shape == data.input_shape(cfg)
    for f in ("x_train", "y_train", "x_val", "y_val", "x_test", "y_test"):
        np.testing.assert_array_equal(getattr(a, f), getattr(b, f))
    assert np.abs(a.x_train).max() <= 1.0 + 1e-6 or name == "mnist1d"
    assert set(np.unique(a.y_train)) == set(range(a.n_classes))


def test_different_seed_different_split():
    cfg = DataConfig(dataset="digits")
    a, b = data.load(cfg, seed=0), data.load(cfg, seed=1)
    assert not np.array_equal(a.y_test, b.y_test)
    assert len(a.x_test) == len(b.x_test) == round(1797 * 0.2)


def test_splits_are_disjoint_and_complete():
    cfg = DataConfig(dataset="digits")
    d = data.load(cfg, seed=0)
    assert len(d.x_train) + len(d.x_val) + len(d.x_test) == 1797
    rows = {r.tobytes() for r in d.x_test}
    overlap = sum(r.tobytes() in rows for r in d.x_train)
    assert overlap < 5  # digits has a handful of duplicate images, nothing more


def test_subsample():
    d = data.load(DataConfig(dataset="digits", n_samples=200), seed=0)
    assert len(d.x_train) + len(d.x_val) + len(d.x_test) == 200
