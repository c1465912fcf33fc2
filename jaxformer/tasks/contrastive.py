"""`contrastive`: CLIP's image-text objective on images captioned from their labels.

Data: an image data set (`jaxformer/data/images.py`, split and normalised as for
`image_classification`); each training image gets a caption from a random template ("a handwritten
seven", ...), each held-out image the first template. Loss: CLIP's symmetric cross-entropy over the
batch (text i matches image i; every other pair in the batch is a negative). With gradient
accumulation the negatives are those of each micro-batch. Evaluation: loss and retrieval accuracy
(the text an image scores highest describes its class). At the end: zero-shot accuracy on the
held-out images, each classified by its similarity to one prompt per class, no classifier trained.
"""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from jaxformer.data.captions import DIGIT_WORDS, TEMPLATES, Captions
from jaxformer.data.images import (ImageTransform, channel_stats, load_image_dataset, resize,
                                   split_images)
from jaxformer.errors import ConfigError
from jaxformer.models.clip import contrastive_loss, zero_shot_logits
from jaxformer.tasks.base import TaskConfig
from jaxformer.tasks.image_classification import confusion_matrix, format_confusion
from jaxformer.tasks.image_task import ImageTask, in_batches
from jaxformer.tasks.registry import register_task


@dataclasses.dataclass
class ContrastiveConfig(TaskConfig):
    """dataset, val_fraction, split_seed, crop_padding, flip: as `image_classification`'s.
    templates: caption templates, "{}" standing for the class name (digits: "zero" ... "nine").
    prompt: the zero-shot prompt per class (default: the first template)."""

    dataset: str = "digits"
    val_fraction: float = 0.2
    split_seed: int = 0
    crop_padding: int = 0
    flip: bool = False
    templates: list[str] = dataclasses.field(default_factory=lambda: list(_templates()))
    prompt: str = ""


def _templates():
    return TEMPLATES


def contrastive_sums(logits_per_text: jax.Array, weights: jax.Array):
    """CLIP's loss (`jaxformer.models.clip.contrastive_loss`) with pairs of weight 0 (the repeats
    that fill the last evaluation batch) left out as negatives too."""
    keep = (weights[:, None] * weights[None, :] > 0) | jnp.eye(len(weights), dtype=bool)
    return contrastive_loss(jnp.where(keep, logits_per_text, -1e9), weights)


@register_task
class Contrastive(ImageTask):
    name = "contrastive"
    config_class = ContrastiveConfig

    def validate(self) -> None:
        t, m = self.config.task, self.config.model
        if getattr(m, "family", None) != "clip":
            raise ConfigError(f"task contrastive needs model.family: clip, not {m.family}")
        if not 0.0 < t.val_fraction < 1.0:
            raise ConfigError(f"task.val_fraction={t.val_fraction} must lie strictly between 0 and 1")
        if t.crop_padding < 0:
            raise ConfigError(f"task.crop_padding={t.crop_padding} is negative")

    def prepare(self, run, say):
        """Data and captions; `model.text.vocab_size`, `.eos_token_id` and
        `model.vision.num_channels` are set from them (saying so)."""
        config, t, m = self.config, self.config.task, self.config.model
        data = load_image_dataset(t.dataset)
        names = DIGIT_WORDS if t.dataset == "digits" else data.class_names
        self.captions = Captions(t.templates, names, t.prompt or None)
        text = dataclasses.replace(m.text, vocab_size=self.captions.vocab_size,
                                   eos_token_id=self.captions.eos_token_id)
        vision = dataclasses.replace(m.vision, num_channels=data.images.shape[-1])
        if (text, vision) != (m.text, m.vision):
            say(f"model.text.vocab_size set to {text.vocab_size}, model.text.eos_token_id to "
                f"{text.eos_token_id}, model.vision.num_channels to {vision.num_channels}, from "
                f"the captions and the {t.dataset} data set")
            config = dataclasses.replace(config, model=m.replace(text=text, vision=vision))
        if self.captions.max_len > text.max_seq_len:
            raise ConfigError(f"captions of {self.captions.max_len} tokens exceed "
                              f"model.text.max_seq_len={text.max_seq_len}: raise it")
        data = dataclasses.replace(data, images=resize(data.images, config.model.vision.image_size))
        self.train_data, self.val_data = split_images(data, t.val_fraction, t.split_seed)
        self.transform = ImageTransform(*channel_stats(self.train_data.images),
                                        crop_padding=t.crop_padding, flip=t.flip)
        self.config = config
        return config

    def batch_spec(self, batch_size: int) -> dict[str, jax.ShapeDtypeStruct]:
        v, length = self.config.model.vision, self.captions.max_len
        return {"images": jax.ShapeDtypeStruct((batch_size, v.image_size, v.image_size,
                                                v.num_channels), np.float32),
                "labels": jax.ShapeDtypeStruct((batch_size,), np.int32),
                "weights": jax.ShapeDtypeStruct((batch_size,), np.float32),
                "tokens": jax.ShapeDtypeStruct((batch_size, length), np.int32),
                "segment_ids": jax.ShapeDtypeStruct((batch_size, length), np.int32)}

    def with_targets(self, batch: dict, rng) -> dict:
        tokens, segment_ids = self.captions.encode(self.captions.for_labels(batch["labels"], rng))
        return {**batch, "tokens": tokens, "segment_ids": segment_ids}

    def tokens_per_batch(self, batch_size: int) -> int:
        v = self.config.model.vision
        return batch_size * (1 + (v.image_size // v.patch_size) ** 2 + self.captions.max_len)

    def model_inputs(self, batch: dict) -> dict:
        return {"tokens": batch["tokens"], "images": batch["images"],
                "segment_ids": batch["segment_ids"]}

    def loss(self, output, batch):
        weights = batch["weights"].astype(jnp.float32)
        total, count = contrastive_sums(output.logits_per_text, weights)
        best_text = jnp.argmax(output.logits_per_image, axis=-1)
        same_class = (batch["labels"][best_text] == batch["labels"]).astype(jnp.float32)
        return total, count, {"retrieval": (jnp.sum(same_class * weights), count)}

    def zero_shot_predictions(self, model, images: np.ndarray, batch_size: int = 256) -> np.ndarray:
        """Each normalised image's class: the class prompt it is most similar to."""
        tokens, segment_ids = (jnp.asarray(a) for a in self.captions.class_prompts())
        predict = jax.jit(lambda x: jnp.argmax(zero_shot_logits(model, x, tokens, segment_ids), -1))
        return in_batches(predict, images, batch_size)

    def report(self, model, say) -> dict:
        data = self.val_data
        predictions = self.zero_shot_predictions(model, self.transform.normalise(data.images))
        accuracy = float(np.mean(predictions == data.labels))
        matrix = confusion_matrix(data.labels, predictions, len(data.class_names))
        say(f"zero-shot accuracy {accuracy:.2%} on {len(data)} held-out images (prompt "
            f"{self.captions.prompt!r}, chance 10%)\n{format_confusion(matrix, data.class_names)}")
        return {"zero_shot_accuracy": accuracy, "confusion_matrix": matrix.tolist()}
