"""The masked-LM (+ NSP) data pipeline: documents of sentences -> grain -> batches.

    example index -> SentencePairs (pair, layout, NSP label) -> MaskTokens -> this process's share
        -> batch

Each example is drawn from its own generator, seeded by (seed, its index in the global stream),
before the stream is split between processes; so the data are the same for any number of
processes, and an iterator resumes exactly from its state. A batch holds this process's rows:

    tokens           int32   [rows, seq_len]     ids, with the chosen tokens masked
    token_types      int32   [rows, seq_len]     0 for [CLS] A [SEP], 1 for B [SEP]
    segment_ids      int32   [rows, seq_len]     1 on real tokens, 0 on padding
    masked_positions int32   [rows, max_predictions]
    masked_ids       int32   [rows, max_predictions]   the original ids there
    masked_weights   float32 [rows, max_predictions]   1 for a prediction, 0 for padding
    nsp_labels       int32   [rows]              0 = B follows A, 1 = B is random (with NSP)
"""

import grain
import numpy as np

from jaxformer.data.masking import MaskTokens
from jaxformer.data.sentence_pairs import SentencePairs
from jaxformer.data.sharding import ProcessShard

ENDLESS = 2**62
BATCH_KEYS = ("tokens", "token_types", "segment_ids", "masked_positions", "masked_ids",
              "masked_weights", "nsp_labels")


def encode_documents(tokenizer, documents: list[list[str]]) -> list[list[np.ndarray]]:
    """Each sentence of each document as an int32 token array (one batched encode call)."""
    flat = [s for doc in documents for s in doc]
    encoded = iter(tokenizer.encode_batch(flat))
    return [[np.asarray(next(encoded), np.int32) for _ in doc] for doc in documents]


def _seeds(seed: int) -> tuple[int, int]:
    """Two independent seeds (grain gives two maps with one seed the same generators)."""
    pair_seed, mask_seed = np.random.SeedSequence([seed, 7]).generate_state(2)
    return int(pair_seed), int(mask_seed)


def mlm_examples(documents: list[list[np.ndarray]], tokenizer, *, seq_len: int, nsp: bool,
                 seed: int, mask_prob: float = 0.15, max_predictions: int = 20,
                 mask_token_prob: float = 0.8, random_token_prob: float = 0.1) -> grain.MapDataset:
    """The endless stream of masked examples (a lazy grain MapDataset, indexable)."""
    pairs = SentencePairs(documents, seq_len=seq_len, nsp=nsp, cls_id=tokenizer.cls_id,
                          sep_id=tokenizer.sep_id, pad_id=tokenizer.pad_id)
    mask = MaskTokens(vocab_size=tokenizer.vocab_size, mask_id=tokenizer.mask_id,
                      special_ids=tokenizer.special_ids, mask_prob=mask_prob,
                      max_predictions=max_predictions, mask_token_prob=mask_token_prob,
                      random_token_prob=random_token_prob)
    pair_seed, mask_seed = _seeds(seed)
    return (grain.MapDataset.range(ENDLESS).random_map(pairs, seed=pair_seed)
            .random_map(mask, seed=mask_seed))


def _to_batch(example: dict) -> dict:
    return {k: v for k, v in example.items() if k in BATCH_KEYS}


def mlm_dataset(documents: list[list[np.ndarray]], tokenizer, *, seq_len: int, batch_size: int,
                seed: int, shard: ProcessShard, nsp: bool, **masking) -> grain.IterDataset:
    """Batches of this process's rows (see the module docstring); `batch_size` is global."""
    rows = shard.local_batch_size(batch_size)
    ds = mlm_examples(documents, tokenizer, seq_len=seq_len, nsp=nsp, seed=seed, **masking)
    ds = ds[shard.index::shard.count].map(_to_batch)
    ds = ds.to_iter_dataset(grain.ReadOptions(num_threads=0, prefetch_buffer_size=0))
    return ds.batch(rows, drop_remainder=True)
