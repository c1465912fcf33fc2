"""Compiling the library's programs for TPU slices without a TPU: the train step, the eval step
and the decode loop lowered for libtpu's compile-only devices (`topology`, `programs`), the
compiled program read back (`hlo`, `analysis`) into a per-chip report (`report`), and the search
over meshes, remat policies and micro-batches (`plan`). `jaxformer compile` and `jaxformer plan`
are the commands; docs/tpu.md is the guide."""
