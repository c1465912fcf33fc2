"""Speech recognition on keypad tones: the generated signal against the DTMF standard (ITU-T
Q.23), the task's batches, and a short training run of a small Whisper that transcribes held-out
clips far above chance. The full recipe (configs/whisper_tones_cpu.yaml) is measured in
docs/audio.md."""

import numpy as np
import pytest
from support.devices import ONE_DEVICE

from jaxformer.config import load_config
from jaxformer.errors import ConfigError
from jaxformer.tasks import make_task
from jaxformer.train.run_dir import RunDir

RATE = 16000
# The DTMF keypad, written out from the standard: digit -> (low group Hz, high group Hz).
KEYPAD = {"1": (697, 1209), "2": (697, 1336), "3": (697, 1477),
          "4": (770, 1209), "5": (770, 1336), "6": (770, 1477),
          "7": (852, 1209), "8": (852, 1336), "9": (852, 1477),
          "0": (941, 1336)}


def two_peaks(signal: np.ndarray) -> list[float]:
    """The frequencies (Hz) of the two largest local maxima of the Hann-windowed magnitude
    spectrum, zero-padded to 1 Hz bins, lowest first."""
    spectrum = np.abs(np.fft.rfft(signal * np.hanning(len(signal)), n=RATE))
    peaks = [k for k in range(1, len(spectrum) - 1)
             if spectrum[k] > spectrum[k - 1] and spectrum[k] >= spectrum[k + 1]]
    best = sorted(peaks, key=lambda k: spectrum[k])[-2:]
    return sorted(float(k) for k in best)


def clips(settings, count, seed=0):
    from jaxformer.data.tones import TonesCorpus

    corpus = TonesCorpus("train", seed=seed, settings=settings)
    return [corpus(i) for i in range(count)]


def test_each_tone_peaks_at_its_two_dtmf_frequencies():
    from jaxformer.data.tones import ToneSettings

    seen = set()
    for clip in clips(ToneSettings(min_digits=3, max_digits=6, noise=(0.0, 0.02)), 40):
        assert clip.text == " ".join(clip.digits) and len(clip.spans) == len(clip.digits)
        for digit, (start, end) in zip(clip.digits, clip.spans):
            low, high = two_peaks(clip.waveform[start:end])
            # The tones are 40-100 ms long: the spectral peak is within a few Hz of the truth.
            assert abs(low - KEYPAD[digit][0]) <= 6 and abs(high - KEYPAD[digit][1]) <= 6, (
                digit, low, high)
            seen.add(digit)
    assert seen == set(KEYPAD)


def test_tone_durations_gaps_and_silence():
    from jaxformer.data.tones import ToneSettings

    settings = ToneSettings(noise=(0.0, 0.0))
    quiet = clips(settings, 30)
    noisy = clips(ToneSettings(noise=(0.005, 0.02)), 30)
    for clip, loud in zip(quiet, noisy):
        assert clip.noise == 0.0 and 1 <= len(clip.digits) <= 6
        inside = np.zeros(len(clip.waveform), bool)
        for i, (start, end) in enumerate(clip.spans):
            assert 40 * RATE / 1000 - 1 <= end - start <= 100 * RATE / 1000 + 1
            if i:
                gap = start - clip.spans[i - 1][1]
                assert 30 * RATE / 1000 - 1 <= gap <= 80 * RATE / 1000 + 1
            inside[start:end] = True
            peak = np.max(np.abs(clip.waveform[start:end]))
            assert 0.05 <= peak <= 0.9 + 1e-6  # amplitude 0.1-0.9, both sines rarely in phase
        assert clip.spans[0][0] <= 100 * RATE / 1000 + 1
        assert clip.spans[-1][1] == len(clip.waveform)
        # Without noise the gaps are exactly silent; with it, they hold only the noise.
        assert np.all(clip.waveform[~inside] == 0.0)
        outside = np.zeros(len(loud.waveform), bool)
        outside[:loud.spans[0][0]] = True
        for (_, end), (start, _) in zip(loud.spans, loud.spans[1:]):
            outside[end:start] = True
        gaps = loud.waveform[outside]
        if len(gaps) > 2000:
            assert abs(np.std(gaps) / loud.noise - 1) < 0.1, (np.std(gaps), loud.noise)
            assert abs(np.mean(gaps)) < 4 * loud.noise / np.sqrt(len(gaps))


def test_clips_are_deterministic_and_splits_differ():
    from jaxformer.data.tones import TonesCorpus

    a, b = TonesCorpus("train", seed=3), TonesCorpus("train", seed=3)
    val = TonesCorpus("validation", seed=3)
    assert np.array_equal(a(5).waveform, b(5).waveform) and a(5).digits == b(5).digits
    assert not any(np.array_equal(a(i).waveform[:100], val(i).waveform[:100]) for i in range(20))
    assert len({a(i).digits for i in range(50)}) > 40


def prepared(tmp_path, overrides=()):
    config = load_config("whisper_tones_cpu", [ONE_DEVICE, f"train.run_dir={tmp_path}",
                                               *overrides])
    task = make_task(config)
    task.validate()
    messages = []
    return task, task.prepare(RunDir(tmp_path), messages.append), messages


def test_batches(tmp_path):
    from jaxformer.data.audio import log_mel_spectrogram

    task, config, _ = prepared(tmp_path, ["train.batch_size=8", "task.eval_examples=20"])
    m = config.model
    assert (m.vocab_size, m.eos_token_id, m.decoder_start_token_id) == (13, 11, 12)
    batch = next(task.train_iterator(process_index=0, process_count=1))
    spec = task.batch_spec(8)
    assert set(batch) == set(spec)
    for name, array in batch.items():
        assert array.shape == spec[name].shape and array.dtype == spec[name].dtype, name
    assert batch["features"].shape == (8, 80, 128)  # 1.28 s: 128 frames of 10 ms
    clips = [task.train_clips(i) for i in range(8)]
    chars = " 0123456789"
    for row, clip in enumerate(clips):
        n = len(clip.text)
        expected = [12] + [chars.index(c) for c in clip.text]
        assert batch["decoder_tokens"][row, :n + 1].tolist() == expected
        assert batch["targets"][row, :n + 1].tolist() == expected[1:] + [11]
        assert batch["loss_mask"][row].tolist() == [1.0] * (n + 1) + [0.0] * (11 - n)
        assert batch["decoder_segment_ids"][row].tolist() == [1] * (n + 1) + [0] * (11 - n)
        wave = np.zeros(20480, np.float32)
        wave[:len(clip.waveform)] = clip.waveform
        np.testing.assert_allclose(batch["features"][row],
                                   np.asarray(log_mel_spectrogram(wave[None], n_mels=80,
                                                                  num_samples=20480))[0],
                                   atol=1e-5)
    # Held-out: all 20 validation clips once, the filler rows of the last batch weighing 0.
    evals = task.eval_batches(process_index=0, process_count=1)
    assert len(evals) == 3 and sum(b["weights"].sum() for b in evals) == 20
    assert evals[-1]["weights"].tolist() == [1.0] * 4 + [0.0] * 4


def test_settings_that_cannot_run_are_refused(tmp_path):
    with pytest.raises(ConfigError, match="max_source_positions"):
        prepared(tmp_path, ["model.max_source_positions=32"])
    with pytest.raises(ConfigError, match="max_target_positions"):
        prepared(tmp_path, ["model.max_target_positions=8"])
    with pytest.raises(ConfigError, match="min_digits"):
        prepared(tmp_path, ["task.min_digits=4", "task.max_digits=3"])


# A short run of a smaller configuration: up to 3 digits in a 0.64 s window (32 encoder states).
STEPS = 200
SHORT = ["task.max_digits=3", "model.max_source_positions=32", "model.max_target_positions=8",
         "model.encoder_ffn_dim=128", "model.decoder_ffn_dim=128", "train.batch_size=32",
         "task.eval_examples=200", "train.progress=false", f"train.steps={STEPS}",
         "train.steps_per_call=25", "train.log_every=25", f"train.eval_every={STEPS}",
         f"train.checkpoint_every={STEPS}", "optimizer.warmup_steps=30",
         f"optimizer.decay_steps={STEPS}", "optimizer.lr=3e-3"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    from jaxformer.train import train

    path = tmp_path_factory.mktemp("tones") / "run"
    return path, train(load_config("whisper_tones_cpu", [ONE_DEVICE, f"train.run_dir={path}",
                                                         *SHORT]))


def test_short_run_transcribes_held_out_clips(trained):
    _, result = trained
    score = result.report["exact_match"]
    print(f"held-out exact match after {STEPS} steps: {score:.3f}")
    # A transcript is 1 to 3 digits, each one of ten: guessing gets under 1 in 10 right.
    assert score > 0.8, score  # measured 0.950 (2-core AMD EPYC CPU, load average 9.5)
    assert result.report["clips"] == 200 and len(result.report["examples"]) == 3


def keypad_tones(digits: str, rate: int, *, tone_s=0.08, gap_s=0.05, amplitude=0.6):
    """The digits' DTMF tones at `rate` Hz, written from the keypad table, with silence between
    and around them; float64 in [-1, 1]."""
    silence = np.zeros(int(gap_s * rate))
    parts = [silence]
    for digit in digits:
        t = np.arange(int(tone_s * rate)) / rate
        low, high = KEYPAD[digit]
        parts += [0.5 * amplitude * (np.sin(2 * np.pi * low * t) + np.sin(2 * np.pi * high * t)),
                  silence]
    return np.concatenate(parts)


def write_wav(path, samples, rate, channels=1, width=2):
    import wave

    scale = {1: 127, 2: 32767}[width]
    ints = np.round(np.repeat(samples[:, None], channels, axis=1) * scale)
    data = (ints + 128).astype("u1") if width == 1 else ints.astype("<i2")
    with wave.open(str(path), "wb") as f:
        f.setnchannels(channels)
        f.setsampwidth(width)
        f.setframerate(rate)
        f.writeframes(data.tobytes())
    return path


def test_linear_resampling_against_the_sampled_sine():
    from jaxformer.commands.transcribe import resample_linear

    t44, t16 = np.arange(44100) / 44100, np.arange(16000) / 16000
    out = resample_linear(np.sin(2 * np.pi * 1477 * t44), 44100)
    assert out.shape == (16000,)
    # Linear interpolation of a 1477 Hz sine at 44.1 kHz errs by at most (2 pi f / rate)^2 / 8.
    assert np.max(np.abs(out - np.sin(2 * np.pi * 1477 * t16))) < (2 * np.pi * 1477 / 44100) ** 2 / 8 + 1e-6


def test_transcribe_command(trained, tmp_path, capsys):
    from jaxformer.cli import main

    path, _ = trained
    numbers = ["7", "40", "913", "258", "06", "31"]
    mono = [write_wav(tmp_path / f"n{n}.wav", keypad_tones(n, 16000), 16000) for n in numbers]
    stereo = write_wav(tmp_path / "stereo.wav", keypad_tones("913", 16000), 16000, channels=2)
    cd = write_wav(tmp_path / "cd.wav", keypad_tones("913", 44100), 44100)
    assert main(["transcribe", str(path), *map(str, mono), str(stereo), str(cd)]) == 0
    captured = capsys.readouterr()
    lines = dict(line.split(": ", 1) for line in captured.out.splitlines())
    assert list(lines) == [str(p) for p in (*mono, stereo, cd)]
    right = sum(lines[str(p)] == " ".join(n) for p, n in zip(mono, numbers))
    print(captured.out)
    assert right >= 4, captured.out
    # The same tones mixed down from two channels, or resampled from 44.1 kHz, read the same.
    assert lines[str(stereo)] == lines[str(mono[2])] == lines[str(cd)]
    assert "2 channels mixed down" in captured.err and "resampled from 44100 Hz" in captured.err


def test_transcribe_refuses_what_it_cannot_read(trained, tmp_path, capsys):
    from jaxformer.cli import main

    path, _ = trained
    good = write_wav(tmp_path / "good.wav", keypad_tones("5", 16000), 16000)
    eight_bit = write_wav(tmp_path / "8bit.wav", keypad_tones("5", 16000), 16000, width=1)
    text = tmp_path / "notes.wav"
    text.write_text("not audio at all\n")
    for bad, words in ((eight_bit, "8-bit samples"), (text, "not a PCM WAV file")):
        assert main(["transcribe", str(path), str(good), str(bad)]) == 2
        captured = capsys.readouterr()
        assert captured.out == ""
        err = captured.err.strip().splitlines()
        assert len(err) == 1 and str(bad) in err[0] and words in err[0], err


def test_generate_command_sends_audio_models_to_transcribe(trained, capsys):
    from jaxformer.cli import main

    path, _ = trained
    assert main(["generate", str(path), "--prompt", "4 0"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "transcribes audio, not text prompts: use `jaxformer transcribe" in err[0]
