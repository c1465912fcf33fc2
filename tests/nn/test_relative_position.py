"""T5's relative position buckets against HF transformers' implementation and the published table,
and the bias module against a lookup written out by hand."""

import numpy as np
import pytest
from flax import nnx

from jaxformer.nn import RelativePositionBias, relative_position_bucket

import torch  # an installed extra: missing, this fails rather than skips
import transformers  # an installed extra: missing, this fails rather than skips
from transformers.models.t5.modeling_t5 import T5Attention  # noqa: E402

DISTANCES = np.arange(-300, 301)


@pytest.mark.parametrize("bidirectional", [True, False])
@pytest.mark.parametrize("num_buckets,max_distance", [(32, 128), (8, 20), (64, 256)])
def test_buckets_equal_hf(bidirectional, num_buckets, max_distance):
    ours = np.asarray(relative_position_bucket(DISTANCES, bidirectional=bidirectional,
                                               num_buckets=num_buckets, max_distance=max_distance))
    theirs = T5Attention._relative_position_bucket(
        torch.as_tensor(DISTANCES), bidirectional=bidirectional, num_buckets=num_buckets,
        max_distance=max_distance).numpy()
    np.testing.assert_array_equal(ours, theirs)


def test_published_table():
    """The buckets REFERENCE_NUMBERS lists for T5 (32 buckets, max distance 128)."""
    distances = [-128, -100, -16, -9, -8, -7, -1, 0, 1, 7, 8, 16, 100, 128]
    both = [15, 15, 10, 8, 8, 7, 1, 0, 17, 23, 24, 26, 31, 31]
    causal = [31, 30, 16, 9, 8, 7, 1, 0, 0, 0, 0, 0, 0, 0]
    assert np.asarray(relative_position_bucket(np.asarray(distances), bidirectional=True)).tolist() == both
    assert np.asarray(relative_position_bucket(np.asarray(distances), bidirectional=False)).tolist() == causal


def test_bias_is_a_table_lookup():
    bias = RelativePositionBias(3, bidirectional=False, num_buckets=8, max_distance=20,
                                rngs=nnx.Rngs(0))
    q = np.array([[0, 1, 2, 9]])
    k = np.array([[0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10]])
    out = np.asarray(bias(q, k))
    table = np.asarray(bias.embedding[...])
    assert out.shape == (1, 3, 4, 11)
    for i, qi in enumerate(q[0]):
        for j, kj in enumerate(k[0]):
            bucket = int(T5Attention._relative_position_bucket(
                torch.tensor(int(kj - qi)), bidirectional=False, num_buckets=8, max_distance=20))
            np.testing.assert_allclose(out[0, :, i, j], table[bucket], rtol=0, atol=0)
