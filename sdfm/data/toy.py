"""Seeded 2-D toy distributions: checkerboard, eight Gaussians, two moons, two rings, spiral.

Every toy keeps its coordinates within a few units of the origin, so the same network and
step sizes suit them all. Train and test are drawn one after the other from one
``numpy.random.default_rng(seed)`` stream.
"""

from __future__ import annotations

import numpy as np
import torch

from sdfm.data.dataset import DataError, Dataset
from sdfm.data.options import as_int

__all__ = ["TOY_DATASETS", "ToyBuilder"]


def _checkerboard(rng: np.random.Generator, n: int) -> np.ndarray:
    """Uniform on the 8 dark unit squares of a 4x4 board covering [-2, 2]^2."""
    dark = np.array([(i, j) for i in range(4) for j in range(4) if (i + j) % 2 == 0], dtype=np.float64)
    corners = dark[rng.integers(0, len(dark), size=n)] - 2.0
    return corners + rng.random((n, 2))


def _eight_gaussians(rng: np.random.Generator, n: int) -> np.ndarray:
    """Eight Gaussians of std 0.2 centred on the circle of radius 2 at angles k pi / 4."""
    angles = rng.integers(0, 8, size=n) * (np.pi / 4)
    centres = 2.0 * np.stack([np.cos(angles), np.sin(angles)], axis=1)
    return centres + 0.2 * rng.standard_normal((n, 2))


def _moons(rng: np.random.Generator, n: int) -> np.ndarray:
    """Two interleaved half circles (noise std 0.05), centred and scaled to about [-2, 2] x [-1, 1]."""
    upper = rng.random(n) < 0.5
    t = rng.random(n) * np.pi
    x = np.where(upper, np.cos(t), 1.0 - np.cos(t))
    y = np.where(upper, np.sin(t), 0.5 - np.sin(t))
    points = np.stack([x - 0.5, y - 0.25], axis=1) + 0.05 * rng.standard_normal((n, 2))
    return 1.25 * points


def _two_rings(rng: np.random.Generator, n: int) -> np.ndarray:
    """Two concentric circles of radii 1 and 2 (radial noise std 0.05), uniform along their length."""
    radius = np.where(rng.random(n) < 1 / 3, 1.0, 2.0) + 0.05 * rng.standard_normal(n)
    angle = rng.random(n) * 2 * np.pi
    return np.stack([radius * np.cos(angle), radius * np.sin(angle)], axis=1)


def _spiral(rng: np.random.Generator, n: int) -> np.ndarray:
    """A two-turn Archimedean spiral of outer radius 2 with noise std 0.05."""
    t = np.sqrt(rng.random(n))  # uniform along the arc, roughly
    angle = 4 * np.pi * t
    points = 2.0 * t[:, None] * np.stack([np.cos(angle), np.sin(angle)], axis=1)
    return points + 0.05 * rng.standard_normal((n, 2))


_SAMPLERS = {
    "checkerboard": _checkerboard,
    "eight_gaussians": _eight_gaussians,
    "moons": _moons,
    "two_rings": _two_rings,
    "spiral": _spiral,
}


class ToyBuilder:
    """Builds one 2-D toy data set; the options are the keyword arguments of :meth:`__call__`."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._sample = _SAMPLERS[name]

    def __repr__(self) -> str:
        return f"ToyBuilder({self.name!r})"

    @staticmethod
    def check_options(*, n_train, n_test, seed) -> dict:
        """The options as the builder uses them; an :class:`OptionError` for a bad one."""
        return {"n_train": as_int("n_train", n_train, minimum=1), "n_test": as_int("n_test", n_test, minimum=0),
                "seed": as_int("seed", seed, minimum=0)}

    def __call__(self, *, n_train: int = 5000, n_test: int = 2000, seed: int = 0) -> Dataset:
        """Draw the data set.

        Args:
            n_train: number of training points (>= 1).
            n_test: number of test points (>= 0).
            seed: seed of the generator that draws both splits.

        Returns:
            A ``"points"`` data set of float32 (n, 2) coordinates, without labels.
        """
        n_train, n_test, seed = self.check_options(n_train=n_train, n_test=n_test, seed=seed).values()
        rng = np.random.default_rng(seed)
        train, test = self._sample(rng, n_train), self._sample(rng, n_test)
        if not (np.isfinite(train).all() and np.isfinite(test).all()):
            raise DataError(f"toy data set {self.name!r} drew non-finite points; report this as a bug")
        return Dataset(
            name=self.name,
            train=torch.from_numpy(train.astype(np.float32)),
            test=torch.from_numpy(test.astype(np.float32)),
            train_labels=None,
            test_labels=None,
            num_classes=None,
            kind="points",
        )


TOY_DATASETS = {name: ToyBuilder(name) for name in _SAMPLERS}
