"""Source/target pairs into batches for an encoder-decoder, padded or packed.

An example is {"inputs": source ids, "targets": target ids ending in the end token}. A batch holds
this process's rows (numpy):

    tokens              int32   [rows, source_len]  source ids (the encoder's input)
    segment_ids         int32   [rows, source_len]  1, 2, ... per packed pair; 0 = padding
    positions           int32   [rows, source_len]  position within the pair's source, from 0
    decoder_tokens      int32   [rows, target_len]  the target shifted right behind the start token
    targets             int32   [rows, target_len]  the ids to predict (teacher forcing)
    decoder_segment_ids int32   [rows, target_len]  the pair's id again: a target attends only to
                                                    its own source
    decoder_positions   int32   [rows, target_len]
    loss_mask           float32 [rows, target_len]  1 on real target tokens

Unpacked, each row is one pair padded on the right. Packed (grain's first-fit packing), several
pairs share a row, their sources and targets numbered alike; the decoder's input restarts with the
start token at each pair. Examples longer than the lengths are cut.
"""

import grain
import numpy as np

from jaxformer.data.sharding import ProcessShard

NAMES = ("inputs", "targets")


def fit(example: dict, source_len: int, target_len: int) -> dict:
    """Cut an example to the lengths (int32)."""
    return {"inputs": np.asarray(example["inputs"], np.int32)[:source_len],
            "targets": np.asarray(example["targets"], np.int32)[:target_len]}


def pad_example(example: dict, source_len: int, target_len: int) -> dict:
    """One pair as a row of grain's packed layout (segment 1, padding 0)."""
    row = {}
    for name, length in zip(NAMES, (source_len, target_len)):
        ids = example[name]
        n = len(ids)
        row[name] = np.pad(ids, (0, length - n))
        row[f"{name}_segment_ids"] = (np.arange(length) < n).astype(np.int32)
        row[f"{name}_positions"] = np.where(np.arange(length) < n, np.arange(length), 0).astype(np.int32)
    return row


def rows_to_batch(rows: dict, start_id: int) -> dict[str, np.ndarray]:
    """Rows in grain's packed layout ([rows, len] per name, `<name>_segment_ids`,
    `<name>_positions`) -> the batch dict of the module docstring."""
    targets = rows["targets"].astype(np.int32)
    target_positions = rows["targets_positions"].astype(np.int32)
    shifted = np.concatenate([np.full_like(targets[:, :1], start_id), targets[:, :-1]], axis=1)
    decoder_tokens = np.where(target_positions == 0, start_id, shifted).astype(np.int32)
    target_segments = rows["targets_segment_ids"].astype(np.int32)
    return {
        "tokens": rows["inputs"].astype(np.int32),
        "segment_ids": rows["inputs_segment_ids"].astype(np.int32),
        "positions": rows["inputs_positions"].astype(np.int32),
        "decoder_tokens": np.where(target_segments == 0, 0, decoder_tokens).astype(np.int32),
        "targets": targets,
        "decoder_segment_ids": target_segments,
        "decoder_positions": target_positions,
        "loss_mask": (target_segments != 0).astype(np.float32),
    }


def pair_dataset(examples: grain.MapDataset, *, batch_size: int, source_len: int,
                 target_len: int, start_id: int, shard: ProcessShard, packing: bool = False,
                 seed: int = 0, shuffle: bool = True, repeat: bool = True,
                 transform: grain.transforms.RandomMap | None = None) -> grain.IterDataset:
    """A grain dataset of batches of this process's share of `examples` (sharded
    `[index::count]`, then shuffled each epoch when `shuffle`, repeated when `repeat`).
    `transform` (e.g. span corruption) makes the examples from the elements after that, so each
    epoch draws afresh."""
    rows = shard.local_batch_size(batch_size)
    ds = examples[shard.index::shard.count]
    if shuffle:
        ds = ds.seed(seed).shuffle()
    if repeat:
        ds = ds.repeat()
    if transform is not None:
        ds = ds.random_map(transform, seed=seed)
    ds = ds.map(lambda example: fit(example, source_len, target_len))
    if not packing:
        ds = ds.map(lambda example: pad_example(example, source_len, target_len))
    it = ds.to_iter_dataset(grain.ReadOptions(num_threads=0, prefetch_buffer_size=0))
    if packing:
        it = grain.experimental.FirstFitPackIterDataset(
            it, length_struct={"inputs": source_len, "targets": target_len},
            num_packing_bins=4 * rows, seed=seed, shuffle_bins=shuffle)
    return it.batch(rows, drop_remainder=True).map(lambda batch: rows_to_batch(batch, start_id))
