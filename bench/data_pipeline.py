"""What does the data pipeline cost the host CPU per batch, for the Tiny Shakespeare presets'
random windows and for packed documents?

No row of its own: the pipeline is one part of the per-step host overhead that
`python -m bench.shakespeare --phases` measures whole, in docs/performance.md, "The Shakespeare
recipe".

    python -m bench.data_pipeline [--batches 2000]

Times the loading of the corpus, then batches of random windows at the CPU and GPU presets'
shapes and of packed documents (the corpus cut into speeches at blank lines), each after 10
untimed batches (the first ones build the packing buffers).
"""

import argparse
import time

from bench.common import machine_line, time_calls
from jaxformer.data import DataConfig, build_tokenizer, load_corpus, make_train_iterator
from jaxformer.data.corpus import Corpus
from jaxformer.data.splits import encode_corpus


def per_batch_ms(iterator, batches: int) -> float:
    def draw():
        for _ in range(batches):
            next(iterator)

    for _ in range(10):  # warm up (first batches build the packing buffers)
        next(iterator)
    return time_calls(draw).median / batches * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batches", type=int, default=2000)
    args = parser.parse_args()
    print(machine_line())

    start = time.perf_counter()
    shakespeare = load_corpus("tinyshakespeare")
    char = build_tokenizer(DataConfig(), shakespeare)
    encode_corpus(char, shakespeare)
    print(f"load + checksum + char vocabulary + encode Tiny Shakespeare: "
          f"{(time.perf_counter() - start) * 1e3:.0f} ms")

    speeches = Corpus("speeches", [d for d in shakespeare.text.split("\n\n") if d])
    speeches_config = DataConfig(corpus="speeches")
    speeches_char = build_tokenizer(speeches_config, speeches)
    packed = f"packed {len(speeches.documents)} speeches"
    cases = [
        ("windows, CPU preset 12 x 64", DataConfig(), char, shakespeare, 12, 64),
        ("windows, GPU preset 64 x 256", DataConfig(), char, shakespeare, 64, 256),
        (f"{packed}, 12 x 64", speeches_config, speeches_char, speeches, 12, 64),
        (f"{packed}, 64 x 256", speeches_config, speeches_char, speeches, 64, 256),
    ]
    for name, config, tokenizer, corpus, batch, seq_len in cases:
        iterator = make_train_iterator(config, tokenizer, corpus, batch_size=batch,
                                       seq_len=seq_len, process_index=0, process_count=1)
        n = args.batches if corpus.is_single_text else args.batches // 10  # packing is slower
        print(f"{name}: {per_batch_ms(iterator, n):.3f} ms per batch ({n} batches)")


if __name__ == "__main__":
    main()
