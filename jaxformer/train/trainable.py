"""Deprecated: `jaxformer.finetune.trainable`. What trains is decided with the fine-tuning modes,
which the training package builds on; this path stays for one release."""

import warnings

from jaxformer.finetune.trainable import (VARIABLE_TYPES, register_variable_type,  # noqa: F401
                                          trainable_filter)

warnings.warn("jaxformer.train.trainable is deprecated: import from jaxformer.finetune.trainable",
              DeprecationWarning, stacklevel=2)
