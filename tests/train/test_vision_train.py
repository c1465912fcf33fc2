"""Short runs of the vision recipes learn: a tiny ViT classifies held-out digits and a tiny CLIP
classifies them zero-shot (from prompts alone) far above chance (10%). The full recipes
(configs/vit_digits_cpu.yaml, configs/clip_digits_cpu.yaml) are measured in the README."""

import json

from jaxformer.config import load_config
from jaxformer.train import train
from support.devices import ONE_DEVICE



def short(steps: int) -> list[str]:
    return ["train.progress=false", f"train.steps={steps}", "train.steps_per_call=25",
            "train.log_every=25", f"train.eval_every={steps}", f"train.checkpoint_every={steps}",
            "optimizer.lr=3e-3", "optimizer.warmup_steps=10", f"optimizer.decay_steps={steps}"]


def test_short_vit_run_beats_chance_by_far(tmp_path, capsys):
    config = load_config("vit_digits_cpu", [ONE_DEVICE,
        f"train.run_dir={tmp_path}", "model.image_size=8", "model.patch_size=2", "model.d_model=32",
        "model.num_layers=2", "model.num_heads=2", "model.mlp_dim=64", "model.dropout=0.0",
        "task.crop_padding=0", *short(200)])
    result = train(config)
    accuracy = result.report["val_accuracy"]
    print(f"held-out accuracy after 200 steps: {accuracy:.3f}")
    assert accuracy > 0.6, accuracy  # measured 0.756 (2-core AMD EPYC); chance is 0.1
    evals = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()
             if json.loads(line)["kind"] == "eval"]
    # The loop's evaluation (whole held-out split, weighted) agrees with the report's own count.
    assert abs(evals[-1]["val_accuracy"] - accuracy) < 1e-6
    assert len(result.report["confusion_matrix"]) == 10
    assert sum(map(sum, result.report["confusion_matrix"])) == 360
    assert "held-out accuracy" in capsys.readouterr().out


def test_short_clip_run_classifies_zero_shot_far_above_chance(tmp_path):
    config = load_config("clip_digits_cpu", [ONE_DEVICE,
        f"train.run_dir={tmp_path}", "model.vision.image_size=8", "model.vision.patch_size=2",
        "model.vision.d_model=32", "model.vision.num_layers=2", "model.vision.num_heads=2",
        "model.vision.mlp_dim=64", "model.text.d_model=32", "model.text.num_layers=1",
        "model.text.num_heads=2", "model.text.mlp_dim=64", "task.crop_padding=0",
        *short(400)])
    result = train(config)
    accuracy = result.report["zero_shot_accuracy"]
    print(f"zero-shot accuracy after 400 steps: {accuracy:.3f}")
    assert accuracy > 0.35, accuracy  # measured 0.497 (2-core AMD EPYC); chance is 0.1
