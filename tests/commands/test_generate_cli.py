"""`jaxformer generate` and `jaxformer attention` on a tiny HF GPT-2 directory made here with
transformers (random weights, a BPE tokenizer trained in-process), checked against transformers'
own greedy `generate` and `output_attentions`."""

from pathlib import Path

import numpy as np
import pytest
import torch  # the HF extra (the README's test command installs it): missing, these tests fail

from jaxformer.cli import main

PROMPT = "ROMEO: But soft"


def training_text() -> str:
    from jaxformer.data import load_corpus

    return load_corpus("tinyshakespeare").text[:50_000]


@pytest.fixture(scope="module")
def hf_dir(tmp_path_factory):
    """config.json + model.safetensors + tokenizer.json of a 2-layer GPT-2 with 300 tokens."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import GPT2Config, GPT2LMHeadModel

    path = tmp_path_factory.mktemp("hf_gpt2")
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator([training_text()], trainers.BpeTrainer(
        vocab_size=300, special_tokens=["<|endoftext|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tok.save(str(path / "tokenizer.json"))
    torch.manual_seed(0)
    # A wide init makes the random model's greedy text varied rather than one repeated token.
    config = GPT2Config(vocab_size=tok.get_vocab_size(), n_positions=64, n_embd=32, n_layer=2,
                        n_head=2, initializer_range=0.3, bos_token_id=0, eos_token_id=0)
    GPT2LMHeadModel(config).save_pretrained(path)
    return path


def hf_reference(path: Path, prompt_ids: list[int], new_tokens: int) -> list[int]:
    from transformers import GPT2LMHeadModel
    model = GPT2LMHeadModel.from_pretrained(path).eval()
    with torch.inference_mode():
        out = model.generate(torch.tensor([prompt_ids]), attention_mask=torch.ones(1, len(prompt_ids)),
                             max_new_tokens=new_tokens, do_sample=False, pad_token_id=0)
    return out[0, len(prompt_ids):].tolist()


def test_greedy_text_equals_transformers_generate(hf_dir, tmp_path, capsys):
    from tokenizers import Tokenizer
    tok = Tokenizer.from_file(str(hf_dir / "tokenizer.json"))
    ids = tok.encode(PROMPT).ids
    expected = hf_reference(hf_dir, ids, 20)
    assert len(set(expected)) > 3
    expected_text = PROMPT + tok.decode(expected)

    for stream in ("--stream", "--no-stream"):
        assert main(["generate", str(hf_dir), "--prompt", PROMPT, "--temperature", "0",
                     "--max-new-tokens", "20", stream]) == 0
        captured = capsys.readouterr()
        assert captured.out == expected_text + "\n"
        assert "time to first token" in captured.err and "tokens/s" in captured.err

    # Without a tokenizer: token ids in, token ids out, the same continuation.
    bare = tmp_path / "bare"
    bare.mkdir()
    for name in ("config.json", "model.safetensors"):
        (bare / name).write_bytes((hf_dir / name).read_bytes())
    assert main(["generate", str(bare), "--prompt", PROMPT]) == 2
    assert "--prompt-ids" in capsys.readouterr().err
    assert main(["generate", str(bare), "--prompt-ids", ",".join(map(str, ids)),
                 "--temperature", "0", "--max-new-tokens", "20"]) == 0
    assert capsys.readouterr().out == ",".join(map(str, expected)) + "\n"
    assert main(["generate", str(bare), "--prompt-ids", "1,2", "--tokenizer",
                 str(bare / "missing.json")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_batch_of_prompts_from_a_file_and_seeds(hf_dir, tmp_path, capsys):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("ROMEO: But soft\n\nJULIET: O\n", encoding="utf-8")
    args = ["generate", str(hf_dir), "--prompt-file", str(prompts), "--max-new-tokens", "12",
            "--temperature", "1.0", "--top-k", "50"]
    assert main(args + ["--seed", "3"]) == 0
    first = capsys.readouterr().out
    assert main(args + ["--seed", "3"]) == 0
    assert capsys.readouterr().out == first  # same seed, same text
    assert main(args + ["--seed", "4"]) == 0
    assert capsys.readouterr().out != first
    blocks = first.split("-" * 40 + "\n")
    assert len(blocks) == 2 and blocks[0].startswith("ROMEO: But soft") \
        and blocks[1].startswith("JULIET: O")


def test_user_errors_are_one_line(hf_dir, capsys):
    assert main(["generate", str(hf_dir), "--prompt", PROMPT, "--max-new-tokens", "60"]) == 2
    err = capsys.readouterr().err.strip()
    assert "> the model's context of 64" in err and "\n" not in err
    assert main(["generate", str(hf_dir / "nowhere"), "--prompt", "x"]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main(["generate", str(hf_dir), "--prompt-ids", "1,x"]) == 2
    assert "comma-separated integers" in capsys.readouterr().err


def test_attention_png_and_weights_equal_transformers(hf_dir, tmp_path, capsys):
    from tokenizers import Tokenizer
    from transformers import GPT2LMHeadModel

    from jaxformer.commands.attention import attention_weights
    from jaxformer.sources import load_source

    out = tmp_path / "attn.png"
    assert main(["attention", str(hf_dir), "--text", PROMPT, "--out", str(out)]) == 0
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "2 layers x 2 heads" in capsys.readouterr().out

    ids = Tokenizer.from_file(str(hf_dir / "tokenizer.json")).encode(PROMPT).ids
    ours = attention_weights(load_source(hf_dir, attention_impl="einsum").model, ids)
    reference = GPT2LMHeadModel.from_pretrained(hf_dir, attn_implementation="eager").eval()
    with torch.inference_mode():
        theirs = reference(torch.tensor([ids]), output_attentions=True).attentions
    expected = np.stack([a[0].numpy() for a in theirs])  # [layers, heads, query, key]
    np.testing.assert_allclose(ours, expected, atol=1e-5)


def test_attention_figure_has_a_colour_bar_and_names_its_axes(tmp_path):
    from jaxformer.commands.attention import attention_figure, plot

    weights = np.random.default_rng(0).dirichlet(np.ones(4), size=(2, 3, 4))  # [layer, head, q, k]
    fig = attention_figure(weights, [0, 1], [0, 2], list("abcd"), "title")
    assert fig.get_supylabel().startswith("query") and fig.get_supxlabel().startswith("key")
    bars = [ax for ax in fig.axes if ax.get_ylabel() == "attention weight"]
    assert len(bars) == 1 and bars[0].get_ylim() == (0.0, 1.0)
    assert len(fig.axes) == 2 * 2 + 1  # the cells and the bar
    plot(weights, [1], [2], None, tmp_path / "a.png", "title")
    assert (tmp_path / "a.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
