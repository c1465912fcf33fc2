"""The image pipeline: scikit-learn's digits, the split, resizing, augmentation, batches that
resume exactly and shard by process, evaluation batches that count each image once; captions."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxformer.data.captions import DIGIT_WORDS, TEMPLATES, Captions
from jaxformer.data.images import (ImageBatch, ImageTransform, channel_stats, eval_image_batches,
                                   image_batches, load_image_dataset, resize, split_images)
from jaxformer.data.sharding import ProcessShard
from jaxformer.errors import UserError


@pytest.fixture(scope="module")
def digits():
    return load_image_dataset("digits")


def test_digits_as_published(digits):
    # UCI optical digits in scikit-learn: 1,797 images of 8x8, ten classes, 17 grey levels.
    assert digits.images.shape == (1797, 8, 8, 1) and digits.images.dtype == np.float32
    assert np.bincount(digits.labels).tolist() == [178, 182, 177, 183, 181, 182, 181, 179, 174, 180]
    assert digits.images.min() == 0.0 and digits.images.max() == 1.0
    assert len(np.unique(digits.images * 16)) == 17


def test_split_is_seeded_disjoint_and_complete(digits):
    train, val = split_images(digits, 0.2, seed=0)
    again, _ = split_images(digits, 0.2, seed=0)
    other, _ = split_images(digits, 0.2, seed=1)
    assert len(train) == 1437 and len(val) == 360
    np.testing.assert_array_equal(train.images, again.images)
    assert not np.array_equal(train.images, other.images)
    flat = lambda d: {x.tobytes() + bytes([y]) for x, y in zip(d.images, d.labels)}
    assert len(flat(train) | flat(val)) == len(flat(digits))  # together, every distinct image


def test_resize_matches_jax_linear_upsampling(digits):
    images = digits.images[:5]
    expected = jax.image.resize(jnp.asarray(images), (5, 16, 16, 1), "linear")
    np.testing.assert_allclose(resize(images, 16), np.asarray(expected), atol=1e-6)


def test_augment_crops_are_shifts_and_flips_are_mirrors(digits):
    images = resize(digits.images[:20], 12)
    p = 2
    crops = ImageTransform(np.zeros(1), np.ones(1), crop_padding=p).augment(
        images, np.random.default_rng(0))
    padded = np.pad(images, [(0, 0), (p, p), (p, p), (0, 0)])
    shifts = set()
    for image, crop in zip(padded, crops):
        found = [(dy, dx) for dy in range(2 * p + 1) for dx in range(2 * p + 1)
                 if np.array_equal(image[dy:dy + 12, dx:dx + 12], crop)]
        assert found, "a crop is no window of the padded image"
        shifts.add(found[0])
    assert len(shifts) > 5  # the windows vary
    flips = ImageTransform(np.zeros(1), np.ones(1), flip=True).augment(images, np.random.default_rng(0))
    mirrored = [np.array_equal(f, i[:, ::-1]) and not np.array_equal(f, i) for f, i in zip(flips, images)]
    kept = [np.array_equal(f, i) for f, i in zip(flips, images)]
    assert all(m or k for m, k in zip(mirrored, kept)) and 3 < sum(mirrored) < 17


def test_training_batches_resume_exactly_and_shard_by_process(digits):
    train, _ = split_images(digits, 0.2)
    transform = ImageTransform(*channel_stats(train.images), crop_padding=1)
    iterator = iter(image_batches(train, transform, batch_size=8, seed=3, train=True,
                                  shard=ProcessShard()))
    for _ in range(3):
        next(iterator)
    state = iterator.get_state()
    expected = [next(iterator) for _ in range(2)]
    resumed = iter(image_batches(train, transform, batch_size=8, seed=3, train=True,
                                 shard=ProcessShard()))
    resumed.set_state(state)
    for want in expected:
        got = next(resumed)
        for name in ("images", "labels", "weights"):
            np.testing.assert_array_equal(got[name], want[name])
    halves = [ImageBatch(train, transform, batch_size=8, seed=3, train=True,
                         shard=ProcessShard(i, 2))(4) for i in range(2)]
    np.testing.assert_array_equal(np.concatenate([h["labels"] for h in halves]),
                                  ImageBatch(train, transform, batch_size=8, seed=3, train=True,
                                             shard=ProcessShard())(4)["labels"])


def test_an_epoch_visits_every_training_image_once(digits):
    train, _ = split_images(digits, 0.5)
    make = ImageBatch(train, ImageTransform(np.zeros(1), np.ones(1)), batch_size=7, seed=0,
                      train=True, shard=ProcessShard())
    seen = np.concatenate([make.indices(i) for i in range(-(-len(train) // 7))])[:len(train)]
    assert sorted(seen.tolist()) == list(range(len(train)))


def test_eval_batches_count_each_image_once(digits):
    _, val = split_images(digits, 0.2)
    transform = ImageTransform(*channel_stats(val.images))
    batches = eval_image_batches(val, transform, batch_size=64, shard=ProcessShard())
    assert len(batches) == 6 and sum(b["weights"].sum() for b in batches) == 360
    labels = np.concatenate([b["labels"][b["weights"] > 0] for b in batches])
    np.testing.assert_array_equal(labels, val.labels)
    images = np.concatenate([b["images"] for b in batches])
    assert abs(images.mean()) < 0.1 and abs(images.std() - 1) < 0.1  # normalised


def test_unknown_dataset_is_named():
    with pytest.raises(UserError, match="unknown image data set 'mnist'.*digits"):
        load_image_dataset("mnist")


def test_captions_tokenize_and_pool_at_the_largest_id():
    captions = Captions(TEMPLATES, DIGIT_WORDS)
    tokens, segment_ids = captions.encode(["a handwritten seven", "nine"])
    assert captions.decode(tokens[0]) == "a handwritten seven"
    assert tokens.shape == (2, captions.max_len) and captions.max_len == 8  # 6 words + start/end
    assert tokens[1].tolist()[:3] == [1, captions.ids["nine"], captions.eos_token_id]
    np.testing.assert_array_equal(segment_ids, tokens != 0)
    assert captions.eos_token_id == captions.vocab_size - 1 == tokens.max()
    prompts, _ = captions.class_prompts()
    assert [captions.decode(p) for p in prompts[:2]] == ["a photo of the digit zero",
                                                         "a photo of the digit one"]
    with pytest.raises(UserError, match="outside the vocabulary"):
        captions.encode(["a photo of a cat"])
