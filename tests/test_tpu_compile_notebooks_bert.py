"""The notebooks' recipes fit Colab's one-chip TPU (v5e-1) as they are: their train steps
compiled for it, judged by the TPU compiler (which refuses a program that does not fit) and the
compiled memory against the chip's HBM.

BERT's two recipes have a module of their own: the TPU compiler takes 1-2 minutes over each
(against seconds for the other recipes; the slow part is in the heads that pool the [CLS]
token, not yet pinned down), so they run beside the other compile tests."""

import pytest

from jaxformer.commands.compile import compile_report, load_run_config


@pytest.mark.parametrize("preset", ["bert_shakespeare_cpu", "bert_speakers_cpu"])
def test_each_notebook_recipe_fits_colabs_tpu(preset):
    report = compile_report(load_run_config(preset, [], 1), "v5e-1")
    assert report["fits"] and report["chips"] == 1
    assert report["memory_bytes_per_chip"]["total"] < report["hbm_bytes_per_chip"]
    assert report["compiler_flops_per_chip"] > 0
