"""`jaxformer embed`: sentence embeddings from an encoder (mean pooling), as retrieval uses them.

    jaxformer embed runs/bert_shakespeare_cpu "to be or not to be" "what light through yonder window"
    jaxformer embed ./bert-base-uncased --file lines.txt --out embeddings.npy

Each text's embedding is the mean of the last hidden states over its real tokens ([CLS] and
[SEP] included), as sentence-transformers pools. Prints the shape and the cosine similarities
(texts against texts, or against --query); --out writes a float32 .npy [texts, d_model].
"""

import argparse
from pathlib import Path

import numpy as np

from jaxformer.commands.encoder_source import add_source_arguments, load_encoder
from jaxformer.errors import UserError
from jaxformer.inference import embed


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_source_arguments(parser)
    parser.add_argument("texts", nargs="*", metavar="TEXT", help="texts to embed")
    parser.add_argument("--file", type=Path, default=None,
                        help="a UTF-8 file of texts, one per line (blank lines skipped)")
    parser.add_argument("--query", default=None,
                        help="rank the texts by cosine similarity to this text")
    parser.add_argument("--out", type=Path, default=None, help="write the embeddings as .npy")
    parser.add_argument("--batch-size", type=int, default=32, help="texts per forward pass")


def run(args) -> int:
    texts = list(args.texts)
    if args.file is not None:
        if not args.file.is_file():
            raise UserError(f"--file {args.file} does not exist")
        texts += [line for line in args.file.read_text(encoding="utf-8").splitlines() if line.strip()]
    if not texts:
        raise UserError("no texts to embed: give TEXT arguments or --file")
    if args.batch_size <= 0:
        raise UserError(f"--batch-size must be positive, got {args.batch_size}")
    model, tokenizer, _ = load_encoder(args)
    vectors = np.concatenate([embed(model, tokenizer, texts[i:i + args.batch_size])
                              for i in range(0, len(texts), args.batch_size)])
    print(f"{len(texts)} embeddings of {vectors.shape[1]} dimensions (mean pooling)")
    unit = vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
    if args.query is not None:
        query = embed(model, tokenizer, [args.query])[0]
        scores = unit @ (query / max(np.linalg.norm(query), 1e-12))
        for i in np.argsort(-scores):
            print(f"  {scores[i]:+.3f}  {texts[i]}")
    elif len(texts) <= 10:
        print("cosine similarity:")
        for i, text in enumerate(texts):
            print("  " + " ".join(f"{v:+.2f}" for v in unit[i] @ unit.T) + f"  {text[:50]}")
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        np.save(args.out, vectors.astype(np.float32), allow_pickle=False)
        print(f"wrote {args.out}")
    return 0
