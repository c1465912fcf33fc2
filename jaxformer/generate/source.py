"""Deprecated: `jaxformer.sources`. Loading a model from a run directory reads the training
package's run directories, which sit above generation; this path stays for one release."""

import warnings

from jaxformer.sources import (HFTokenizer, Source, is_hf_dir, is_run_dir,  # noqa: F401
                               load_source, with_attention_impl)

warnings.warn("jaxformer.generate.source is deprecated: import from jaxformer.sources",
              DeprecationWarning, stacklevel=2)
