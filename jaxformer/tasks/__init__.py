"""Tasks: what a run trains a model to do (its data, loss, evaluation and end-of-run report).

    from jaxformer.tasks import Task, TaskConfig, register_task, get_task
"""

# The built-in tasks register themselves on import.
from jaxformer.tasks import (causal_lm, classification, contrastive, dpo,  # noqa: F401
                             image_captioning, image_classification, masked_lm, reward, seq2seq,
                             span_qa)
from jaxformer.tasks import speech_recognition  # noqa: F401
from jaxformer.tasks.base import Metric, Task, TaskConfig, mean, perplexity
from jaxformer.tasks.registry import get_task, make_task, register_task, task_names

__all__ = ["Metric", "Task", "TaskConfig", "get_task", "make_task", "mean", "perplexity",
           "register_task", "task_names"]
