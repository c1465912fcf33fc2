"""`jaxformer transcribe`: greedy transcripts of WAV files from a `speech_recognition` run.

    jaxformer transcribe runs/whisper_tones_cpu tones.wav
    jaxformer transcribe runs/whisper_tones_cpu a.wav b.wav c.wav      # decoded as one batch

Each file must be a WAV of 16-bit PCM samples. Stereo (or more channels) is mixed down to mono by
averaging the channels. A sample rate other than 16 kHz is resampled to 16 kHz by linear
interpolation between neighbouring samples (no low-pass filter: content above 8 kHz, or above
half the file's own rate, folds back; resample with a proper tool for the best results). Audio
longer than the model's window is cut to it, with a note on stderr. Prints "FILE: transcript",
one line per file, in the order given. Any file that cannot be read is refused (one line, exit
status 2) before anything is decoded.
"""

import argparse
import sys
import wave
from pathlib import Path

import numpy as np

from jaxformer.data.audio import SAMPLE_RATE
from jaxformer.errors import UserError
from jaxformer.tasks.speech_recognition import num_samples, transcribe
from jaxformer.train import load_run


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run_dir", metavar="RUN_DIR",
                        help="a `jaxformer train` run directory of a speech_recognition task")
    parser.add_argument("files", nargs="+", type=Path, metavar="AUDIO.wav",
                        help="WAV files of 16-bit PCM audio (any sample rate, mono or stereo)")


def resample_linear(samples: np.ndarray, rate: int, target: int = SAMPLE_RATE) -> np.ndarray:
    """`samples` at `rate` Hz -> at `target` Hz: output sample j is the straight line between the
    two input samples around time j / target (no anti-aliasing filter)."""
    if rate == target or not len(samples):
        return samples
    count = max(1, int(round(len(samples) * target / rate)))
    times = np.arange(count) * (rate / target)
    return np.interp(times, np.arange(len(samples)), samples).astype(np.float32)


def read_wav(path: Path) -> tuple[np.ndarray, str | None]:
    """(mono float32 waveform at 16 kHz in [-1, 1), a note on what was changed or None). A file
    that is not 16-bit PCM WAV is a UserError naming it."""
    try:
        with wave.open(str(path), "rb") as f:
            channels, width, rate = f.getnchannels(), f.getsampwidth(), f.getframerate()
            frames = f.readframes(f.getnframes())
    except (wave.Error, EOFError) as e:
        raise UserError(f"{path}: not a PCM WAV file ({e}): give 16-bit PCM WAV") from None
    if width != 2:
        raise UserError(f"{path}: {8 * width}-bit samples: only 16-bit PCM WAV is read (convert "
                        f"it, e.g. with `sox in.wav -b 16 out.wav`)")
    if rate <= 0:
        raise UserError(f"{path}: sample rate {rate} Hz is not a sample rate")
    data = np.frombuffer(frames[:len(frames) // (2 * channels) * 2 * channels], "<i2")
    samples = data.reshape(-1, channels).astype(np.float32).mean(axis=1) / 32768.0
    notes = []
    if channels != 1:
        notes.append(f"{channels} channels mixed down to mono")
    if rate != SAMPLE_RATE:
        notes.append(f"resampled from {rate} Hz to {SAMPLE_RATE} Hz (linear interpolation)")
        samples = resample_linear(samples, rate)
    return samples, "; ".join(notes) or None


def run(args) -> int:
    clips = [read_wav(path) for path in args.files]  # every file checked before loading the run
    config, model, tokenizer = load_run(args.run_dir, log=lambda m: print(m, file=sys.stderr))
    if config.task.name != "speech_recognition" or tokenizer is None:
        raise UserError(f"{args.run_dir} is a {config.task.name or config.model.family} run: "
                        f"transcribe needs a speech_recognition run")
    window = num_samples(config.model)
    for path, (samples, note) in zip(args.files, clips):
        if len(samples) > window:
            note = (note + "; " if note else "") + (
                f"{len(samples) / SAMPLE_RATE:.2f} s cut to the model's window of "
                f"{window / SAMPLE_RATE:.2f} s")
        if note:
            print(f"{path}: {note}", file=sys.stderr)
    texts = transcribe(model, config.model, tokenizer, [samples for samples, _ in clips],
                       max_tokens=min(config.train.seq_len, config.model.max_target_positions - 1))
    for path, text in zip(args.files, texts):
        print(f"{path}: {text}")
    return 0
