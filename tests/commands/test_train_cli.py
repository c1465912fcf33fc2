"""`jaxformer train` with bad input: one line on stderr naming the problem, exit code 2, no
traceback, before any training."""

import subprocess
import sys

from support.locations import subprocess_env
from support.waiting import SAFETY_TIMEOUT_S


CASES = {
    "unknown key": (["train.stepz=5"], ["unknown config key train.stepz", "did you mean train.steps"]),
    "bad value": (["train.steps=abc"], ["train.steps", "abc"]),
    "bad section": (["optimiser.lr=0.1"], ["optimiser", "did you mean optimizer"]),
    "missing corpus": (["data.corpus=/nonexistent/corpus.txt"], ["/nonexistent/corpus.txt"]),
    "prompt outside vocabulary": (["train.sample_prompt=snow\u2603man"],
                                  ["vocabulary"]),
}


def test_bad_input_is_one_line_and_exit_code_2(tmp_path):
    env = subprocess_env()
    # Started together: each mostly waits on imports.
    processes = {
        name: subprocess.Popen(
            [sys.executable, "-m", "jaxformer", "train", "shakespeare_char_cpu",
             f"train.run_dir={tmp_path / name.replace(' ', '_')}", "train.steps=5", *overrides],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for name, (overrides, _) in CASES.items()}
    for name, process in processes.items():
        stdout, stderr = process.communicate(timeout=SAFETY_TIMEOUT_S)
        lines = stderr.strip().splitlines()
        assert process.returncode == 2, (name, stderr[-2000:])
        assert len(lines) == 1 and lines[0].startswith("jaxformer train: error: "), (name, stderr)
        assert "Traceback" not in stderr + stdout
        for expected in CASES[name][1]:
            assert expected in lines[0], (name, lines[0])
        assert "step 1" not in stdout  # nothing was trained
    # A run that never started leaves no checkpoints behind.
    assert not list(tmp_path.rglob("checkpoints/*"))


def test_unknown_preset_is_one_line():
    env = subprocess_env()
    done = subprocess.run([sys.executable, "-m", "jaxformer", "train", "shakespeare_char_gpu"],
                          env=env, capture_output=True, text=True, timeout=SAFETY_TIMEOUT_S)
    assert done.returncode == 2 and len(done.stderr.strip().splitlines()) == 1
    assert "shakespeare_char" in done.stderr and "Traceback" not in done.stderr
