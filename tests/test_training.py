import json
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import write_pairs
from translandseg.adapter import AdapterInfo, read_adapter_info, save_adapter
from translandseg.data import LandslideDataset, Pair, find_all_pairs, find_pairs, split_pairs, stratified_folds
from translandseg.evaluation import evaluate
from translandseg.loading import load_model
from translandseg.modeling import DEFAULT_ATL_VARIANT
from translandseg.predict import REFERENCE_PRECISION, Predictor
from translandseg.training.losses import bce_iou_loss
from translandseg.training.trainer import TrainConfig, epoch_indices, train


def _step(model, images, masks, optimizer):
    loss = bce_iou_loss(model(images), masks)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    return loss.item()


def test_a_step_changes_atl_and_decoder_but_never_the_encoder(tiny_sam_checkpoint, tmp_path):
    model = load_model("tiny", tiny_sam_checkpoint, image_size=64).model
    before = {k: v.clone() for k, v in model.state_dict().items()}
    images, masks = next(iter(torch.utils.data.DataLoader(
        LandslideDataset(find_pairs(write_pairs(tmp_path / "d", 2)), 64), batch_size=2)))  # fmt: skip
    model.train()
    _step(model, images, masks, torch.optim.AdamW(model.trainable_parameters(), lr=1e-3))
    after = model.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert not any(k.startswith(("image_encoder.", "prompt_encoder.")) for k in changed)
    assert any(k.startswith("atl.") for k in changed) and any(k.startswith("mask_decoder.") for k in changed)


def test_loss_falls_on_a_fixed_batch(tiny_sam_checkpoint, tmp_path):
    torch.manual_seed(0)
    model = load_model("tiny", tiny_sam_checkpoint, image_size=64).model.train()
    dataset = LandslideDataset(find_pairs(write_pairs(tmp_path / "d", 4)), 64)
    images, masks = map(torch.stack, zip(*[dataset[i] for i in range(4)], strict=True))
    optimizer = torch.optim.AdamW(model.trainable_parameters(), lr=5e-3)
    losses = [_step(model, images, masks, optimizer) for _ in range(20)]
    assert losses[-1] < 0.8 * losses[0], losses


def test_split_is_seeded_70_30():
    pairs = list(range(20))
    train_a, val_a = split_pairs(pairs)
    assert (len(train_a), len(val_a)) == (14, 6)
    assert split_pairs(pairs) == (train_a, val_a)
    assert split_pairs(pairs, seed=1) != (train_a, val_a)


def test_stratified_folds_hold_each_pair_once_and_deal_each_set_evenly():
    pairs = [Pair(Path(f"{name}/image/{i}.png"), Path(f"{name}/label/{i}.png"))
             for name, count in (("a", 7), ("b", 4), ("c", 1)) for i in range(count)]  # fmt: skip
    folds = stratified_folds(pairs, 3)
    assert sorted(p.name for fold in folds for p in fold) == sorted(p.name for p in pairs)
    for name in "abc":
        counts = [sum(p.sample_set == name for p in fold) for fold in folds]
        assert max(counts) - min(counts) <= 1, (name, counts)
    assert [len(fold) for fold in folds] == [4, 4, 4]
    assert stratified_folds(pairs, 3) == folds
    assert stratified_folds(pairs, 3, seed=1) != folds
    with pytest.raises(ValueError, match="2 to 12 folds"):
        stratified_folds(pairs, 1)


def test_train_save_load_predict_evaluate_on_real_samples(samples, tiny_sam_checkpoint, tmp_path):
    pairs = find_all_pairs([samples / "bijie", samples / "landslide4sense"])
    train_pairs, val_pairs = split_pairs(pairs)
    loaded = load_model("tiny", tiny_sam_checkpoint, image_size=64)
    result = train(loaded, train_pairs, val_pairs, tmp_path / "run", TrainConfig(epochs=2, batch_size=4),
                   training_snapshot="samples-v1", progress=False)  # fmt: skip
    assert [r["epoch"] for r in result.history] == [1, 2]
    assert json.loads((tmp_path / "run" / "history.json").read_text()) == result.history

    info = read_adapter_info(result.adapter_path)
    assert (info.base_model, info.atl_variant, info.image_size, info.training_snapshot) == ("tiny", DEFAULT_ATL_VARIANT, 64, "samples-v1")
    assert info.base_sha256 == loaded.sam_sha256

    reloaded = load_model("tiny", tiny_sam_checkpoint, adapter=result.adapter_path)
    metrics = evaluate(Predictor(reloaded.model, precision=REFERENCE_PRECISION), val_pairs)  # as training measures
    assert metrics == pytest.approx(info.metrics)  # the file holds the model that scored these
    assert metrics == pytest.approx({k: result.best_metrics[k] for k in metrics})
    rgb_prob = Predictor(reloaded.model).predict_array(*_first_image(val_pairs))
    assert rgb_prob.shape == _first_image(val_pairs)[0].shape[:2]


def _first_image(pairs):
    from translandseg.data import load_pair

    rgb, valid, _ = load_pair(pairs[0])
    return rgb, valid


def test_resuming_continues_exactly_where_training_stopped(tiny_sam_checkpoint, tmp_path):
    pairs = find_pairs(write_pairs(tmp_path / "d", 6))
    train_pairs, val_pairs = split_pairs(pairs)

    class Interrupted(Exception):
        pass

    def interrupt_after_first_epoch(record):
        if record["epoch"] == 1:
            raise Interrupted

    def run(out, seed, on_epoch=None):
        torch.manual_seed(seed)
        loaded = load_model("tiny", tiny_sam_checkpoint, image_size=64)
        train(loaded, train_pairs, val_pairs, out, TrainConfig(epochs=3, patience=99), progress=False,
              on_epoch=on_epoch)  # fmt: skip
        return loaded.model.state_dict()

    straight = run(tmp_path / "straight", 123)
    with pytest.raises(Interrupted):
        run(tmp_path / "resumed", 123, interrupt_after_first_epoch)
    resumed = run(tmp_path / "resumed", 999)  # another fresh ATL: the checkpoint must overwrite it
    for key in straight:
        torch.testing.assert_close(resumed[key], straight[key], rtol=0, atol=0)
    history = json.loads((tmp_path / "resumed" / "history.json").read_text())
    assert [r["epoch"] for r in history] == [1, 2, 3]


def test_a_run_with_other_settings_is_refused_not_resumed(tiny_sam_checkpoint, tmp_path):
    pairs = find_pairs(write_pairs(tmp_path / "d", 4))
    train_pairs, val_pairs = split_pairs(pairs)
    loaded = load_model("tiny", tiny_sam_checkpoint, image_size=64)
    out = tmp_path / "run"
    train(loaded, train_pairs, val_pairs, out, TrainConfig(epochs=1, patience=99), progress=False)
    written = {p.name: p.read_bytes() for p in out.iterdir()}
    with pytest.raises(ValueError, match=r"other settings: epochs 1 \(now 2\)"):
        train(loaded, train_pairs, val_pairs, out, TrainConfig(epochs=2, patience=99), progress=False)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == written  # the finished run is left as it was
    again = train(loaded, train_pairs, val_pairs, out, TrainConfig(epochs=1, patience=5, max_seconds=60),
                  progress=False)  # fmt: skip
    assert [r["epoch"] for r in again.history] == [1]  # when to stop may change: the finished run is reused
    checkpoint = torch.load(out / "checkpoint.pt", weights_only=True)
    del checkpoint["schedule"]["zoom"]  # a run written before the setting existed trained at its default
    torch.save(checkpoint, out / "checkpoint.pt")
    assert [r["epoch"] for r in train(loaded, train_pairs, val_pairs, out, TrainConfig(epochs=1, patience=99),
                                      progress=False).history] == [1]  # fmt: skip
    with pytest.raises(ValueError, match=r"other settings: zoom 1.0 \(now 1.5\)"):
        train(loaded, train_pairs, val_pairs, out, TrainConfig(epochs=1, patience=99, zoom=1.5), progress=False)


def test_too_few_labels_is_a_clear_error(tiny_sam_checkpoint, tmp_path):
    pairs = find_pairs(write_pairs(tmp_path / "d", 1))
    loaded = load_model("tiny", tiny_sam_checkpoint, image_size=64)
    with pytest.raises(ValueError, match="label at least 2 images"):
        train(loaded, *split_pairs(pairs), tmp_path / "out", progress=False)


def test_geotiff_chips_are_a_dataset_too(tmp_path):
    from conftest import write_geotiff

    (tmp_path / "image").mkdir()
    (tmp_path / "label").mkdir()
    rng = np.random.default_rng(0)
    write_geotiff(tmp_path / "image" / "c1.tif", rng.integers(0, 3000, (13, 40, 40), dtype=np.uint16))
    write_geotiff(tmp_path / "label" / "c1.tif", (rng.random((1, 40, 40)) > 0.7).astype(np.uint8))
    dataset = LandslideDataset(find_pairs(tmp_path), 64, augment=True, seed=0)
    image, mask = dataset[0]
    assert image.shape == (3, 64, 64) and mask.shape == (1, 64, 64)
    assert 0 <= image.min() and image.max() <= 255 and set(mask.unique().tolist()) <= {0.0, 1.0}


def test_zoomed_in_crops_show_landslides_larger_and_keep_image_and_mask_aligned(tmp_path):
    """Flips and quarter turns keep a sample's landslide share; zoomed-in crops change it, and the
    bright landslide pixels of the image stay under the mask."""
    pairs = find_pairs(write_pairs(tmp_path / "d", 1, size=96))

    def draws(**kw):
        dataset = LandslideDataset(pairs, 64, augment=True, seed=0, **kw)
        return [dataset[0] for _ in range(12)]

    whole = {round(float(mask.mean()), 4) for _, mask in draws()}
    zoomed = draws(zoom=2.0)
    assert len(whole) == 1 and len({round(float(mask.mean()), 4) for _, mask in zoomed}) > 3
    for image, mask in zoomed:
        bright = image.mean(0) > 130  # landslides are drawn 170-230, the ground 40-90
        assert (bright == (mask[0] > 0)).float().mean() > 0.9
    with pytest.raises(ValueError, match="zoom must be at least 1"):
        LandslideDataset(pairs, 64, zoom=0.5)
    with pytest.raises(ValueError, match="zoom must be at least 1"):
        TrainConfig(zoom=0.9)


def test_the_loss_setting_changes_what_training_optimises(tiny_sam_checkpoint, tmp_path):
    pairs = find_pairs(write_pairs(tmp_path / "d", 4))
    train_pairs, val_pairs = split_pairs(pairs)
    trained = {}
    for loss in ("bce+dice", "bce+iou"):
        torch.manual_seed(5)
        loaded = load_model("tiny", tiny_sam_checkpoint, image_size=64)
        result = train(loaded, train_pairs, val_pairs, tmp_path / loss, TrainConfig(epochs=1, loss=loss),
                       progress=False)  # fmt: skip
        trained[loss] = (loaded.model.state_dict(), result.history[0]["loss"])
    (dice_state, dice_loss), (iou_state, iou_loss) = trained["bce+dice"], trained["bce+iou"]
    assert dice_loss < iou_loss  # half BCE + half Dice is smaller than BCE + IoU from the same start
    assert not torch.equal(dice_state["mask_decoder.mask_tokens.weight"], iou_state["mask_decoder.mask_tokens.weight"])


def test_balanced_epochs_visit_each_sample_set_about_as_often_as_the_largest(tmp_path):
    pairs = find_pairs(write_pairs(tmp_path / "big", 6)) + find_pairs(write_pairs(tmp_path / "small", 2, seed=1))
    assert epoch_indices(pairs, False) == list(range(8))
    visits = [pairs[i].sample_set for i in epoch_indices(pairs, True)]
    assert visits.count("big") == 6 and visits.count("small") == 6
    assert sorted(set(epoch_indices(pairs, True))) == list(range(8))  # every pair, none left out


def test_balanced_training_runs_the_longer_epochs_to_the_end_of_its_schedule(tiny_sam_checkpoint, tmp_path):
    pairs = find_pairs(write_pairs(tmp_path / "big", 4)) + find_pairs(write_pairs(tmp_path / "small", 1, seed=1))
    torch.manual_seed(0)
    loaded = load_model("tiny", tiny_sam_checkpoint, image_size=64)
    config = TrainConfig(epochs=2, batch_size=1, balance_sets=True)
    checkpoint, learning_rates = tmp_path / "out" / "checkpoint.pt", []

    def note_learning_rate(record):
        learning_rates.append(torch.load(checkpoint, weights_only=False)["optimizer"]["param_groups"][0]["lr"])

    train(loaded, pairs, pairs[:1], tmp_path / "out", config, progress=False, on_epoch=note_learning_rate)
    assert torch.load(checkpoint, weights_only=False)["scheduler"]["last_epoch"] == 16  # 8 steps an epoch, not 5
    halfway = (config.lr + config.min_lr) / 2
    assert learning_rates[0] == pytest.approx(halfway, rel=1e-3) and learning_rates[1] == pytest.approx(config.min_lr)


def test_keep_last_epoch_trains_without_validation_images_and_keeps_the_last_epoch(tiny_sam_checkpoint, tmp_path):
    pairs = find_pairs(write_pairs(tmp_path / "d", 3))
    torch.manual_seed(0)
    loaded = load_model("tiny", tiny_sam_checkpoint, image_size=64)
    with pytest.raises(ValueError, match="validation image"):
        train(loaded, pairs, [], tmp_path / "refused", TrainConfig(epochs=1), progress=False)
    result = train(loaded, pairs, [], tmp_path / "out", TrainConfig(epochs=3, keep_last_epoch=True), progress=False)
    assert result.best_epoch == 3 and [r["epoch"] for r in result.history] == [1, 2, 3]
    kept = load_model("tiny", tiny_sam_checkpoint, adapter=result.adapter_path).model.state_dict()
    for name, weight in loaded.model.state_dict().items():
        assert torch.equal(kept[name], weight), name


def test_validating_the_last_epoch_only_measures_the_epoch_kept_once(tiny_sam_checkpoint, tmp_path):
    train_pairs, val_pairs = (find_pairs(write_pairs(tmp_path / name, 3, seed=seed)) for name, seed in (("t", 0), ("v", 1)))
    loaded = load_model("tiny", tiny_sam_checkpoint, image_size=64)
    config = TrainConfig(epochs=3, keep_last_epoch=True, validate_last_only=True)
    result = train(loaded, train_pairs, val_pairs, tmp_path / "out", config, progress=False)
    assert ["miou" in r for r in result.history] == [False, False, True] and result.best_epoch == 3
    assert result.best_metrics == evaluate(Predictor(loaded.model, precision=REFERENCE_PRECISION), val_pairs) | {
        k: result.best_metrics[k] for k in ("epoch", "loss", "seconds")}  # fmt: skip


def test_retraining_an_adapter_keeps_its_tuned_point_decoder(tiny_sam_checkpoint, tmp_path):
    pairs = find_pairs(write_pairs(tmp_path / "d", 4))
    torch.manual_seed(6)
    first = load_model("tiny", tiny_sam_checkpoint, image_size=64)
    with torch.no_grad():  # a point decoder tuned apart from the automatic one
        for weight in first.prompt_decoder.output_hypernetworks_mlps.parameters():
            weight.add_(0.25)
    info = AdapterInfo("tiny", first.sam_sha256, first.model.atl.variant.name, 64, "", {})
    start = save_adapter(first.model, tmp_path / "start.safetensors", info, first.prompt_decoder)
    loaded = load_model("tiny", tiny_sam_checkpoint, adapter=start)
    result = train(loaded, *split_pairs(pairs), tmp_path / "run", TrainConfig(epochs=1), progress=False)
    retrained = load_model("tiny", tiny_sam_checkpoint, adapter=result.adapter_path)
    assert retrained.prompt_decoder_tuned
    for key, value in first.prompt_decoder.state_dict().items():
        torch.testing.assert_close(retrained.prompt_decoder.state_dict()[key], value, rtol=0, atol=0)
    automatic = retrained.model.mask_decoder.state_dict()
    assert any(not torch.equal(automatic[k], v) for k, v in first.model.mask_decoder.state_dict().items())
