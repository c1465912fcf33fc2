"""The benchmarks: scripts that print the measured figures of docs/performance.md (and of a few
other pages of docs/), each next to its reference, run on the same machine in the same run.

Run one from the repository root as a module, so that `bench` and `jaxformer` both import:

    python -m bench.train_throughput --help
    python -m bench.generate --no-hf

Every script prints the machine first (`bench.common.machine_line`) and times code one way
(`bench.common.time_calls`). Its docstring says the question it answers and the table of
docs/performance.md its figures go in; each row of that page names the command that prints it.

This file imports nothing: `python -m bench.torch_shakespeare`, the PyTorch side of a
whole-command comparison, runs it first and must not pay for anything the other side does not.
"""
