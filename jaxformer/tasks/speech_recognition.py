"""`speech_recognition`: a Whisper model learns to transcribe audio, by teacher forcing.

Data: `task.dataset: tones`, keypad (DTMF) tone sequences generated in process
(`jaxformer/data/tones.py`), each transcribed as its digits with spaces between ("4 0 7"); the
training and validation clips are different draws of one seed (`task.seed`). A batch holds each
clip's log-mel features, computed on the host by `jaxformer.data.audio.log_mel_spectrogram` over
the model's window (`model.num_frames` x 160 samples, the clip followed by zeros, with
`model.num_mel_bins` bins), and its transcript as character tokens: the decoder reads the start
token and the characters and learns each next character and the end token. Padding is the end
token (as in Whisper), marked by segment id 0 and left out of the loss. Loss: cross-entropy of
each transcript token. Evaluation: the loss and token accuracy on `task.eval_examples`
validation clips. At the end: those clips transcribed greedily through `jaxformer.generate`
(features in place of prompts); exact match is the share whose transcript equals the truth
character for character, and a few examples are shown.

The vocabulary: " 0123456789" (ids 0-10), the end token (11) and the start token (12);
`model.vocab_size`, `decoder_start_token_id` and `eos_token_id` are set from it.
"""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from jaxformer.data.audio import HOP_LENGTH, log_mel_spectrogram
from jaxformer.data.images import endless
from jaxformer.data.sharding import ProcessShard
from jaxformer.data.tones import ToneSettings, TonesCorpus, pad_waveforms, tones_tokenizer
from jaxformer.errors import ConfigError, UserError
from jaxformer.generate import generate
from jaxformer.tasks.base import Task, TaskConfig
from jaxformer.tasks.losses import token_cross_entropy
from jaxformer.tasks.registry import register_task

DATASETS = ("tones",)


@dataclasses.dataclass
class SpeechRecognitionConfig(TaskConfig):
    """dataset: "tones" (keypad tone sequences, `jaxformer/data/tones.py`).
    seed: the corpus's seed (training and validation clips are different draws of it).
    min_digits, max_digits: digits per clip (a transcript has 2 max_digits - 1 characters).
    tone_ms, gap_ms, lead_ms: ranges [low, high] of each tone's duration, the silence between
        tones and the silence before the first, in milliseconds.
    amplitude: range of each tone's peak; noise: range of the Gaussian noise's standard deviation.
    eval_examples: validation clips for the held-out loss and the end-of-run exact match.
    report_examples: transcripts the report prints."""

    dataset: str = "tones"
    seed: int = 0
    min_digits: int = 1
    max_digits: int = 6
    tone_ms: list[float] = dataclasses.field(default_factory=lambda: [40.0, 100.0])
    gap_ms: list[float] = dataclasses.field(default_factory=lambda: [30.0, 80.0])
    lead_ms: list[float] = dataclasses.field(default_factory=lambda: [0.0, 100.0])
    amplitude: list[float] = dataclasses.field(default_factory=lambda: [0.1, 0.9])
    noise: list[float] = dataclasses.field(default_factory=lambda: [0.0, 0.02])
    eval_examples: int = 512
    report_examples: int = 3

    def tone_settings(self) -> ToneSettings:
        try:
            return ToneSettings(min_digits=self.min_digits, max_digits=self.max_digits,
                                tone_ms=tuple(self.tone_ms), gap_ms=tuple(self.gap_ms),
                                lead_ms=tuple(self.lead_ms), amplitude=tuple(self.amplitude),
                                noise=tuple(self.noise))
        except ValueError as e:
            raise ConfigError(f"task: {e}") from None


def num_samples(model_config) -> int:
    """Samples of the model's window: 160 per log-mel frame (16 kHz, 10 ms hops)."""
    return model_config.num_frames * HOP_LENGTH


def audio_features(waveforms, model_config) -> np.ndarray:
    """float32 [n, num_mel_bins, num_frames]: each waveform (16 kHz) padded with zeros or cut to
    the model's window, as log-mel features."""
    waves = pad_waveforms(waveforms, num_samples(model_config))
    return np.asarray(log_mel_spectrogram(waves, n_mels=model_config.num_mel_bins,
                                          num_samples=num_samples(model_config)))


def transcribe(model, model_config, tokenizer, waveforms, *, max_tokens: int,
               batch_size: int = 256) -> list[str]:
    """Greedy transcripts of 16 kHz waveforms, in chunks of equal size (the last filled up with
    repeats) so that one compiled decoding program serves them all."""
    if not len(waveforms):
        return []
    features = audio_features(waveforms, model_config)
    chunks = -(-len(features) // batch_size)
    size = -(-len(features) // chunks)
    padded = np.concatenate([features, features[:chunks * size - len(features)]])
    outputs = []
    for i in range(0, len(padded), size):
        outputs += generate(model, padded[i:i + size], max_tokens, temperature=0.0,
                            stop_tokens=[model_config.eos_token_id])
    # Generation stops at the end token; anything outside the characters (the end token, or a
    # start token an untrained model may emit) is no text.
    return [tokenizer.decode([i for i in out if i < tokenizer.eos_id])
            for out in outputs[:len(features)]]


@register_task
class SpeechRecognition(Task):
    name = "speech_recognition"
    config_class = SpeechRecognitionConfig

    def validate(self) -> None:
        t, m = self.config.task, self.config.model
        if m.encoder_input != "features":
            raise ConfigError(f"task speech_recognition trains a model that reads log-mel "
                              f"features, not model.family={m.family}: use model.family=whisper")
        if t.dataset not in DATASETS:
            raise ConfigError(f"task.dataset={t.dataset!r}: use one of {', '.join(DATASETS)}")
        for key in ("eval_examples", "report_examples"):
            if getattr(t, key) < 0:
                raise ConfigError(f"task.{key} must not be negative, got {getattr(t, key)}")
        settings = t.tone_settings()
        if settings.max_samples > num_samples(m):
            raise ConfigError(
                f"the longest clip ({settings.max_samples} samples, "
                f"{settings.max_samples / 16000:.2f} s) does not fit the model's window of "
                f"{num_samples(m)} samples (2 x model.max_source_positions = {m.num_frames} "
                f"frames of 10 ms): raise model.max_source_positions to at least "
                f"{-(-settings.max_samples // (2 * HOP_LENGTH))} or shorten the clips")

    @property
    def text_len(self) -> int:
        """Decoder positions per row: the start token and the characters of the longest
        transcript (the targets: those characters and the end token)."""
        return 1 + self.settings.max_text_len

    def prepare(self, run, say):
        config, t, m = self.config, self.config.task, self.config.model
        self.settings = t.tone_settings()
        tokenizer = self.tokenizer = tones_tokenizer()
        if run.tokenizer.exists():
            from jaxformer.data import load_tokenizer

            if load_tokenizer(run.tokenizer).fingerprint != tokenizer.fingerprint:
                raise UserError("the run directory's tokenizer is not the tones task's: use a new "
                                "train.run_dir")
        vocab = {"vocab_size": tokenizer.vocab_size + 1, "eos_token_id": tokenizer.eos_id,
                 "decoder_start_token_id": tokenizer.vocab_size}
        changes = {k: v for k, v in vocab.items() if getattr(m, k) != v}
        if changes:
            say("set from the transcripts' vocabulary (characters, end, start): " +
                ", ".join(f"model.{k}={v}" for k, v in changes.items()))
            config = dataclasses.replace(config, model=m.replace(**changes))
        if self.text_len > config.model.max_target_positions:
            raise ConfigError(f"transcripts of {self.text_len} tokens (start and "
                              f"{self.settings.max_text_len} characters) exceed "
                              f"model.max_target_positions={config.model.max_target_positions}: "
                              f"raise it")
        if config.train.seq_len != self.text_len:
            # The decoder's row length: what FLOPs per token (tokens/s, MFU) are computed at.
            say(f"train.seq_len set to {self.text_len}, the transcripts' length")
            config = dataclasses.replace(config, train=dataclasses.replace(
                config.train, seq_len=self.text_len))
        self.train_clips = TonesCorpus("train", seed=t.seed, settings=self.settings)
        self.val_clips = TonesCorpus("validation", seed=t.seed, settings=self.settings)
        self.config = config
        return config

    def save_artifacts(self, run) -> None:
        if not run.tokenizer.exists():
            self.tokenizer.save(run.tokenizer)

    def batch_spec(self, batch_size: int) -> dict[str, jax.ShapeDtypeStruct]:
        m, length = self.config.model, self.text_len
        spec = {"features": jax.ShapeDtypeStruct((batch_size, m.num_mel_bins, m.num_frames),
                                                 np.float32),
                "weights": jax.ShapeDtypeStruct((batch_size,), np.float32),
                "loss_mask": jax.ShapeDtypeStruct((batch_size, length), np.float32)}
        spec |= {name: jax.ShapeDtypeStruct((batch_size, length), np.int32)
                 for name in ("decoder_tokens", "targets", "decoder_segment_ids")}
        return spec

    def tokens_per_batch(self, batch_size: int) -> int:
        """Encoder states and decoder positions of each row."""
        return batch_size * (self.config.model.max_source_positions + self.text_len)

    def encode_texts(self, texts) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(decoder_tokens [start, characters], targets [characters, end], segment_ids: 1 on
        each real position, 0 on padding), int32 [n, text_len]; padding is the end token."""
        start, eos = self.config.model.decoder_start_token_id, self.tokenizer.eos_id
        rows = np.full((len(texts), self.text_len + 1), eos, np.int32)
        segments = np.zeros((len(texts), self.text_len), np.int32)
        for row, text in enumerate(texts):
            ids = [start, *self.tokenizer.encode(text), eos]
            rows[row, :len(ids)] = ids
            segments[row, :len(ids) - 1] = 1
        return rows[:, :-1], rows[:, 1:], segments

    def make_batch(self, clips, weights: np.ndarray) -> dict:
        tokens, targets, segments = self.encode_texts([c.text for c in clips])
        return {"features": audio_features([c.waveform for c in clips], self.config.model),
                "weights": weights.astype(np.float32), "decoder_tokens": tokens,
                "targets": targets, "decoder_segment_ids": segments,
                "loss_mask": segments.astype(np.float32)}

    def train_iterator(self, *, process_index: int, process_count: int):
        size = self.config.train.batch_size
        shard = ProcessShard(process_index, process_count)

        def make_batch(index: int) -> dict:
            rows = shard.rows(np.arange(index * size, (index + 1) * size))
            return self.make_batch([self.train_clips(int(i)) for i in rows],
                                   np.ones(len(rows), np.float32))

        return iter(endless(make_batch))

    def validation_clips(self) -> list:
        return [self.val_clips(i) for i in range(self.config.task.eval_examples)]

    def eval_batches(self, *, process_index: int, process_count: int) -> list[dict]:
        """Every one of `task.eval_examples` validation clips once (the last batch filled up with
        repeats of weight 0), or none when `train.eval_batches` is 0."""
        if not self.config.train.eval_batches or not self.config.task.eval_examples:
            return []
        clips, size = self.validation_clips(), self.config.train.batch_size
        shard = ProcessShard(process_index, process_count)
        batches = []
        for start in range(0, len(clips), size):
            index = np.arange(start, start + size)
            rows = shard.rows(index % len(clips))
            batches.append(self.make_batch([clips[i] for i in rows],
                                           shard.rows((index < len(clips)).astype(np.float32))))
        return batches

    def model_inputs(self, batch: dict) -> dict:
        return {"features": batch["features"], "decoder_tokens": batch["decoder_tokens"],
                "decoder_segment_ids": batch["decoder_segment_ids"]}

    def loss(self, output, batch):
        mask = batch["loss_mask"].astype(jnp.float32) * batch["weights"][:, None]
        losses = token_cross_entropy(output.logits, batch["targets"])
        correct = (jnp.argmax(output.logits, axis=-1) == batch["targets"]).astype(jnp.float32)
        count = jnp.sum(mask)
        return jnp.sum(losses * mask), count, {"accuracy": (jnp.sum(correct * mask), count)}

    def report(self, model, say) -> dict:
        """Greedy transcripts of the validation clips; exact match and examples."""
        clips = self.validation_clips()
        if not clips:
            return {}
        outputs = transcribe(model, self.config.model, self.tokenizer,
                             [c.waveform for c in clips], max_tokens=self.text_len)
        exact = [out == clip.text for out, clip in zip(outputs, clips)]
        score = float(np.mean(exact))
        say(f"held-out exact match (greedy transcripts): {score:.4f} ({sum(exact)} of "
            f"{len(exact)} clips)")
        examples = [{"truth": clip.text, "transcript": out, "exact": ok}
                    for clip, out, ok in list(zip(clips, outputs, exact))
                    [:self.config.task.report_examples]]
        for e in examples:
            say(f"  {e['truth']!r} -> {e['transcript']!r}" + ("" if e["exact"] else "  (wrong)"))
        return {"exact_match": score, "clips": len(exact), "examples": examples}
