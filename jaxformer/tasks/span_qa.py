"""`span_qa`: extractive question answering (SQuAD-style) with an encoder's start/end logits.

Input: `[CLS] question [SEP] context [SEP]`, the context cut to fit `train.seq_len`; an example
whose answer no longer fits is dropped (SQuAD v1 practice: every kept question has its answer).
Target: the first and last context piece of the answer. Loss: the mean of the start and end
cross-entropies (as HF's BertForQuestionAnswering). Metrics: exact_match (both ends right) and
start_accuracy.
"""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from jaxformer.tasks.labelled import LabelledConfig, LabelledTask
from jaxformer.tasks.losses import token_cross_entropy
from jaxformer.tasks.registry import register_task


@dataclasses.dataclass
class SpanQAConfig(LabelledConfig):
    dataset: str = "tinyshakespeare-who-said"


@register_task
class SpanQA(LabelledTask):
    name = "span_qa"
    kind = "span_qa"
    config_class = SpanQAConfig
    default_dataset = "tinyshakespeare-who-said"

    def featurize(self, example: dict) -> dict | None:
        question = self.tokenizer.encode(example["question"])
        context, offsets = self.tokenizer.encode_with_offsets(example["context"])
        start_char = example["answer_start"]
        end_char = start_char + len(example["answer"])
        inside = [i for i, (s, e) in enumerate(offsets) if s < end_char and e > start_char]
        if not inside:
            return None
        # The question keeps at most half the room; the context is cut at the end.
        room = self.config.train.seq_len - 3
        question = question[:room // 2]
        context = context[:room - len(question)]
        first, last = inside[0], inside[-1]
        if last >= len(context):
            return None
        row = self.pair_row(question, context)
        offset = len(question) + 2  # [CLS] question [SEP]
        return row | {"start_positions": np.int32(first + offset),
                      "end_positions": np.int32(last + offset)}

    def target_spec(self, batch_size: int) -> dict:
        return {name: jax.ShapeDtypeStruct((batch_size,), np.int32)
                for name in ("start_positions", "end_positions")}

    def loss(self, output, batch):
        weights = batch["weight"].astype(jnp.float32)
        start, end = batch["start_positions"], batch["end_positions"]
        losses = (token_cross_entropy(output.start_logits, start)
                  + token_cross_entropy(output.end_logits, end)) / 2
        start_ok = jnp.argmax(output.start_logits, -1) == start
        both_ok = start_ok & (jnp.argmax(output.end_logits, -1) == end)
        count = jnp.sum(weights)
        return (jnp.sum(losses * weights), count,
                {"exact_match": (jnp.sum(both_ok * weights), count),
                 "start_accuracy": (jnp.sum(start_ok * weights), count)})

    def report(self, model, say) -> dict:
        exact = total = 0.0
        for batch, output in self.predictions(model):
            keep = batch["weight"] > 0
            hit = ((np.argmax(output.start_logits, -1) == batch["start_positions"])
                   & (np.argmax(output.end_logits, -1) == batch["end_positions"]))
            exact += float(hit[keep].sum())
            total += float(keep.sum())
        say(f"validation exact match {exact / max(total, 1):.4f} over {int(total)} questions")
        return {"exact_match": exact / max(total, 1.0)}
