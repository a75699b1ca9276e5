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


def test_resize_and_unit_scale():
    """digits at 28x28 (bilinear, range kept), in [0, 1]: exactly pixel / 16 at the original size."""
    cfg = DataConfig(dataset="digits", resize=28, scale="unit")
    a, b = data.load(cfg, seed=0), data.load(cfg, seed=0)
    np.testing.assert_array_equal(a.x_train, b.x_train)
    assert a.input_shape == (784,) == data.input_shape(cfg)
    assert a.x_train.dtype == np.float32 and a.x_train.min() >= 0.0 and a.x_train.max() <= 1.0
    assert data.input_shape(DataConfig(dataset="digits", layout="image", resize=28)) == (1, 28, 28)
    plain = data.load(DataConfig(dataset="digits"), seed=0)
    unit = data.load(DataConfig(dataset="digits", scale="unit"), seed=0)
    codes = unit.x_test * 16
    assert np.array_equal(codes, np.round(codes)) and np.array_equal(unit.x_test * 2 - 1, plain.x_test)
    # a constant image stays constant; the upsampled image keeps the coarse one's mean (bilinear, no antialias)
    np.testing.assert_allclose(data.resize_images(np.full((1, 64), 0.25, np.float32), 28), 0.25, rtol=1e-6)
    small = data.load(DataConfig(dataset="digits", scale="unit"), seed=0).x_test
    assert abs(float(a.x_test.mean()) - float(small.mean())) < 0.02


def test_resize_refuses_non_image_data():
    from codesign.errors import CodesignError

    with pytest.raises(CodesignError, match="data.resize"):
        data.load(DataConfig(dataset="wine", resize=4), seed=0)
