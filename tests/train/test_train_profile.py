"""`train.profile_steps`: a jax.profiler trace of the chosen steps lands in the run directory, and
it holds the compiled train step's calls (found in the Perfetto JSON the profiler writes beside
the xplane file)."""

import gzip
import json

import pytest

from support.devices import ONE_DEVICE
from jaxformer.config import load_config
from jaxformer.errors import ConfigError
from jaxformer.train import train

TINY = [ONE_DEVICE, "model.d_model=32", "model.num_layers=1", "model.num_heads=2",
        "model.max_seq_len=16", "train.seq_len=16", "train.batch_size=4", "train.eval_batches=0",
        "train.progress=false", "train.sample_tokens=0", "train.steps=8", "train.log_every=4",
        "train.checkpoint_every=8"]


def test_profile_holds_the_chosen_steps(tmp_path, capsys):
    run_dir = tmp_path / "run"
    train(load_config("shakespeare_char_cpu", TINY + [f"train.run_dir={run_dir}",
                                                     "train.profile_start=2", "train.profile_steps=3"]))
    assert "profile of steps 3-5" in capsys.readouterr().out
    traces = list((run_dir / "profile").rglob("*.trace.json.gz"))
    assert len(traces) == 1 and list((run_dir / "profile").rglob("*.xplane.pb"))
    trace = json.loads(gzip.decompress(traces[0].read_bytes()))
    # The compiled step's calls are in it (host-side dispatch events named after the function).
    calls = [e for e in trace["traceEvents"] if e.get("name") == "PjitFunction(train_step)"]
    assert calls, sorted({e.get("name", "") for e in trace["traceEvents"]})[:50]


def test_profile_settings_are_checked():
    with pytest.raises(ConfigError, match="train.profile_steps must not be negative"):
        load_config("shakespeare_char_cpu", ["train.profile_steps=-1"])
