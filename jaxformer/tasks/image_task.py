"""What the tasks on an image data set share (image_classification, contrastive,
image_captioning): their training and held-out batches.

`prepare` sets `train_data`, `val_data` (resized `ImageDataset`s) and `transform`; every batch
then passes through `with_targets`, where a task adds what it learns from besides images and
labels (the captions of the labels, for the tasks that have them).
"""

import jax.numpy as jnp
import numpy as np

from jaxformer.data.images import ImageBatch, endless, eval_image_batches
from jaxformer.data.sharding import ProcessShard
from jaxformer.tasks.base import Task


def in_batches(fn, images: np.ndarray, batch_size: int) -> np.ndarray:
    """`fn` (a jitted function of a [rows, h, w, c] batch) over `images` in slices of
    `batch_size`, its outputs concatenated on the host."""
    return np.concatenate([np.asarray(fn(jnp.asarray(images[i:i + batch_size])))
                           for i in range(0, len(images), batch_size)])


class ImageTask(Task):
    def with_targets(self, batch: dict, rng: np.random.Generator | None) -> dict:
        """`batch` (images, labels, weights) with the task's own entries added; `rng` is the
        training batch's generator, or None for the held-out batches (which must not vary)."""
        return batch

    def train_iterator(self, *, process_index: int, process_count: int):
        t = self.config.train
        seed = int(np.random.SeedSequence([self.config.data.seed, t.seed]).generate_state(1)[0])
        images = ImageBatch(self.train_data, self.transform, batch_size=t.batch_size, seed=seed,
                            train=True, shard=ProcessShard(process_index, process_count))

        def make_batch(index: int) -> dict:
            return self.with_targets(images(index), np.random.default_rng([seed, index, 2]))

        return iter(endless(make_batch))

    def eval_batches(self, *, process_index: int, process_count: int) -> list[dict]:
        """The whole held-out split (every image once), or none when `train.eval_batches` is 0."""
        if not self.config.train.eval_batches:
            return []
        batches = eval_image_batches(self.val_data, self.transform,
                                     batch_size=self.config.train.batch_size,
                                     shard=ProcessShard(process_index, process_count))
        return [self.with_targets(batch, None) for batch in batches]
