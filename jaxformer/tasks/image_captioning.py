"""`image_captioning`: an image-to-text model learns to write a caption for an image, by teacher
forcing.

Data: an image data set (`jaxformer/data/images.py`, split and normalised as for
`image_classification`), each image captioned from its label by a template ("a handwritten
seven"): a random template per training image, the first for the held-out loss. Captions are
word-level tokens (`jaxformer/data/captions.py`): the decoder reads the start token and the words,
and learns each next word and the end-of-text token. Loss: cross-entropy of each caption token.
Evaluation: the loss and token accuracy on the held-out images. At the end: each held-out image
captioned greedily; exact-caption accuracy is the share whose caption is, word for word, one of
the templates filled with the image's own label (so it names the right class), and a few examples.
"""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from jaxformer.data.captions import DIGIT_WORDS, START, Captions
from jaxformer.data.images import (ImageTransform, channel_stats, load_image_dataset, resize,
                                   split_images)
from jaxformer.errors import ConfigError
from jaxformer.generate import generate
from jaxformer.tasks.base import TaskConfig
from jaxformer.tasks.image_task import ImageTask
from jaxformer.tasks.losses import token_cross_entropy
from jaxformer.tasks.registry import register_task

CAPTION_TEMPLATES = ("a handwritten {}", "the digit {}", "a picture of the number {}")


@dataclasses.dataclass
class ImageCaptioningConfig(TaskConfig):
    """dataset, val_fraction, split_seed, crop_padding, flip: as `image_classification`'s.
    templates: caption templates, "{}" standing for the class name (digits: "zero" ... "nine").
    report_examples: held-out images whose greedy captions the report prints."""

    dataset: str = "digits"
    val_fraction: float = 0.2
    split_seed: int = 0
    crop_padding: int = 0
    flip: bool = False
    templates: list[str] = dataclasses.field(default_factory=lambda: list(CAPTION_TEMPLATES))
    report_examples: int = 3


@register_task
class ImageCaptioning(ImageTask):
    name = "image_captioning"
    config_class = ImageCaptioningConfig

    def validate(self) -> None:
        t, m = self.config.task, self.config.model
        if m.encoder_input != "images":
            raise ConfigError(f"task image_captioning needs an image-to-text model, not "
                              f"model.family={m.family}: use model.family=vision_encoder_decoder")
        if not 0.0 < t.val_fraction < 1.0:
            raise ConfigError(f"task.val_fraction={t.val_fraction} must lie strictly between 0 and 1")
        if t.crop_padding < 0:
            raise ConfigError(f"task.crop_padding={t.crop_padding} is negative: use 0 (no crop) or more")
        if t.report_examples < 0:
            raise ConfigError(f"task.report_examples must not be negative, got {t.report_examples}")

    def prepare(self, run, say):
        """Data and captions; `model.decoder.vocab_size` and `.decoder_start_token_id` (the
        captions' start token) and `model.encoder.num_channels` are set from them (saying so)."""
        config, t, m = self.config, self.config.task, self.config.model
        data = load_image_dataset(t.dataset)
        names = DIGIT_WORDS if t.dataset == "digits" else data.class_names
        self.captions = Captions(t.templates, names)
        decoder = dataclasses.replace(m.decoder, vocab_size=self.captions.vocab_size,
                                      decoder_start_token_id=START)
        encoder = dataclasses.replace(m.encoder, num_channels=data.images.shape[-1])
        if (decoder, encoder) != (m.decoder, m.encoder):
            say(f"model.decoder.vocab_size set to {decoder.vocab_size}, "
                f"model.decoder.decoder_start_token_id to {START}, model.encoder.num_channels to "
                f"{encoder.num_channels}, from the captions and the {t.dataset} data set")
            config = dataclasses.replace(config, model=m.replace(decoder=decoder, encoder=encoder))
        if self.captions.max_len - 1 > decoder.max_seq_len:
            raise ConfigError(f"captions of {self.captions.max_len - 1} tokens (words and end of "
                              f"text) exceed model.decoder.max_seq_len={decoder.max_seq_len}: "
                              f"raise it")
        if config.train.seq_len != self.caption_len:
            # The decoder's row length: what FLOPs per token (tokens/s, MFU) are computed at.
            say(f"train.seq_len set to {self.caption_len}, the captions' length")
            config = dataclasses.replace(config, train=dataclasses.replace(
                config.train, seq_len=self.caption_len))
        data = dataclasses.replace(data, images=resize(data.images, config.model.encoder.image_size))
        self.train_data, self.val_data = split_images(data, t.val_fraction, t.split_seed)
        self.transform = ImageTransform(*channel_stats(self.train_data.images),
                                        crop_padding=t.crop_padding, flip=t.flip)
        self.config = config
        return config

    @property
    def caption_len(self) -> int:
        """Decoder positions per row: the start token or a word, up to the longest caption."""
        return self.captions.max_len - 1

    def batch_spec(self, batch_size: int) -> dict[str, jax.ShapeDtypeStruct]:
        e, length = self.config.model.encoder, self.caption_len
        return {"images": jax.ShapeDtypeStruct((batch_size, e.image_size, e.image_size,
                                                e.num_channels), np.float32),
                "labels": jax.ShapeDtypeStruct((batch_size,), np.int32),
                "weights": jax.ShapeDtypeStruct((batch_size,), np.float32),
                "decoder_tokens": jax.ShapeDtypeStruct((batch_size, length), np.int32),
                "targets": jax.ShapeDtypeStruct((batch_size, length), np.int32),
                "loss_mask": jax.ShapeDtypeStruct((batch_size, length), np.float32)}

    def with_targets(self, batch: dict, rng) -> dict:
        """The batch with captions of its labels: decoder inputs [start, words] and targets
        [words, end of text], padding masked out of the loss."""
        tokens, segment_ids = self.captions.encode(self.captions.for_labels(batch["labels"], rng))
        return {**batch, "decoder_tokens": tokens[:, :-1], "targets": tokens[:, 1:],
                "loss_mask": segment_ids[:, 1:].astype(np.float32)}

    def tokens_per_batch(self, batch_size: int) -> int:
        """Patches, [CLS] and caption positions of each row."""
        return batch_size * (1 + self.config.model.num_patches + self.caption_len)

    def model_inputs(self, batch: dict) -> dict:
        return {"images": batch["images"], "decoder_tokens": batch["decoder_tokens"],
                "decoder_segment_ids": (batch["decoder_tokens"] != 0).astype(jnp.int32)}

    def loss(self, output, batch):
        mask = batch["loss_mask"].astype(jnp.float32) * batch["weights"][:, None]
        losses = token_cross_entropy(output.logits, batch["targets"])
        correct = (jnp.argmax(output.logits, axis=-1) == batch["targets"]).astype(jnp.float32)
        count = jnp.sum(mask)
        return jnp.sum(losses * mask), count, {"accuracy": (jnp.sum(correct * mask), count)}

    def caption(self, model, images: np.ndarray, batch_size: int = 512) -> list[list[int]]:
        """Greedy captions (token ids, the end-of-text token last when emitted) of normalised
        images [n, h, w, c], through the cached decoding loop, in chunks of equal size (the last
        filled up with repeats) so that one compiled program serves them all."""
        chunks = -(-len(images) // batch_size)
        size = -(-len(images) // chunks)
        padded = np.concatenate([images, images[:chunks * size - len(images)]])
        out = []
        for i in range(0, len(padded), size):
            out += generate(model, padded[i:i + size], self.caption_len, temperature=0.0,
                            stop_tokens=[self.captions.eos_token_id])
        return out[:len(images)]

    def report(self, model, say) -> dict:
        """Exact-caption accuracy of greedy captions of every held-out image, and examples."""
        data, captions = self.val_data, self.captions
        outputs = self.caption(model, self.transform.normalise(data.images))
        right = {label: {tuple(captions.encode([text])[0][0][1:].tolist())
                         for text in (t.format(captions.names[label]) for t in captions.templates)}
                 for label in range(len(captions.names))}
        exact = [tuple(out + [0] * (captions.max_len - 1 - len(out))) in right[int(label)]
                 for out, label in zip(outputs, data.labels)]
        accuracy = float(np.mean(exact))
        lines = [f"held-out exact-caption accuracy (greedy) {accuracy:.2%} ({sum(exact)}/"
                 f"{len(exact)} images; a caption is exact when it is one of the templates filled "
                 f"with the image's label)"]
        examples = [{"label": captions.names[int(data.labels[i])],
                     "caption": captions.decode(outputs[i]), "exact": bool(exact[i])}
                    for i in range(min(self.config.task.report_examples, len(data)))]
        lines += [f"  image {i} ({e['label']}): {e['caption']!r}" for i, e in enumerate(examples)]
        say("\n".join(lines))
        return {"exact_caption_accuracy": accuracy, "examples": examples}
