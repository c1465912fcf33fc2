"""Documents packed into rows with grain's first-fit packing.

Each document (ending in eos) is cut into pieces of at most `seq_len + 1` tokens that overlap by
one token, so every (token, next token) pair of the document lies inside exactly one piece.
Pieces are packed into rows of `seq_len + 1`; grain numbers the pieces of a row 1, 2, ... (segment
ids, 0 = padding) and counts positions from 0 in each. A row then gives tokens = row[:-1],
targets = row[1:], and the loss mask drops padding and the last token of each piece, whose
target would belong to the next piece."""

import grain
import numpy as np

from jaxformer.data.sharding import ProcessShard
from jaxformer.errors import UserError


def cut_pieces(documents: list[np.ndarray], piece_len: int) -> list[np.ndarray]:
    """Pieces of at most `piece_len` tokens, consecutive pieces sharing one token; pieces of
    fewer than 2 tokens (no prediction to make) are dropped."""
    step = piece_len - 1
    pieces = []
    for doc in documents:
        for start in range(0, max(len(doc) - 1, 1), step):
            piece = doc[start:start + piece_len]
            if len(piece) >= 2:
                pieces.append(piece)
    return pieces


def rows_to_batch(rows: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Packed rows ([rows, seq_len + 1] tokens, segment ids, positions) -> the batch dict."""
    row, segments, positions = (rows["tokens"], rows["tokens_segment_ids"],
                                rows["tokens_positions"])
    segment_ids = segments[:, :-1]
    same_piece = segments[:, 1:] == segment_ids
    return {
        "tokens": np.ascontiguousarray(row[:, :-1], dtype=np.int32),
        "targets": np.ascontiguousarray(row[:, 1:], dtype=np.int32),
        "positions": np.ascontiguousarray(positions[:, :-1], dtype=np.int32),
        "segment_ids": np.ascontiguousarray(segment_ids, dtype=np.int32),
        "loss_mask": ((segment_ids != 0) & same_piece).astype(np.float32),
    }


def packed_dataset(documents: list[np.ndarray], *, seq_len: int, batch_size: int, seed: int,
                   shard: ProcessShard, shuffle: bool = True) -> grain.IterDataset:
    """An endless grain dataset of packed batches of this process's share of the pieces.

    The pieces are sharded `[index::count]` across processes, then shuffled (a new order each
    epoch) and packed, so each process packs its own disjoint part of the data."""
    rows = shard.local_batch_size(batch_size)
    pieces = cut_pieces(documents, seq_len + 1)
    if len(pieces) < shard.count:
        raise UserError(f"the corpus gives {len(pieces)} pieces of text for {shard.count} "
                        "processes: use a bigger corpus or fewer processes")
    # Shard before shuffling: a process keeps the same pieces every epoch, in a new order.
    ds = grain.MapDataset.source(pieces)[shard.index::shard.count]
    if shuffle:
        ds = ds.seed(seed).shuffle()
    ds = ds.repeat().map(lambda piece: {"tokens": piece})
    it = ds.to_iter_dataset(grain.ReadOptions(num_threads=0, prefetch_buffer_size=0))
    # More bins than rows fill rows better: a piece that fits nowhere closes all bins.
    it = grain.experimental.FirstFitPackIterDataset(
        it, length_struct={"tokens": seq_len + 1}, num_packing_bins=4 * rows, seed=seed,
        shuffle_bins=shuffle)
    return it.batch(rows, drop_remainder=True).map(rows_to_batch)
