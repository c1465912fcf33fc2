"""The BERT classification notebook's recipe (`bert_speakers_cpu`) fits Colab's one-chip TPU
(v5e-1) as it is: its train step compiled for it, judged by the TPU compiler (which refuses a
program that does not fit) and the compiled memory against the chip's HBM.

A module of its own, as is the pretraining recipe's: the TPU compiler takes about two minutes
over each BERT recipe (see docs/tests.md), so the two run on different workers."""

from jaxformer.commands.compile import compile_report, load_run_config


def test_the_recipe_fits_colabs_tpu():
    report = compile_report(load_run_config("bert_speakers_cpu", [], 1), "v5e-1")
    assert report["fits"] and report["chips"] == 1
    assert report["memory_bytes_per_chip"]["total"] < report["hbm_bytes_per_chip"]
    assert report["compiler_flops_per_chip"] > 0
