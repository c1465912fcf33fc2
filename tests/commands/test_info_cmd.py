"""`jaxformer info`: the printed count equals the published one and the FLOPs follow PaLM's 6N + 12LDT."""

import pytest

from jaxformer import cli

GPT2_SMALL = 124_439_808
GPT2_SMALL_N = GPT2_SMALL - 1024 * 768  # less the position table


def run_info(capsys, *argv):
    code = cli.main(["info", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_gpt2_small(capsys):
    code, out, err = run_info(capsys, "gpt2-small")
    assert code == 0, err
    assert "124,439,808" in out
    assert f"{GPT2_SMALL_N:,}" in out
    assert f"{6 * GPT2_SMALL_N:,}" in out  # 6N
    assert f"{12 * 12 * 768 * 1024:,}" in out  # 12 x layers x d_model x T at the context
    assert f"{6 * GPT2_SMALL_N + 12 * 12 * 768 * 1024:,}" in out
    for size in ("50,257", "768", "1,024", "3,072"):
        assert size in out
    # 12 layers x (c_fc + c_proj) of the MLP, with biases, out of the total
    ffn = 12 * (768 * 3072 + 3072 + 3072 * 768 + 768)
    assert f"{ffn:,}" in out and f"{100 * ffn / GPT2_SMALL:.1f}%" in out
    # the attention kernel a decoder runs here: the CPU's blocked causal path
    assert "attention: xla, blocked causal on this CPU" in out


def test_seq_len_and_overrides(capsys):
    code, out, err = run_info(capsys, "--seq-len", "256", "gpt2-small", "num_layers=6")
    assert code == 0, err
    n = GPT2_SMALL_N - 6 * 7_087_872  # six fewer layers of 7,087,872 parameters each
    assert f"{6 * n + 12 * 6 * 768 * 256:,}" in out
    assert "T = 256" in out


def test_nested_override(capsys):
    code, out, err = run_info(capsys, "llama-3.1-8b", "rope_scaling.factor=32", "model.rope_theta=1e6")
    assert code == 0, err
    assert "8,030,261,248" in out and "x32" in out and "theta 1e+06" in out


def test_llama_from_yaml_path(capsys, tmp_path):
    config = tmp_path / "small-llama.yaml"
    config.write_text("model:\n  vocab_size: 1000\n  d_model: 64\n  num_layers: 2\n  num_heads: 4\n"
                      "  num_kv_heads: 1\n  mlp_dim: 100\n  position: rope\n  norm: rmsnorm\n"
                      "  activation: swiglu\n  use_bias: false\n  tie_embeddings: false\n")
    code, out, err = run_info(capsys, str(config))
    assert code == 0, err
    # embed + head 2x1000x64, per layer q/o 2x64x64, k/v 2x64x16, ffn 3x64x100, 2 norms, final norm
    total = 2 * 1000 * 64 + 2 * (2 * 64 * 64 + 2 * 64 * 16 + 3 * 64 * 100 + 2 * 64) + 64
    assert f"{total:,}" in out


def test_unknown_preset_is_one_line_with_suggestion(capsys):
    code, out, err = run_info(capsys, "gpt2-smal")
    assert code == 2
    assert len(err.strip().splitlines()) == 1
    assert "gpt2-small" in err and "Traceback" not in err


@pytest.mark.parametrize("argv,expected", [
    (["tiny-gpt2", "num_layerz=3"], "num_layers"),
    (["tiny-gpt2", "position=rotary"], "rope"),
    (["tiny-gpt2", "train.steps=3"], "model.train"),
    (["tiny-gpt2", "num_layers"], "key=value"),
])
def test_bad_overrides_are_one_line(capsys, argv, expected):
    code, out, err = run_info(capsys, *argv)
    assert code == 2
    assert len(err.strip().splitlines()) == 1 and expected in err


def test_each_symbol_names_one_quantity(capsys):
    code, out, err = run_info(capsys, "gpt2-small")
    assert code == 0, err
    lines = out.splitlines()
    start = lines.index(next(line for line in lines if line.startswith("Sizes")))
    symbols = [line.split()[0] for line in lines[start + 1:] if line.strip()][:6]
    assert symbols == ["V", "D", "C", "H", "I", "L"]
    assert "without position tables (N)" in out and "6N" in out  # N: parameters only
