"""Every family's programs compile for TPU slices of three generations and for two slices over
DCN (the notebooks' recipes, one per family, in test_tpu_compile_notebooks*.py).

The reference is the TPU compiler itself: it refuses a program that does not fit a chip, cannot
lower what a TPU cannot run, and reports the slice's chips; the loops and kernels are read from
the compiled HLO text with plain regular expressions.
"""



from jaxformer.commands.compile import compile_report, load_run_config

def test_image_to_text_trains_and_decodes_on_four_chips():
    config = load_run_config("image_to_text_digits_cpu", ["mesh.data=4", "train.batch_size=8"], 1)
    train = compile_report(config, "v5e-4")
    assert train["fits"] and train["mesh"]["data"] == 4
    decode = compile_report(config, "v5e-4", program="generate")
    assert decode["loops"], "the decoding scan is a loop of the compiled program"


def test_whisper_trains_and_decodes_from_log_mel_features():
    config = load_run_config("whisper_tones_cpu", ["train.batch_size=8"], 1)
    assert compile_report(config, "v5e-1")["fits"]
    decode = compile_report(config, "v5e-1", program="generate")
    assert decode["fits"] and decode["loops"]


def test_the_encoder_decoder_decode_loop_compiles():
    report = compile_report(load_run_config("transformer_addition_cpu", [], 1), "v5e-1",
                            program="generate")
    assert report["fits"] and report["loops"]


def test_a_scanned_llama_trains_and_decodes_on_v5p():
    overrides = ["model.scan_layers=true", "mesh.data=1", "mesh.fsdp=4", "train.batch_size=8",
                 "train.seq_len=128", "model.attention_impl=auto"]
    config = load_run_config("tiny-llama", overrides, 1)
    train = compile_report(config, "v5p-8")
    assert train["chip"] == "v5p" and train["chips"] == 4 and train["fits"]
    assert 2 in train["loops"]  # the two layers, scanned
    assert train["attention_impl"] == "splash" and train["mosaic_kernels"] > 0
    decode = compile_report(config, "v5p-8", program="generate")
    assert decode["fits"] and decode["loops"]


def test_v6e_compiles_the_train_step():
    config = load_run_config("tiny-gpt2", ["mesh.fsdp=4", "mesh.data=1", "train.batch_size=8",
                                           "train.seq_len=128"], 1)
    report = compile_report(config, "v6e-4")
    assert report["chip"] == "v6e" and report["fits"]


def test_two_slices_over_dcn_split_the_data_axis():
    config = load_run_config("tiny-gpt2", ["mesh.fsdp=4", "train.batch_size=8",
                                           "train.seq_len=128"], slices=2)
    report = compile_report(config, "v5e-4", slices=2)
    assert report["chips"] == 8 and report["slices"] == 2
    assert report["mesh"] == {"data": 2, "fsdp": 4, "tensor": 1}
    assert report["collectives"]["all-reduce"]["count"] > 0  # gradients summed across slices
