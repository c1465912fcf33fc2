"""Random windows from one long token stream, as nanoGPT's `get_batch`: each row is
`seq_len + 1` consecutive tokens from a uniformly random start (with replacement); tokens are the
window without its last token, targets without its first.

The grain dataset's element j is global batch j, drawn from a generator seeded by (seed, j), so
the iterator state is just the next index and resuming is exact. A process keeps its contiguous
block of rows of every global batch; the global batch is then the same for any process count."""

import grain
import numpy as np

from jaxformer.data.sharding import ProcessShard


class WindowBatch:
    """Global batch index -> this process's rows, as the batch dict (numpy, [rows, seq_len])."""

    def __init__(self, stream: np.ndarray, *, seq_len: int, batch_size: int, seed: int,
                 shard: ProcessShard):
        self.stream = stream
        self.seq_len = seq_len
        self.batch_size = batch_size
        self.seed = seed
        self.shard = shard
        self.num_starts = len(stream) - seq_len  # starts s with s + seq_len < len(stream)
        self.offsets = np.arange(seq_len + 1)
        rows = shard.local_batch_size(batch_size)
        # Constant parts of every batch, copied per batch so that a consumer may mutate them.
        self.positions = np.broadcast_to(np.arange(seq_len, dtype=np.int32), (rows, seq_len))
        self.ones = np.ones((rows, seq_len), dtype=np.int32)

    def starts(self, index: int) -> np.ndarray:
        """Window starts of global batch `index`, [batch_size] (all processes' rows)."""
        rng = np.random.default_rng([self.seed, index])
        return rng.integers(0, self.num_starts, size=self.batch_size)

    def __call__(self, index: int) -> dict[str, np.ndarray]:
        starts = self.shard.rows(self.starts(index))
        windows = self.stream[starts[:, None] + self.offsets]  # [rows, seq_len + 1]
        return {
            "tokens": np.ascontiguousarray(windows[:, :-1]),
            "targets": np.ascontiguousarray(windows[:, 1:]),
            "positions": self.positions.copy(),
            "segment_ids": self.ones.copy(),
            "loss_mask": self.ones.astype(np.float32),
        }


def window_dataset(stream: np.ndarray, *, seq_len: int, batch_size: int, seed: int,
                   shard: ProcessShard) -> grain.IterDataset:
    """An endless grain dataset of window batches from `stream` (int32 [num_tokens])."""
    make_batch = WindowBatch(stream, seq_len=seq_len, batch_size=batch_size, seed=seed,
                             shard=shard)
    # Indices are free to go up to 2**62: a run never exhausts them, so there are no epochs.
    ds = grain.MapDataset.range(2**62).map(make_batch)
    return ds.to_iter_dataset(grain.ReadOptions(num_threads=0, prefetch_buffer_size=0))
