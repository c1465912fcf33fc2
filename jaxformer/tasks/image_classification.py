"""`image_classification`: one label per image (ViT on scikit-learn's digits).

Data: an image data set shipped with a pip package (`jaxformer/data/images.py`), split once by a
seeded shuffle into training and held-out images, resized to the model's `image_size`, normalised
by the training split's statistics; training batches are randomly cropped (and flipped, if asked).
Loss: cross-entropy of the label. Evaluation: loss and accuracy over the whole held-out split. At
the end: held-out accuracy and the confusion matrix.
"""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from jaxformer.data.images import (ImageTransform, channel_stats, load_image_dataset, resize,
                                   split_images)
from jaxformer.errors import ConfigError
from jaxformer.tasks.base import TaskConfig
from jaxformer.tasks.image_task import ImageTask, in_batches
from jaxformer.tasks.losses import token_cross_entropy
from jaxformer.tasks.registry import register_task


@dataclasses.dataclass
class ImageClassificationConfig(TaskConfig):
    """dataset: a registered image data set ("digits").
    val_fraction: the share of images held out (split by a shuffle seeded with `split_seed`).
    crop_padding: training crops a random image-sized window of the image zero-padded by this
        many pixels (after resizing); 0 turns cropping off.
    flip: mirror training images left-right at random (off for digits: a mirrored 2 or 7 is no
        longer that digit)."""

    dataset: str = "digits"
    val_fraction: float = 0.2
    split_seed: int = 0
    crop_padding: int = 0
    flip: bool = False


def confusion_matrix(labels: np.ndarray, predictions: np.ndarray, classes: int) -> np.ndarray:
    """[true, predicted] counts."""
    matrix = np.zeros((classes, classes), dtype=np.int64)
    np.add.at(matrix, (labels, predictions), 1)
    return matrix


def format_confusion(matrix: np.ndarray, names) -> str:
    width = max(4, max(len(str(n)) for n in names) + 1, len(str(matrix.max())) + 1)
    head = "true\\pred".ljust(10) + "".join(str(n).rjust(width) for n in names)
    rows = [str(n).ljust(10) + "".join(str(v).rjust(width) for v in row) for n, row in zip(names, matrix)]
    return "\n".join([head, *rows])


@register_task
class ImageClassification(ImageTask):
    name = "image_classification"
    config_class = ImageClassificationConfig

    def validate(self) -> None:
        t, m = self.config.task, self.config.model
        if not hasattr(m, "image_size") or not hasattr(m, "num_labels"):
            raise ConfigError(f"task image_classification needs an image model (model.family: vit), "
                              f"not model.family={m.family}")
        if not 0.0 < t.val_fraction < 1.0:
            raise ConfigError(f"task.val_fraction={t.val_fraction} must lie strictly between 0 and 1")
        if t.crop_padding < 0:
            raise ConfigError(f"task.crop_padding={t.crop_padding} is negative: use 0 (no crop) or more")

    def prepare(self, run, say):
        """Load and split the data set, resize it to `model.image_size`; set `model.num_labels`
        and `model.num_channels` from the data (saying so when they change)."""
        config, t = self.config, self.config.task
        data = load_image_dataset(t.dataset)
        changes = {}
        if config.model.num_labels != len(data.class_names):
            changes["num_labels"] = len(data.class_names)
        if config.model.num_channels != data.images.shape[-1]:
            changes["num_channels"] = data.images.shape[-1]
        if changes:
            say("model " + ", ".join(f"{k} set to {v}" for k, v in changes.items())
                + f", from the {t.dataset} data set")
            config = dataclasses.replace(config, model=config.model.replace(**changes))
        size = config.model.image_size
        data = dataclasses.replace(data, images=resize(data.images, size))
        self.train_data, self.val_data = split_images(data, t.val_fraction, t.split_seed)
        mean, std = channel_stats(self.train_data.images)
        self.transform = ImageTransform(mean, std, crop_padding=t.crop_padding, flip=t.flip)
        self.config = config
        return config

    def batch_spec(self, batch_size: int) -> dict[str, jax.ShapeDtypeStruct]:
        m = self.config.model
        return {"images": jax.ShapeDtypeStruct((batch_size, m.image_size, m.image_size,
                                                m.num_channels), np.float32),
                "labels": jax.ShapeDtypeStruct((batch_size,), np.int32),
                "weights": jax.ShapeDtypeStruct((batch_size,), np.float32)}

    def tokens_per_batch(self, batch_size: int) -> int:
        """Patches and [CLS] of each image: the tokens the 6N FLOPs per token apply to."""
        m = self.config.model
        return batch_size * (1 + (m.image_size // m.patch_size) ** 2)

    def model_inputs(self, batch: dict) -> dict:
        return {"images": batch["images"]}

    def loss(self, output, batch):
        weights = batch["weights"].astype(jnp.float32)
        losses = token_cross_entropy(output.logits, batch["labels"])
        correct = (jnp.argmax(output.logits, axis=-1) == batch["labels"]).astype(jnp.float32)
        count = jnp.sum(weights)
        return jnp.sum(losses * weights), count, {"accuracy": (jnp.sum(correct * weights), count)}

    def predict(self, model, images: np.ndarray, batch_size: int = 256) -> np.ndarray:
        """Predicted labels of normalised images [n, h, w, c]."""
        forward = jax.jit(lambda x: jnp.argmax(model(x).logits, axis=-1))
        return in_batches(forward, images, batch_size)

    def report(self, model, say) -> dict:
        """Held-out accuracy and the confusion matrix (rows: true label)."""
        data = self.val_data
        predictions = self.predict(model, self.transform.normalise(data.images))
        accuracy = float(np.mean(predictions == data.labels))
        matrix = confusion_matrix(data.labels, predictions, len(data.class_names))
        say(f"held-out accuracy {accuracy:.2%} ({int(np.sum(predictions == data.labels))}/"
            f"{len(data)} images)\n{format_confusion(matrix, data.class_names)}")
        return {"val_accuracy": accuracy, "confusion_matrix": matrix.tolist()}
