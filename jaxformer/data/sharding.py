"""Which part of the data this process reads in a multi-process (multi-host) run."""

import dataclasses

from jaxformer.errors import UserError


@dataclasses.dataclass(frozen=True)
class ProcessShard:
    index: int = 0
    count: int = 1

    @classmethod
    def resolve(cls, process_index: int | None, process_count: int | None) -> "ProcessShard":
        """Explicit values, or JAX's own (`jax.process_index()`, `jax.process_count()`)."""
        if process_index is None or process_count is None:
            import jax  # only when asked: the data code itself needs no JAX

            process_index = jax.process_index() if process_index is None else process_index
            process_count = jax.process_count() if process_count is None else process_count
        if not 0 <= process_index < process_count:
            raise ValueError(f"process_index {process_index} is not in [0, {process_count})")
        return cls(process_index, process_count)

    def local_batch_size(self, batch_size: int) -> int:
        """Rows per process of a global batch of `batch_size` rows."""
        if batch_size <= 0 or batch_size % self.count:
            raise UserError(f"the batch size {batch_size} must be a positive multiple of the "
                            f"number of processes ({self.count}): change the batch size")
        return batch_size // self.count

    def rows(self, global_rows):
        """This process's contiguous block of a global batch's rows."""
        size = self.local_batch_size(len(global_rows))
        return global_rows[self.index * size:(self.index + 1) * size]
