"""`jaxformer classify`: labels for texts from a fine-tuned encoder.

    jaxformer classify runs/bert_speakers_cpu "Now is the winter of our discontent"
    jaxformer classify RUN_DIR "text" --pair "second text"       # a sentence-pair classifier
    jaxformer classify RUN_DIR "text" --context "..."            # span QA: the text is the question

A `classification` model prints each text's labels by probability; a `token_classification`
model each piece's label; a `span_qa` model the answer span found in --context. Label names come
from the run's labels.json or the HF config's id2label.
"""

import argparse

import numpy as np

from jaxformer import inference
from jaxformer.commands.encoder_source import add_source_arguments, load_encoder
from jaxformer.errors import UserError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_source_arguments(parser)
    parser.add_argument("texts", nargs="+", metavar="TEXT", help="texts to classify")
    parser.add_argument("--pair", action="append", default=None, metavar="TEXT",
                        help="the second text of a pair (once per TEXT)")
    parser.add_argument("--context", default=None,
                        help="for a question-answering model: the text to find the answer in")
    parser.add_argument("--top-k", type=int, default=3, help="labels shown per text (default: 3)")


def run(args) -> int:
    model, tokenizer, labels = load_encoder(args)
    head = model.config.head
    if head == "span_qa":
        if args.context is None:
            raise UserError("a question-answering model needs --context TEXT to find answers in")
        for question in args.texts:
            span, prob = inference.answer(model, tokenizer, question, args.context)
            print(f"{question}\n  -> {span!r} ({prob:.2%})")
        return 0
    if head == "token_classification":
        for text in args.texts:
            pieces, probs = inference.tag_tokens(model, tokenizer, text)
            print(" ".join(f"{p}/{labels[int(np.argmax(q))]}" for p, q in zip(pieces, probs)))
        return 0
    if args.pair is not None and len(args.pair) != len(args.texts):
        raise UserError(f"{len(args.pair)} --pair texts for {len(args.texts)} texts: give one "
                        f"--pair per text")
    probs = inference.classify(model, tokenizer, args.texts, args.pair)
    for text, row in zip(args.texts, probs):
        best = np.argsort(-row)[:args.top_k]
        print(f"{text}\n  " + ", ".join(f"{labels[i]} {row[i]:.2%}" for i in best))
    return 0
