"""Image data sets and the grain pipeline that turns them into batches.

    data = load_image_dataset("digits")         # scikit-learn's 1,797 8x8 handwritten digits
    train, val = split_images(data, val_fraction=0.2, seed=0)
    it = image_batches(train, ImageTransform(...), batch_size=64, seed=1, train=True, shard=...)

Each batch is {"images": float32 [rows, size, size, channels] (NHWC), "labels": int32 [rows],
"weights": float32 [rows]} (weights 0 mark the repeats that fill up the last evaluation batch).
Transforms, in order: resize (bilinear, once per data set, since every image gets the same one),
then per batch: for training a random crop of the image padded by `crop_padding` pixels and an
optional horizontal flip; last, normalisation by the training split's per-channel mean and std.

As the token windows do (`windows.py`), element j of the grain dataset is global batch j, made from
a generator seeded by (seed, j): training batches walk through a fresh permutation of the split
every epoch, so the iterator state is one index and resuming is exact, and a process keeps its
block of rows of each global batch.
"""

import dataclasses

import grain
import numpy as np

from jaxformer.data.sharding import ProcessShard
from jaxformer.errors import UserError

IMAGE_DATASETS = ("digits",)


@dataclasses.dataclass(frozen=True)
class ImageDataset:
    images: np.ndarray  # float32 [n, height, width, channels], pixels in [0, 1]
    labels: np.ndarray  # int32 [n]
    class_names: tuple[str, ...]

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, indices: np.ndarray) -> "ImageDataset":
        return ImageDataset(self.images[indices], self.labels[indices], self.class_names)


def load_image_dataset(name: str) -> ImageDataset:
    """A registered data set shipped with a pip package (nothing is downloaded). "digits":
    scikit-learn's `load_digits` (UCI optical digits: 1,797 images of 8x8 pixels, 17 grey levels,
    ten classes), scaled to [0, 1]."""
    if name != "digits":
        raise UserError(f"unknown image data set {name!r}: known data sets are "
                        f"{', '.join(IMAGE_DATASETS)}")
    try:
        from sklearn.datasets import load_digits  # scikit-learn is heavy: only for digits
    except ImportError:
        raise UserError("the digits data set comes with scikit-learn: pip install scikit-learn"
                        ) from None
    digits = load_digits()
    images = (digits.images / 16.0).astype(np.float32)[..., None]
    return ImageDataset(images, digits.target.astype(np.int32), tuple(str(i) for i in range(10)))


def split_images(data: ImageDataset, val_fraction: float, seed: int = 0
                 ) -> tuple[ImageDataset, ImageDataset]:
    """(train, held out): a seeded shuffle, then the last `val_fraction` of the images held out.
    The same seed gives the same split on every machine (numpy's PCG64)."""
    if not 0.0 < val_fraction < 1.0:
        raise UserError(f"val_fraction={val_fraction} must lie strictly between 0 and 1")
    order = np.random.default_rng(seed).permutation(len(data))
    cut = int(len(data) * (1.0 - val_fraction))
    return data.subset(np.sort(order[:cut])), data.subset(np.sort(order[cut:]))


def linear_resize_matrix(in_size: int, out_size: int) -> np.ndarray:
    """[out_size, in_size] bilinear resize along one axis with half-pixel centres (as
    `jax.image.resize(..., "linear")` and PIL for upsampling), edges clamped."""
    source = np.clip((np.arange(out_size) + 0.5) * in_size / out_size - 0.5, 0, in_size - 1)
    low = np.floor(source).astype(int)
    high = np.minimum(low + 1, in_size - 1)
    t = source - low
    matrix = np.zeros((out_size, in_size))
    np.add.at(matrix, (np.arange(out_size), low), 1 - t)
    np.add.at(matrix, (np.arange(out_size), high), t)
    return matrix


def resize(images: np.ndarray, size: int) -> np.ndarray:
    """[n, h, w, c] -> [n, size, size, c], bilinear."""
    rows = linear_resize_matrix(images.shape[1], size)
    cols = linear_resize_matrix(images.shape[2], size)
    return np.einsum("ri,nijc,sj->nrsc", rows, images, cols).astype(np.float32)


@dataclasses.dataclass(frozen=True)
class ImageTransform:
    """What happens to each image after resizing. mean/std: per channel (the training split's)."""

    mean: np.ndarray
    std: np.ndarray
    crop_padding: int = 0  # training: a random crop of the image zero-padded by this many pixels
    flip: bool = False  # training: mirror left-right with probability 1/2

    def normalise(self, images: np.ndarray) -> np.ndarray:
        return ((images - self.mean) / self.std).astype(np.float32)

    def augment(self, images: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Random crop (after zero padding) and flip, per image."""
        n, h, w, _ = images.shape
        p = self.crop_padding
        if p:
            padded = np.pad(images, [(0, 0), (p, p), (p, p), (0, 0)])
            dy, dx = rng.integers(0, 2 * p + 1, size=(2, n))
            rows = dy[:, None] + np.arange(h)  # [n, h]
            cols = dx[:, None] + np.arange(w)  # [n, w]
            images = padded[np.arange(n)[:, None, None], rows[:, :, None], cols[:, None, :]]
        if self.flip:
            flip = rng.random(n) < 0.5
            images = np.where(flip[:, None, None, None], images[:, :, ::-1], images)
        return images


def channel_stats(images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel mean and std over [n, h, w, c] images (std floored to avoid dividing by 0)."""
    return (images.mean(axis=(0, 1, 2)).astype(np.float32),
            np.maximum(images.std(axis=(0, 1, 2)), 1e-6).astype(np.float32))


class ImageBatch:
    """Global batch index -> this process's rows of that batch."""

    def __init__(self, data: ImageDataset, transform: ImageTransform, *, batch_size: int,
                 seed: int, train: bool, shard: ProcessShard):
        shard.local_batch_size(batch_size)  # fail early on an indivisible batch
        if len(data) == 0:
            raise UserError("the image split is empty: lower val_fraction")
        self.data, self.transform = data, transform
        self.batch_size, self.seed, self.train, self.shard = batch_size, seed, train, shard

    def indices(self, index: int) -> np.ndarray:
        """Which images global batch `index` holds: positions index*B .. (index+1)*B - 1 of the
        endless sequence of epochs, each a permutation (training) or the split in order."""
        n = len(self.data)
        positions = index * self.batch_size + np.arange(self.batch_size)
        epochs, offsets = np.divmod(positions, n)
        if not self.train:
            return offsets
        out = np.empty(self.batch_size, dtype=np.int64)
        for epoch in np.unique(epochs):
            order = np.random.default_rng([self.seed, int(epoch)]).permutation(n)
            out[epochs == epoch] = order[offsets[epochs == epoch]]
        return out

    def __call__(self, index: int) -> dict[str, np.ndarray]:
        rows = self.shard.rows(self.indices(index))
        images = self.data.images[rows]
        if self.train:
            rng = np.random.default_rng([self.seed, index, 1])
            images = self.transform.augment(images, rng)
        return {"images": self.transform.normalise(images),
                "labels": self.data.labels[rows].astype(np.int32),
                "weights": np.ones(len(rows), np.float32)}


def image_batches(data: ImageDataset, transform: ImageTransform, *, batch_size: int, seed: int,
                  train: bool, shard: ProcessShard) -> grain.IterDataset:
    """An endless grain dataset of batches of `data` (already resized)."""
    return endless(ImageBatch(data, transform, batch_size=batch_size, seed=seed, train=train,
                              shard=shard))


def endless(make_batch) -> grain.IterDataset:
    """Global batch index -> batch, as an endless, checkpointable grain dataset."""
    # Indices are free to go up to 2**62: a run never exhausts them.
    ds = grain.MapDataset.range(2**62).map(make_batch)
    return ds.to_iter_dataset(grain.ReadOptions(num_threads=0, prefetch_buffer_size=0))


def eval_image_batches(data: ImageDataset, transform: ImageTransform, *, batch_size: int,
                       shard: ProcessShard) -> list[dict[str, np.ndarray]]:
    """The whole split once, in order, in batches of `batch_size`; the last batch is filled up
    with repeats that carry `weights` 0, so every image counts exactly once."""
    batches = []
    for start in range(0, len(data), batch_size):
        index = np.arange(start, start + batch_size)
        weights = (index < len(data)).astype(np.float32)
        rows = shard.rows(index % len(data))
        batch = {"images": transform.normalise(data.images[rows]),
                 "labels": data.labels[rows].astype(np.int32),
                 "weights": shard.rows(weights)}
        batches.append(batch)
    return batches
