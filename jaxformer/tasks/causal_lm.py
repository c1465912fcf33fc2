"""`causal_lm`: next-token prediction on a text corpus (GPT-2, Llama, nanoGPT's Shakespeare).

Data: the corpus through the tokenizer into random windows of one long text, or documents packed
into rows with segment ids and per-document positions (`jaxformer.data`). Loss: cross-entropy of
each real next token. Evaluation: mean loss and perplexity. At the end: a sample of text.
"""

import dataclasses

import jax
import numpy as np

from jaxformer.data import (build_tokenizer, eval_batches, load_corpus, load_tokenizer,
                            make_train_iterator)
from jaxformer.errors import ConfigError
from jaxformer.generate import generate_past_context
from jaxformer.tasks.base import Task, perplexity
from jaxformer.tasks.losses import masked_loss_sum
from jaxformer.tasks.registry import register_task


@register_task
class CausalLM(Task):
    name = "causal_lm"

    def validate(self) -> None:
        t, m = self.config.train, self.config.model
        max_len = getattr(m, "max_seq_len", None)
        if max_len is not None and t.seq_len > max_len:
            raise ConfigError(f"train.seq_len={t.seq_len} exceeds model.max_seq_len={max_len}: "
                              f"lower one or raise the other")

    def prepare(self, run, say):
        """Corpus, tokenizer and the resolved config, all checked before any compute. The
        tokenizer saved in the run directory wins (a resumed run must encode as before);
        otherwise it is built from the corpus. `model.vocab_size` is set from it, and
        `data.packing=null` is resolved from the corpus."""
        config = self.config
        self.corpus = load_corpus(config.data.corpus)
        self.tokenizer = (load_tokenizer(run.tokenizer) if run.tokenizer.exists()
                          else build_tokenizer(config.data, self.corpus))
        vocab_size = self.tokenizer.vocab_size
        if config.model.vocab_size != vocab_size:
            say(f"model.vocab_size set to {vocab_size}, the tokenizer's vocabulary size")
            config = dataclasses.replace(config, model=config.model.replace(vocab_size=vocab_size))
        if config.data.packing is None:
            data = dataclasses.replace(config.data, packing=not self.corpus.is_single_text)
            config = dataclasses.replace(config, data=data)
        t = config.train
        self.prompt = self.tokenizer.encode(t.sample_prompt) if t.sample_tokens else []  # fails now
        self.config = config
        return config

    def save_artifacts(self, run) -> None:
        if not run.tokenizer.exists():
            self.tokenizer.save(run.tokenizer)

    def batch_spec(self, batch_size: int) -> dict[str, jax.ShapeDtypeStruct]:
        shape = (batch_size, self.config.train.seq_len)
        spec = {name: jax.ShapeDtypeStruct(shape, np.int32)
                for name in ("tokens", "targets", "positions", "segment_ids")}
        spec["loss_mask"] = jax.ShapeDtypeStruct(shape, np.float32)
        return spec

    def train_iterator(self, *, process_index: int, process_count: int):
        t = self.config.train
        return make_train_iterator(self.config.data, self.tokenizer, self.corpus,
                                   batch_size=t.batch_size, seq_len=t.seq_len, seed=t.seed,
                                   process_index=process_index, process_count=process_count)

    def eval_batches(self, *, process_index: int, process_count: int) -> list[dict]:
        t = self.config.train
        if not t.eval_batches:
            return []
        return eval_batches(self.config.data, self.tokenizer, self.corpus, batch_size=t.batch_size,
                            seq_len=t.seq_len, num_batches=t.eval_batches, seed=0,
                            process_index=process_index, process_count=process_count)

    def model_inputs(self, batch: dict) -> dict:
        """Unpacked rows are one document each, so segment ids are left out: the attention then
        uses its built-in causal mask (faster, flash on GPUs)."""
        inputs = {"tokens": batch["tokens"], "positions": batch["positions"]}
        if self.config.data.packing:
            inputs["segment_ids"] = batch["segment_ids"]
        return inputs

    def loss(self, output, batch):
        total, count = masked_loss_sum(output.logits, batch["targets"], batch["loss_mask"])
        return total, count, {}

    def eval_summary(self, means: dict[str, float]) -> dict[str, float]:
        return {**super().eval_summary(means), "val_ppl": perplexity(means["loss"])}

    def report(self, model, say) -> dict:
        """A sample from the trained model, continuing `train.sample_prompt`."""
        t = self.config.train
        if not t.sample_tokens:
            return {}
        # nanoGPT's CPU preset samples more characters than its 64-token context holds.
        new = generate_past_context(model, self.prompt, t.sample_tokens,
                                    temperature=t.sample_temperature, top_k=t.sample_top_k,
                                    seed=t.seed)
        text = self.tokenizer.decode(self.prompt + new)
        say(f"--- sample ({t.sample_tokens} tokens, temperature {t.sample_temperature}) ---\n"
            f"{text}\n---")
        return {"sample": text}

