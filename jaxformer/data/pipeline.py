"""The data API of the training loop: an endless, checkpointable train iterator and a fixed list
of evaluation batches. Every batch is a dict of numpy arrays, this process's rows:

    tokens      int32   [rows, seq_len]  input ids
    targets     int32   [rows, seq_len]  the id that follows each input
    positions   int32   [rows, seq_len]  position within the document (or window), from 0
    segment_ids int32   [rows, seq_len]  1, 2, ... per packed document; 0 = padding
    loss_mask   float32 [rows, seq_len]  1 where the target is a real next token

with rows = batch_size // process_count (`batch_size` is the global batch)."""

import grain
import numpy as np

from jaxformer.data.config import DataConfig
from jaxformer.data.corpus import Corpus
from jaxformer.data.packing import packed_dataset
from jaxformer.data.sharding import ProcessShard
from jaxformer.data.splits import check_enough, split_documents_tokens, split_stream, use_packing
from jaxformer.data.tokenizers.base import Tokenizer
from jaxformer.data.windows import window_dataset

_PURPOSES = {"train": 0, "eval": 1}
_SPLIT_CODES = {"train": 0, "val": 1}


def stream_seed(config: DataConfig, seed: int, split: str, purpose: str) -> int:
    """A 32-bit seed that differs for each (config.seed, seed, split, purpose)."""
    entropy = [config.seed, seed, _SPLIT_CODES[split], _PURPOSES[purpose]]
    return int(np.random.SeedSequence(entropy).generate_state(1)[0])


def shuffled_rows(rows: list[dict], config: DataConfig, seed: int, batch_size: int,
                  shard: ProcessShard):
    """An endless iterator of batches of prepared examples (dicts of arrays): shard, then shuffle,
    so each process keeps its examples, in a new order every epoch; this process's rows of each
    global batch of `batch_size`."""
    rows_per_process = shard.local_batch_size(batch_size)
    ds = grain.MapDataset.source(rows)[shard.index::shard.count]
    ds = ds.seed(stream_seed(config, seed, "train", "train")).shuffle().repeat()
    ds = ds.to_iter_dataset(grain.ReadOptions(num_threads=0, prefetch_buffer_size=0))
    return iter(ds.batch(rows_per_process, drop_remainder=True))


def _dataset(config: DataConfig, tokenizer: Tokenizer, corpus: Corpus, *, batch_size: int,
             seq_len: int, seed: int, split: str, purpose: str, shard: ProcessShard,
             ) -> grain.IterDataset:
    if seq_len <= 0:
        raise ValueError(f"seq_len must be positive, got {seq_len}")
    shard.local_batch_size(batch_size)  # fail early on an indivisible batch
    data_seed = stream_seed(config, seed, split, purpose)
    if use_packing(config, corpus):
        documents = split_documents_tokens(config, tokenizer, corpus, split)
        check_enough(sum(len(d) for d in documents), 1, split, corpus)
        return packed_dataset(documents, seq_len=seq_len, batch_size=batch_size, seed=data_seed,
                              shard=shard, shuffle=purpose == "train")
    stream = split_stream(config, tokenizer, corpus, split)
    check_enough(len(stream), seq_len, split, corpus)
    return window_dataset(stream, seq_len=seq_len, batch_size=batch_size, seed=data_seed,
                          shard=shard)


def make_train_iterator(config: DataConfig, tokenizer: Tokenizer, corpus: Corpus, *,
                        batch_size: int, seq_len: int, seed: int = 0,
                        process_index: int | None = None, process_count: int | None = None,
                        ) -> grain.DatasetIterator:
    """An endless iterator of training batches (see the module docstring for the layout).

    `batch_size` is the global batch; this process gets its `batch_size // process_count` rows
    (process index and count default to JAX's). The order depends on `config.seed` and `seed`.
    `get_state()` / `set_state()` (or orbax's `grain.checkpoint.CheckpointSave/Restore`) resume
    it exactly. With `config.prefetch` > 0 a background thread prepares batches ahead; call the
    iterator's `close()` when done with it."""
    shard = ProcessShard.resolve(process_index, process_count)
    ds = _dataset(config, tokenizer, corpus, batch_size=batch_size, seq_len=seq_len, seed=seed,
                  split="train", purpose="train", shard=shard)
    if config.prefetch:
        ds = grain.experimental.ThreadPrefetchIterDataset(ds, prefetch_buffer_size=config.prefetch)
    return iter(ds)


def eval_batches(config: DataConfig, tokenizer: Tokenizer, corpus: Corpus, *, batch_size: int,
                 seq_len: int, num_batches: int, seed: int = 0, split: str = "val",
                 process_index: int | None = None, process_count: int | None = None,
                 ) -> list[dict[str, np.ndarray]]:
    """`num_batches` batches of `split`, the same on every call: random windows drawn with a
    fixed seed (as nanoGPT's estimate_loss, but fixed), or the split's documents packed in order
    (cycling through them again if they fill fewer batches)."""
    if num_batches <= 0:
        raise ValueError(f"num_batches must be positive, got {num_batches}")
    shard = ProcessShard.resolve(process_index, process_count)
    iterator = iter(_dataset(config, tokenizer, corpus, batch_size=batch_size, seq_len=seq_len,
                             seed=seed, split=split, purpose="eval", shard=shard))
    return [next(iterator) for _ in range(num_batches)]
