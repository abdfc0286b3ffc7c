"""Reference statistics files: round trip, the keys they are checked by, and the weights checksum."""

import hashlib

import numpy as np
import pytest
import torch

from sdfm.metrics.reference_stats import (ReferenceMismatch, file_sha256, load_reference_statistics,
                                          reference_statistics, save_reference_statistics, verified_sha256)

KEYS = {"data_sha256": "a" * 64, "weights_sha256": "b" * 64, "extractor": "inception-v3-compat", "split": "test"}


def test_round_trip_with_and_without_features(tmp_path):
    feats = torch.randn(30, 5, generator=torch.Generator().manual_seed(0))
    stats = reference_statistics(feats, keep_features=True, **KEYS)
    np.testing.assert_allclose(stats.mu, feats.double().mean(0).numpy(), rtol=1e-12)
    np.testing.assert_allclose(stats.sigma, np.cov(feats.double().numpy(), rowvar=False), rtol=1e-10)
    loaded = load_reference_statistics(save_reference_statistics(stats, tmp_path / "s.npz"), KEYS, need_features=True)
    assert loaded.count == 30 and loaded.keys == KEYS
    assert torch.equal(loaded.features, feats) and np.array_equal(loaded.sigma, stats.sigma)
    bare = save_reference_statistics(reference_statistics(feats, **KEYS), tmp_path / "bare.npz")
    assert load_reference_statistics(bare, KEYS).features is None
    with pytest.raises(ReferenceMismatch, match="kid / precision / recall need the reference features"):
        load_reference_statistics(bare, KEYS, need_features=True)


@pytest.mark.parametrize("key", ["data_sha256", "weights_sha256", "split"])
def test_statistics_of_other_data_or_weights_are_refused_in_one_line(tmp_path, key):
    path = save_reference_statistics(reference_statistics(torch.randn(4, 3), **KEYS), tmp_path / "s.npz")
    with pytest.raises(ReferenceMismatch) as error:
        load_reference_statistics(path, {**KEYS, key: "c" * 64})
    message = str(error.value)
    assert "\n" not in message and f"computed with {key}" in message and "fid_reference" in message


def test_unreadable_files_are_named(tmp_path):
    (tmp_path / "bad.npz").write_bytes(b"no zip")
    with pytest.raises(ReferenceMismatch, match="bad.npz: not readable"):
        load_reference_statistics(tmp_path / "bad.npz")


def test_the_weights_checksum(tmp_path):
    weights = tmp_path / "w.pth"
    weights.write_bytes(b"x" * (3 << 20))  # more than one 1 MiB chunk
    expected = hashlib.sha256(b"x" * (3 << 20)).hexdigest()
    assert file_sha256(weights) == expected == verified_sha256(weights, expected.upper())
    assert verified_sha256(weights) == expected
    with pytest.raises(ReferenceMismatch) as error:
        verified_sha256(weights, "0" * 64, "evaluate.inception_weights")
    message = str(error.value)
    assert "\n" not in message and expected in message and "0" * 64 in message and "sha256sum" in message
