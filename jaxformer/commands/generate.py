"""`jaxformer generate`: sample text from a run directory or a HuggingFace model directory.

    jaxformer generate runs/shakespeare_char_cpu --prompt "ROMEO:" --max-new-tokens 200
    jaxformer generate ./gpt2 --prompt "Hello, my dog" --temperature 0.7 --top-p 0.9
    jaxformer generate ./gpt2 --prompt-ids 15496,11,616,3290 --temperature 0    # no tokenizer needed
    jaxformer generate ./gpt2 --prompt-file prompts.txt     # one prompt per line, run as one batch
    jaxformer generate ./t5-small --prompt "translate English to German: Hello" --beams 4
    jaxformer generate runs/transformer_addition_cpu --prompt "352+79" --temperature 0
    jaxformer generate runs/shakespeare_char_cpu --prompt "ROMEO:" --weights-dtype bfloat16

For an encoder-decoder (T5, BART, Marian, a seq2seq run) the prompt is the source and the output
is printed on its own.

The text goes to stdout (streamed as it is produced when there is one prompt); compile time, time to
first token and decode tokens/s go to stderr. Tokenizers for HF directories: see
`jaxformer.sources`. Generation stops at the model's end-of-text token unless
--ignore-eos; the same --seed gives the same text.
"""

import argparse
import sys
from pathlib import Path

from jaxformer.errors import UserError
from jaxformer.generate import beam_search, decode, generate_past_context, make_settings
from jaxformer.generate.precision import WEIGHT_DTYPES, with_weights_dtype
from jaxformer.generate.steps import encoder_input, is_encoder_decoder, steps_for
from jaxformer.generate.streaming import TextStream, TokenTimer
from jaxformer.sources import Source, load_source

DEFAULT_NEW_TOKENS = 100


def checked(kind, ok, what: str):
    """An argparse type: `kind(text)`, refused unless `ok(value)`; argparse then names the flag
    ("argument --top-k: must be a positive integer, got 0")."""
    def parse(text: str):
        value = kind(text)
        if not ok(value):
            raise argparse.ArgumentTypeError(f"must be {what}, got {text}")
        return value
    parse.__name__ = kind.__name__  # argparse's "invalid int value" for text that is no number
    return parse


POSITIVE_INT = checked(int, lambda v: v >= 1, "a positive integer")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("source", metavar="RUN_DIR_OR_HF_DIR",
                        help="a `jaxformer train` run directory or a HuggingFace model directory")
    prompt = parser.add_mutually_exclusive_group(required=True)
    prompt.add_argument("--prompt", action="append", metavar="TEXT",
                        help="text to continue (repeat for a batch of prompts)")
    prompt.add_argument("--prompt-file", type=Path, metavar="FILE",
                        help="a UTF-8 file with one prompt per line (blank lines skipped)")
    prompt.add_argument("--prompt-ids", action="append", metavar="IDS",
                        help="a prompt as comma-separated token ids (repeatable); works without "
                             "a tokenizer, and then prints token ids")
    parser.add_argument("--max-new-tokens", type=POSITIVE_INT, default=None,
                        help=f"tokens to generate per prompt (default: {DEFAULT_NEW_TOKENS}, or "
                             f"fewer if the model's context is shorter)")
    parser.add_argument("--temperature", type=checked(float, lambda v: v >= 0, ">= 0"), default=0.8,
                        help="0 is greedy (default: 0.8)")
    parser.add_argument("--top-k", type=POSITIVE_INT, default=None,
                        help="sample among the k most likely")
    parser.add_argument("--top-p", type=checked(float, lambda v: 0 < v <= 1, "in (0, 1]"),
                        default=None,
                        help="sample from the smallest set of tokens holding probability p")
    parser.add_argument("--seed", type=int, default=0,
                        help="random seed; prompt i uses seed + i, and gets the text it would get "
                             "alone with that seed (default: 0)")
    parser.add_argument("--stream", action=argparse.BooleanOptionalAction, default=True,
                        help="print text as it is produced (one prompt only; default: on)")
    parser.add_argument("--tokenizer", metavar="PATH", default=None,
                        help="a sentencepiece .model, a tokenizer.json or a saved tokenizer "
                             "directory, overriding the one found next to the model")
    parser.add_argument("--ignore-eos", action="store_true",
                        help="do not stop at the end-of-text token")
    parser.add_argument("--beams", type=int, default=1, metavar="N",
                        help="beam search with N beams (deterministic; --temperature, --top-k and "
                             "--top-p do not apply); default 1: sampling or greedy")
    parser.add_argument("--length-penalty", type=float, default=1.0,
                        help="beam search: scores are divided by length ** this (default 1.0; "
                             "> 0 favours longer outputs)")
    parser.add_argument("--early-stopping", action="store_true",
                        help="beam search: stop an input once it has N finished hypotheses "
                             "(HF's early_stopping=True)")
    parser.add_argument("--weights-dtype", choices=WEIGHT_DTYPES, default="float32",
                        help="cast the weights once to this dtype and compute in it: bfloat16 "
                             "halves the bytes batch-1 decoding reads per token (the accuracy "
                             "change is in the README's performance section)")
    parser.add_argument("--past-context", action="store_true",
                        help="allow prompt + new tokens beyond the model's context: generate in "
                             "chunks, each conditioned on the last half-context of tokens (as "
                             "nanoGPT's sampler crops its input); printed when done, not streamed")


def read_prompts(args, source: Source) -> tuple[list[list[int]], list[str] | None]:
    """(token ids of each prompt, the prompt texts or None when given as ids)."""
    if args.prompt_ids:
        prompts = [parse_ids(text) for text in args.prompt_ids]
        return prompts, None
    if args.prompt_file is not None:
        if not args.prompt_file.is_file():
            raise UserError(f"prompt file {args.prompt_file} does not exist")
        texts = [line for line in args.prompt_file.read_text(encoding="utf-8").splitlines()
                 if line.strip()]
        if not texts:
            raise UserError(f"prompt file {args.prompt_file} has no non-blank lines")
    else:
        texts = args.prompt
    if source.tokenizer is None:
        raise UserError(f"{args.source} has no tokenizer (no tokenizer.json or tokenizer.model): "
                        f"pass --tokenizer PATH, or the prompt as token ids with --prompt-ids")
    return [source.tokenizer.encode(text) for text in texts], texts


def parse_ids(text: str) -> list[int]:
    try:
        return [int(part) for part in text.replace(" ", "").split(",") if part]
    except ValueError:
        raise UserError(f"--prompt-ids {text!r}: expected comma-separated integers like "
                        f"15496,11,616") from None


def pick(spec: str | None, count: int, name: str) -> list[int]:
    """The indices `--layers` / `--heads` name (all `count` of them when not given)."""
    if spec is None:
        return list(range(count))
    chosen = parse_ids(spec)
    bad = [i for i in chosen if not 0 <= i < count]
    if bad or not chosen:
        raise UserError(f"--{name} {spec!r}: indices must lie in [0, {count}) (the model has "
                        f"{count} {name})")
    return chosen


def choose_new_tokens(requested: int | None, prompts: list[list[int]], context: int,
                      encoder_decoder: bool = False) -> int:
    if requested is not None:
        return requested  # too many is a UserError from generate, with the numbers
    # An encoder-decoder's output has the decoder's positions to itself.
    room = context if encoder_decoder else context - max(len(p) for p in prompts)
    if room < 1:
        raise UserError(f"the longest prompt has {context - room} tokens, which fills the model's "
                        f"context of {context}: shorten it")
    if room < DEFAULT_NEW_TOKENS:
        print(f"[generate] the context ({context} tokens) leaves room for {room} new tokens",
              file=sys.stderr)
    return min(DEFAULT_NEW_TOKENS, room)


def run(args) -> int:
    source = load_source(args.source, tokenizer=args.tokenizer,
                         log=lambda msg: print(msg, file=sys.stderr))
    if getattr(source.model.config, "family", None) == "encoder":
        raise UserError(f"{args.source} holds an encoder (BERT), which does not generate text: "
                        f"use `jaxformer fill-mask`, `classify` or `embed`")
    reads = encoder_input(source.model)
    if reads == "images":
        raise UserError(f"{args.source} captions images, not text prompts: use `jaxformer "
                        f"attention {args.source} --digit-index N` (or --image PATH), or "
                        f"jaxformer.generate.generate(model, images, ...) in Python")
    if reads == "features":
        raise UserError(f"{args.source} transcribes audio, not text prompts: use `jaxformer "
                        f"transcribe {args.source} AUDIO.wav`, or "
                        f"jaxformer.generate.generate(model, features, ...) in Python")
    source.model = with_weights_dtype(source.model, args.weights_dtype)
    prompts, texts = read_prompts(args, source)
    tokenizer = source.tokenizer
    encoder_decoder = is_encoder_decoder(source.model)
    if args.past_context:
        if encoder_decoder:
            raise UserError("--past-context continues a decoder's text; an encoder-decoder "
                            "writes a new output for each source: leave it out")
        return run_past_context(args, source, prompts, texts)
    config = source.model.config
    new_tokens = choose_new_tokens(args.max_new_tokens, prompts, config.max_seq_len,
                                   encoder_decoder)
    steps_for(source.model).check_request(prompts, new_tokens, config, cli=True)
    if args.beams != 1:
        return run_beams(args, source, prompts, texts, new_tokens, encoder_decoder)
    settings = make_settings(new_tokens, temperature=args.temperature, top_k=args.top_k,
                             top_p=args.top_p,
                             stop_tokens=[] if args.ignore_eos else source.stop_tokens,
                             stream=True)

    streaming = args.stream and len(prompts) == 1 and tokenizer is not None
    stream = TextStream(tokenizer) if streaming else None
    timer = TokenTimer(then=stream)
    if streaming and not encoder_decoder:
        print(texts[0] if texts is not None else tokenizer.decode(prompts[0]), end="", flush=True)
    timings: dict = {}
    out = decode(source.model, prompts, settings, seed=args.seed, on_tokens=timer, timings=timings)
    timer.start_time = timings["run_start"]

    if streaming:
        stream.finish()
        print(flush=True)
    else:
        print_outputs(prompts, texts, [row[:n].tolist() for row, n in zip(out.tokens, out.num_tokens)],
                      tokenizer, encoder_decoder)

    total = int(out.num_tokens.sum())
    compile_note = f"compiled in {timings['compile_s']:.1f} s; " if timings["compile_s"] else ""
    print(f"[generate] {compile_note}{len(prompts)} prompt(s), {total} new tokens; time to first "
          f"token {timer.ttft_s * 1e3:.0f} ms; decode {timer.decode_tokens_per_s:.1f} tokens/s",
          file=sys.stderr)
    return 0


def print_outputs(prompts, texts, outputs: list[list[int]], tokenizer, encoder_decoder: bool) -> None:
    """Each prompt's continuation (a decoder's text goes on from its prompt; an encoder-decoder's
    output stands alone), or token ids without a tokenizer."""
    for i, (prompt, new) in enumerate(zip(prompts, outputs)):
        if i:
            print("-" * 40)
        if tokenizer is None:
            print(",".join(str(t) for t in new))
        elif encoder_decoder:
            print(tokenizer.decode(new))
        else:
            print((texts[i] if texts is not None else tokenizer.decode(prompt)) + tokenizer.decode(new))
    sys.stdout.flush()


def run_beams(args, source: Source, prompts, texts, new_tokens: int, encoder_decoder: bool) -> int:
    """--beams N: the best hypothesis of each prompt, printed when the search is done."""
    if args.beams < 1:
        raise UserError(f"--beams must be at least 1, got {args.beams}")
    timings: dict = {}
    outputs = beam_search(source.model, prompts, new_tokens, num_beams=args.beams,
                          length_penalty=args.length_penalty, early_stopping=args.early_stopping,
                          stop_tokens=[] if args.ignore_eos else source.stop_tokens,
                          timings=timings)
    print_outputs(prompts, texts, outputs, source.tokenizer, encoder_decoder)
    total = sum(len(o) for o in outputs)
    compile_note = f"compiled in {timings['compile_s']:.1f} s; " if timings["compile_s"] else ""
    print(f"[generate] {compile_note}beam search, {args.beams} beams: {len(prompts)} prompt(s), "
          f"{total} new tokens in {timings['total_s']:.2f} s", file=sys.stderr)
    return 0


def run_past_context(args, source: Source, prompts: list[list[int]], texts: list[str] | None) -> int:
    """--past-context: each prompt on its own, in chunks that slide over the context."""
    tokenizer = source.tokenizer
    for i, prompt in enumerate(prompts):
        if i:
            print("-" * 40)
        new = generate_past_context(
            source.model, prompt, args.max_new_tokens or DEFAULT_NEW_TOKENS,
            temperature=args.temperature, top_k=args.top_k, top_p=args.top_p, seed=args.seed,
            stop_tokens=[] if args.ignore_eos else source.stop_tokens)
        if tokenizer is None:
            print(",".join(str(t) for t in new))
        else:
            print((texts[i] if texts is not None else tokenizer.decode(prompt)) + tokenizer.decode(new))
    return 0
