"""Learning from the full data (issue 30): the fixed split, copies, set mixtures and resuming
within an epoch."""

import csv
import shutil
from collections import Counter
from pathlib import Path

import pytest
import torch

from conftest import write_pairs
from translandseg.data import SPLIT_FILE, distinct, find_pairs, read_split
from translandseg.loading import load_model
from translandseg.training import trainer
from translandseg.training.recipe import FULL_DATA_SETS, square_root_weights
from translandseg.training.trainer import TrainConfig, epoch_plan, train


def write_split(root: Path, rows) -> None:
    with open(root / SPLIT_FILE, "w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(["set", "name", "original", "split"])
        writer.writerows(rows)


def two_sets(root: Path) -> Path:
    """``a`` with 4 pairs and ``b`` with 2, split by originals: a/s0 and b/s0 are one original."""
    write_pairs(root / "a", 4)
    write_pairs(root / "b", 2, seed=1)
    write_split(root, [("a", "s0", "o0", "test"), ("a", "s1", "o1", "train"), ("a", "s2", "o2", "train"),
                       ("a", "s3", "o3", "train"), ("b", "s0", "o0", "test"), ("b", "s1", "o4", "train")])  # fmt: skip
    return root


def test_the_split_file_decides_each_pair_s_side(tmp_path):
    train, test = read_split(two_sets(tmp_path), ["a", "b", "absent"])
    assert [p.name for p in train] == ["a/s1", "a/s2", "a/s3", "b/s1"]
    assert [p.name for p in test] == ["a/s0", "b/s0"]
    assert read_split(tmp_path, ["b"]) == ([p for p in train if p.sample_set == "b"], [test[1]])


def test_an_original_on_both_sides_is_refused_by_name(tmp_path):
    root = two_sets(tmp_path)
    rows = list(csv.reader(open(root / SPLIT_FILE)))[1:]
    rows[4][3] = "train"  # b/s0, a copy of a/s0's original, moves to the other side
    write_split(root, rows)
    with pytest.raises(ValueError, match=r"copies of 1 original image\(s\) on both the train and the test side \(o0\)"):
        read_split(root, ["a", "b"])


def test_a_split_file_that_disagrees_with_the_folders_is_refused(tmp_path):
    root = two_sets(tmp_path)
    (root / "a" / "image" / "s3.png").unlink()
    with pytest.raises(ValueError, match=r"1 listed pair\(s\) missing \(s3\), 0 pair\(s\) not listed"):
        read_split(root, ["a"])
    write_pairs(root / "c", 1)
    with pytest.raises(ValueError, match=r"0 listed pair\(s\) missing \(\), 1 pair\(s\) not listed \(s0\)"):
        read_split(root, ["c"])


def test_copies_are_dropped_whatever_their_encoding(tmp_path):
    from PIL import Image

    pairs = find_pairs(write_pairs(tmp_path / "a", 3))
    copy = tmp_path / "b"
    shutil.copytree(tmp_path / "a", copy)
    Image.open(pairs[1].image).save(copy / "image" / "s1.png", compress_level=0)  # other bytes, same pixels
    copies = find_pairs(copy)
    assert (copy / "image" / "s1.png").read_bytes() != pairs[1].image.read_bytes()
    assert distinct(pairs + copies) == pairs
    assert distinct(copies[:1] + pairs) == copies[:1] + pairs[1:]


def test_a_mixture_draws_each_set_in_proportion(tmp_path):
    pairs = find_pairs(write_pairs(tmp_path / "big", 9)) + find_pairs(write_pairs(tmp_path / "small", 1, seed=1))
    weights = square_root_weights(pairs)
    assert weights == {"big": 0.75, "small": 0.25}
    config = TrainConfig(batch_size=2, set_weights=weights, epoch_steps=2000)
    plan = epoch_plan(pairs, config, epoch=1)
    drawn = Counter(pairs[i].sample_set for i in plan)
    assert len(plan) == 4000 and drawn["small"] == pytest.approx(1000, abs=100)
    assert epoch_plan(pairs, config, 1) == plan and epoch_plan(pairs, config, 2) != plan  # seeded per epoch
    with pytest.raises(ValueError, match="no weight to the sample set"):
        epoch_plan(pairs, TrainConfig(set_weights={"big": 1.0}, epoch_steps=5), 1)
    with pytest.raises(ValueError, match="go together"):
        TrainConfig(set_weights=weights)


def test_a_run_stopped_within_an_epoch_resumes_to_the_same_weights(tiny_sam_checkpoint, tmp_path, monkeypatch):
    pairs = find_pairs(write_pairs(tmp_path / "big", 5)) + find_pairs(write_pairs(tmp_path / "small", 2, seed=1))
    config = TrainConfig(epochs=2, batch_size=2, keep_last_epoch=True, set_weights=square_root_weights(pairs),
                         epoch_steps=5, checkpoint_every=2, zoom=1.5)  # fmt: skip

    def run(out: Path, seed: int) -> dict:
        torch.manual_seed(seed)
        loaded = load_model("tiny", tiny_sam_checkpoint, image_size=64)
        train(loaded, pairs, [], out, config, progress=False)
        return loaded.model.state_dict()

    straight = run(tmp_path / "straight", 123)

    class Stopped(Exception):
        pass

    loss, steps = trainer.LOSSES[config.loss], []

    def stopping_loss(*args):
        steps.append(1)
        if len(steps) == 8:  # the third step of the second epoch: its second step was checkpointed
            raise Stopped
        return loss(*args)

    monkeypatch.setitem(trainer.LOSSES, config.loss, stopping_loss)
    with pytest.raises(Stopped):
        run(tmp_path / "resumed", 123)
    monkeypatch.setitem(trainer.LOSSES, config.loss, loss)
    stored = torch.load(tmp_path / "resumed" / "checkpoint.pt", weights_only=False)["state"]
    assert (stored["epoch"], stored["step"], len(stored["losses"])) == (1, 2, 2)
    resumed = run(tmp_path / "resumed", 999)  # another fresh ATL: the checkpoint must overwrite it
    for key in straight:
        torch.testing.assert_close(resumed[key], straight[key], rtol=0, atol=0)


def test_the_real_split_keeps_copies_on_one_side_and_drops_them_from_training(samples):
    if not (samples / SPLIT_FILE).is_file():
        pytest.skip(f"{samples / SPLIT_FILE} is not there")
    training, test = read_split(samples, FULL_DATA_SETS)
    assert {p.sample_set for p in training} | {p.sample_set for p in test} <= set(FULL_DATA_SETS)
    assert not {p.name for p in training} & {p.name for p in test}
    by_name = {p.name: p for p in training}
    copies = [by_name[f"bijie/df{n:03d}"] for n in (3, 4, 5)]  # bijie/dfNNN is bijie-full/ls_(NNN-2)
    originals = [by_name[f"bijie-full/ls_{n - 2:04d}"] for n in (3, 4, 5)]
    assert distinct(originals + copies) == originals
