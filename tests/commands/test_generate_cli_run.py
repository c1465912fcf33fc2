"""`jaxformer generate` on the run directory of a tiny `jaxformer train` run."""


import pytest

from jaxformer.cli import main
from support.devices import ONE_DEVICE


def test_generate_from_a_run_directory(tmp_path, capsys):
    from jaxformer.config import load_config
    from jaxformer.generate import generate
    from jaxformer.train import load_run, train

    run_dir = tmp_path / "run"
    train(load_config("shakespeare_char_cpu", [ONE_DEVICE,
        "data.corpus=tinyshakespeare", f"train.run_dir={run_dir}", "model.d_model=32",
        "model.num_layers=1", "model.num_heads=2", "model.max_seq_len=32", "train.seq_len=32",
        "train.batch_size=4", "train.steps=2", "train.eval_every=2", "train.eval_batches=1",
        "train.log_every=1", "train.checkpoint_every=2", "train.progress=false",
        "train.sample_tokens=0"]))
    capsys.readouterr()
    assert main(["generate", str(run_dir), "--prompt", "ROMEO:", "--temperature", "0",
                 "--max-new-tokens", "16"]) == 0
    text = capsys.readouterr().out
    _, model, tokenizer = load_run(run_dir, log=lambda *a, **k: None)
    expected = generate(model, [tokenizer.encode("ROMEO:")], 16, temperature=0.0)[0]
    assert text == "ROMEO:" + tokenizer.decode(expected) + "\n"
    # --weights-dtype bfloat16: the same text as the API's greedy decoding of the cast model.
    from jaxformer.generate.precision import with_weights_dtype
    low = with_weights_dtype(model, "bfloat16")
    assert main(["generate", str(run_dir), "--prompt", "ROMEO:", "--temperature", "0",
                 "--max-new-tokens", "16", "--weights-dtype", "bfloat16"]) == 0
    expected_low = generate(low, [tokenizer.encode("ROMEO:")], 16, temperature=0.0)[0]
    assert capsys.readouterr().out == "ROMEO:" + tokenizer.decode(expected_low) + "\n"
    # A character outside the run's vocabulary is a one-line error.
    assert main(["generate", str(run_dir), "--prompt", "ROMEO: \u4e16"]) == 2
    assert "\n" not in capsys.readouterr().err.strip()
    # Past the context (32 tokens): an error without --past-context, chunks with it.
    assert main(["generate", str(run_dir), "--prompt", "ROMEO:", "--max-new-tokens", "60"]) == 2
    assert "--past-context" in capsys.readouterr().err
    assert main(["generate", str(run_dir), "--prompt", "ROMEO:", "--temperature", "0",
                 "--max-new-tokens", "60", "--past-context"]) == 0
    from jaxformer.generate import generate_past_context
    expected = generate_past_context(model, tokenizer.encode("ROMEO:"), 60, temperature=0.0)
    assert capsys.readouterr().out == "ROMEO:" + tokenizer.decode(expected) + "\n"
    # Errors about the flags name the flags.
    for flags, named in ((["--max-new-tokens", "0"], "argument --max-new-tokens: must be a positive"),
                         (["--top-k", "0"], "argument --top-k: must be a positive integer"),
                         (["--top-p", "1.5"], "argument --top-p: must be in (0, 1]")):
        with pytest.raises(SystemExit) as exit_info:
            main(["generate", str(run_dir), "--prompt", "ROMEO:", *flags])
        assert exit_info.value.code == 2 and named in capsys.readouterr().err

    # Sampling reads the parameters only and writes nothing: with an optimizer setting whose
    # state has another structure (training could not resume with it), the parameters still load.
    config = run_dir / "config.yaml"
    config.write_text(config.read_text().replace("grad_clip: 1.0", "grad_clip: 0.0"))
    assert "grad_clip: 0.0" in config.read_text()
    before = {p: p.read_bytes() for p in run_dir.rglob("*") if p.is_file()}
    assert main(["generate", str(run_dir), "--prompt", "ROMEO:", "--temperature", "0",
                 "--max-new-tokens", "16"]) == 0
    assert capsys.readouterr().out == text
    assert {p: p.read_bytes() for p in run_dir.rglob("*") if p.is_file()} == before
