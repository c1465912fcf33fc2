"""Encoder-decoders against HuggingFace transformers itself: T5 v1.0 and v1.1, BART and Marian
saved with `save_pretrained` and loaded by `jaxformer.interop.hf` give the same float32 logits
(odd shapes: d_kv unequal to d / heads, unequal encoder and decoder depths, padded sources); the
same greedy tokens as HF's `generate`; and beam search the same sequences as HF's beam search on
T5, BART and GPT-2, with beams that end early, length penalties 0.6, 1.0 and 2.0 and each of HF's
early-stopping rules. T5 export
loads back into transformers; T5's and Marian's sentencepiece tokenizers encode as HF's do."""

import json

import numpy as np
import pytest

import torch  # the hf extra: missing, this fails rather than skips
import transformers  # the hf extra: missing, this fails rather than skips

import jax.numpy as jnp  # noqa: E402
from safetensors.numpy import load_file, save_file  # noqa: E402

from jaxformer.generate import beam_search, generate  # noqa: E402
from jaxformer.interop import hf  # noqa: E402

ATOL = 1e-4
V = 53
T = transformers
SMALL_T5 = dict(vocab_size=V, d_model=20, d_kv=7, d_ff=36, num_heads=3,
                relative_attention_num_buckets=8, relative_attention_max_distance=20,
                decoder_start_token_id=0, pad_token_id=0, eos_token_id=1)
SMALL_BART = dict(vocab_size=V, d_model=24, encoder_layers=3, decoder_layers=2,
                  encoder_attention_heads=4, decoder_attention_heads=4, encoder_ffn_dim=40,
                  decoder_ffn_dim=40, max_position_embeddings=40)
CASES = {
    "t5-v1.0": (T.T5ForConditionalGeneration,
                T.T5Config(**SMALL_T5, num_layers=3, num_decoder_layers=2)),
    # transformers 5 ties the head and records v1.1's missing scaling as scale_decoder_outputs.
    # (Its T5 generate sizes the decoder's cache by the encoder's depth, so the decoder is the
    # shallower stack here too; Marian has the deeper decoder.)
    "t5-v1.1": (T.T5ForConditionalGeneration,
                T.T5Config(**SMALL_T5, num_layers=4, num_decoder_layers=2,
                           feed_forward_proj="gated-gelu", tie_word_embeddings=False)),
    "bart": (T.BartForConditionalGeneration,
             T.BartConfig(**SMALL_BART, pad_token_id=1, bos_token_id=0, eos_token_id=2,
                          decoder_start_token_id=2, scale_embedding=True)),
    "marian": (T.MarianMTModel,
               T.MarianConfig(**{**SMALL_BART, "encoder_layers": 2, "decoder_layers": 3},
                              pad_token_id=V - 1, decoder_start_token_id=V - 1, eos_token_id=0,
                              scale_embedding=True, activation_function="swish")),
}


def randomise(model, seed: int = 0):
    """Every weight, norm scale and bias random (Marian's fixed sinusoids excepted)."""
    torch.manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "embed_positions" in name and isinstance(model, T.MarianMTModel):
                continue
            is_scale = p.ndim == 1 and "norm" in name and name.endswith("weight")
            p.copy_(1 + 0.2 * torch.randn_like(p) if is_scale else 0.3 * torch.randn_like(p))
        if hasattr(model, "final_logits_bias"):
            model.final_logits_bias.copy_(0.3 * torch.randn_like(model.final_logits_bias))
    return model.eval()


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    """case -> (HF model, its directory). "t5-v1.1-untied" carries its own lm_head.weight, as
    published v1.1 checkpoints do."""
    out = {}
    for case, (cls, config) in CASES.items():
        path = tmp_path_factory.mktemp(case)
        model = randomise(cls(config))
        model.save_pretrained(path)
        out[case] = (model, path)
    _, v11 = out["t5-v1.1"]
    path = tmp_path_factory.mktemp("t5-v1.1-untied")
    tensors = load_file(v11 / "model.safetensors")
    tensors["lm_head.weight"] = np.random.default_rng(3).normal(
        0, 0.3, tensors["shared.weight"].shape).astype(np.float32)
    save_file(tensors, path / "model.safetensors", metadata={"format": "pt"})
    config = json.loads((v11 / "config.json").read_text())
    (path / "config.json").write_text(json.dumps({**config, "tie_word_embeddings": False}))
    out["t5-v1.1-untied"] = (T.T5ForConditionalGeneration.from_pretrained(path).eval(), path)
    return out


SOURCES = [[5, 9, 14, 3, 22, 40, 7, 31, 18], [11, 4, 35, 27, 8, 50], [19, 44, 6, 12]]


def padded(sources):
    width = max(len(s) for s in sources)
    ids = np.zeros((len(sources), width), np.int64)
    mask = np.zeros_like(ids)
    for i, s in enumerate(sources):
        ids[i, :len(s)], mask[i, :len(s)] = s, 1
    return ids, mask


@pytest.mark.parametrize("case", [*CASES, "t5-v1.1-untied"])
def test_logits_match_hf(checkpoints, case):
    hf_model, path = checkpoints[case]
    config, model = hf.load(path)
    assert config.tie_embeddings == (case != "t5-v1.1-untied")
    ids, mask = padded(SOURCES)
    decoder = np.random.default_rng(2).integers(2, V - 1, (len(SOURCES), 7))
    with torch.no_grad():
        expected = hf_model(input_ids=torch.as_tensor(ids), attention_mask=torch.as_tensor(mask),
                            decoder_input_ids=torch.as_tensor(decoder)).logits.numpy()
    out = model(jnp.asarray(ids), jnp.asarray(decoder), jnp.asarray(mask))
    np.testing.assert_allclose(np.asarray(out.logits), expected, atol=ATOL, rtol=0)


def hf_generate(hf_model, sources, eos, **kwargs):
    """HF generate on the padded sources with nothing but the given settings (no forced tokens,
    no n-gram or length rules): (its output, the columns before the new tokens)."""
    ids, mask = padded(sources)
    config = hf_model.config
    extra = {}
    if config.is_encoder_decoder:
        extra = dict(decoder_start_token_id=config.decoder_start_token_id,
                     forced_eos_token_id=None, forced_bos_token_id=None)
    with torch.no_grad():
        out = hf_model.generate(input_ids=torch.as_tensor(ids), attention_mask=torch.as_tensor(mask),
                                do_sample=False, eos_token_id=eos, pad_token_id=config.pad_token_id or 0,
                                no_repeat_ngram_size=0, min_length=0, **extra, **kwargs)
    return out, 1 if config.is_encoder_decoder else ids.shape[1]


def up_to_stop(rows: list[list[int]], stops) -> list[list[int]]:
    """Each row up to and including its first token in `stops` (whole if none)."""
    out = []
    for row in rows:
        ends = [i for i, t in enumerate(row) if t in stops]
        out.append(row[:ends[0] + 1] if ends else row)
    return out


def hf_new_tokens(hf_model, sources, eos: int | None, **kwargs) -> list[list[int]]:
    """HF generate's new tokens of each source, up to and including the end token (None: no
    end token)."""
    out, skip = hf_generate(hf_model, sources, eos, **kwargs)
    return up_to_stop(out[:, skip:].tolist(), () if eos is None else (eos,))


def frequent_token(rows: list[list[int]]) -> int:
    """A token greedy decoding emits often early on: as the end token, it ends beams early."""
    values, counts = np.unique([t for row in rows for t in row[1:5]], return_counts=True)
    return int(values[np.argmax(counts)])


@pytest.mark.parametrize("case", ["t5-v1.0", "t5-v1.1", "bart", "marian"])
def test_greedy_matches_hf(checkpoints, case):
    hf_model, path = checkpoints[case]
    _, model = hf.load(path)
    eos = hf_model.config.eos_token_id
    expected = hf_new_tokens(hf_model, SOURCES, eos, max_new_tokens=12)
    assert generate(model, SOURCES, 12, temperature=0.0, stop_tokens=[eos]) == expected


@pytest.fixture(scope="module")
def gpt2(tmp_path_factory):
    torch.manual_seed(0)
    model = T.GPT2LMHeadModel(T.GPT2Config(vocab_size=V, n_embd=32, n_layer=2, n_head=4,
                                           n_positions=64, bos_token_id=0, eos_token_id=0))
    with torch.no_grad():
        for name, p in model.named_parameters():
            is_scale = p.ndim == 1 and "ln" in name and name.endswith("weight")
            p.copy_(1 + 0.2 * torch.randn_like(p) if is_scale else 0.3 * torch.randn_like(p))
    path = tmp_path_factory.mktemp("gpt2")
    model.eval().save_pretrained(path)
    return model, path


@pytest.mark.parametrize("case", ["t5-v1.0", "bart", "gpt2"])
def test_beam_search_matches_hf(checkpoints, gpt2, case):
    """HF's early_stopping=True (the issue's setting), False (its default) and "never", each with
    length penalties 0.6, 1.0 and 2.0: one compiled program serves them all."""
    hf_model, path = gpt2 if case == "gpt2" else checkpoints[case]
    _, model = hf.load(path)
    # GPT-2 prompts of one length: HF left-pads decoder-only prompts, jaxformer right-pads.
    sources = [s[:4] for s in SOURCES] if case == "gpt2" else SOURCES
    eos = frequent_token(hf_new_tokens(hf_model, sources, None, max_new_tokens=10))
    rules = [(early, penalty) for early in (True, False, "never") for penalty in (0.6, 1.0, 2.0)]
    for i, (early_stopping, length_penalty) in enumerate(rules):
        settings = dict(max_new_tokens=10, num_beams=4, early_stopping=early_stopping,
                        length_penalty=length_penalty)
        expected = hf_new_tokens(hf_model, sources, eos, **settings)
        if early_stopping is True:
            assert any(len(row) < 10 for row in expected), "no beam ended early: pick another eos"
        timings = {}
        got = beam_search(model, sources, stop_tokens=[eos], timings=timings, **settings)
        assert got == expected, (early_stopping, length_penalty)
        assert i == 0 or timings["compile_s"] == 0.0  # the rules are arguments of one program


@pytest.mark.parametrize("case", ["t5-v1.0", "t5-v1.1-untied"])
def test_t5_export_loads_in_transformers(checkpoints, tmp_path, case):
    hf_model, path = checkpoints[case]
    config, model = hf.load(path)
    hf.save(tmp_path, config, model)
    reloaded = T.T5ForConditionalGeneration.from_pretrained(tmp_path).eval()
    ids, mask = padded(SOURCES)
    decoder = np.random.default_rng(5).integers(2, V - 1, (len(SOURCES), 6))
    with torch.no_grad():
        args = dict(input_ids=torch.as_tensor(ids), attention_mask=torch.as_tensor(mask),
                    decoder_input_ids=torch.as_tensor(decoder))
        np.testing.assert_allclose(reloaded(**args).logits.numpy(), hf_model(**args).logits.numpy(),
                                   atol=1e-6, rtol=0)


TEXTS = ["the quick brown fox jumps over the lazy dog", "a dog, a fox; and 42 frogs!",
         "unseen wørds ünicode"]


def train_spm(path, **special):
    import sentencepiece

    corpus = " ".join(["the quick brown fox jumps over the lazy dog and the frogs"] * 20
                      + ["a dog a fox and forty two frogs jumped"] * 20)
    sentencepiece.SentencePieceTrainer.train(
        sentence_iterator=iter(corpus.split(" and ")), model_prefix=str(path), vocab_size=60,
        model_type="unigram", hard_vocab_limit=False, minloglevel=2, **special)
    return path.with_suffix(".model")


def test_t5_tokenizer_matches_hf(tmp_path):
    from jaxformer.interop.hf_tokenizers import sentencepiece_tokenizer

    model_file = train_spm(tmp_path / "sp", pad_id=0, eos_id=1, unk_id=2, bos_id=-1)
    (tmp_path / "spiece.model").write_bytes(model_file.read_bytes())
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"extra_ids": 10}))
    ours = sentencepiece_tokenizer(tmp_path)
    theirs = T.T5Tokenizer.from_pretrained(tmp_path)
    assert ours.vocab_size == len(theirs) and (ours.eos_id, ours.pad_id) == (1, 0)
    for text in TEXTS:
        ids = ours.encode(text)
        assert ids == theirs(text).input_ids
        assert ours.decode(ids) == theirs.decode(ids, skip_special_tokens=True)
    sentinel = ours.vocab_size - 1
    assert ours.pieces([sentinel]) == ["<extra_id_0>"] == theirs.convert_ids_to_tokens([sentinel])


def test_marian_tokenizer_matches_hf(tmp_path):
    from jaxformer.interop.hf_tokenizers import sentencepiece_tokenizer

    model_file = train_spm(tmp_path / "sp")
    for name in ("source.spm", "target.spm"):
        (tmp_path / name).write_bytes(model_file.read_bytes())
    import sentencepiece

    sp = sentencepiece.SentencePieceProcessor(model_file=str(model_file))
    pieces = [sp.id_to_piece(i) for i in range(sp.get_piece_size())]
    # Marian's vocab.json: </s> 0, <unk> 1, the pieces, <pad> last; one piece left out (-> <unk>).
    vocab = {"</s>": 0, "<unk>": 1}
    for piece in pieces[3:-1]:
        vocab.setdefault(piece, len(vocab))
    vocab["<pad>"] = len(vocab)
    (tmp_path / "vocab.json").write_text(json.dumps(vocab))
    ours = sentencepiece_tokenizer(tmp_path)
    theirs = T.MarianTokenizer(source_spm=str(tmp_path / "source.spm"),
                               target_spm=str(tmp_path / "target.spm"),
                               vocab=str(tmp_path / "vocab.json"))
    assert ours.vocab_size == theirs.vocab_size
    for text in TEXTS:
        ids = ours.encode(text)
        assert ids == theirs(text).input_ids
        assert ours.decode(ids) == theirs.decode(ids, skip_special_tokens=True)
