"""The notebooks' recipes fit Colab's one-chip TPU (v5e-1) as they are: their train steps
compiled for it, judged by the TPU compiler (which refuses a program that does not fit) and the
compiled memory against the chip's HBM."""

import pytest

from jaxformer.commands.compile import compile_report, load_run_config


@pytest.mark.parametrize("preset", ["shakespeare_char_cpu", "transformer_addition_cpu", "vit_digits_cpu",
                                    "clip_digits_cpu"])
def test_each_notebook_recipe_fits_colabs_tpu(preset):
    report = compile_report(load_run_config(preset, [], 1), "v5e-1")
    assert report["fits"] and report["chips"] == 1
    assert report["memory_bytes_per_chip"]["total"] < report["hbm_bytes_per_chip"]
    assert report["compiler_flops_per_chip"] > 0
