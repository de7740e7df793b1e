import numpy as np
import pytest
import torch

from translandseg.metrics import ConfusionMatrix, boundary_f_score
from translandseg.training.losses import LOSSES, bce_dice_loss, bce_iou_loss, dice_loss, iou_loss


def test_metrics_from_an_accumulated_confusion_matrix():
    matrix = ConfusionMatrix()
    truth = np.array([1, 1, 1, 0, 0, 0, 0, 0], bool)
    pred = np.array([1, 1, 0, 1, 0, 0, 0, 0], bool)
    matrix.update(pred[:4], truth[:4])
    matrix.update(pred[4:], truth[4:])  # accumulated over images, not averaged
    m = matrix.summary()
    assert matrix.counts.tolist() == [[4, 1], [1, 2]]
    assert m["overall_accuracy"] == pytest.approx(6 / 8)
    assert m["precision"] == pytest.approx(2 / 3) and m["recall"] == pytest.approx(2 / 3)
    assert m["f1"] == pytest.approx(2 / 3)
    assert m["iou"] == pytest.approx(2 / 4)
    assert m["miou"] == pytest.approx((2 / 4 + 4 / 6) / 2)


def test_no_landslide_anywhere_gives_defined_metrics():
    matrix = ConfusionMatrix()
    matrix.update(np.zeros((4, 4), bool), np.zeros((4, 4), bool))
    m = matrix.summary()
    assert m["overall_accuracy"] == 1.0 and m["iou"] == 0.0 and m["f1"] == 0.0 and m["miou"] == 0.5
    with pytest.raises(ValueError, match="differ in shape"):
        matrix.update(np.zeros(3, bool), np.zeros(4, bool))


def test_boundary_f_score_counts_edges_within_the_tolerance():
    truth = np.zeros((64, 64), bool)
    truth[16:48, 16:48] = True
    assert boundary_f_score(truth, truth) == 1.0
    shifted = np.roll(truth, 2, axis=1)  # every edge within 2 px but the two 32-px sides moved by 2
    assert boundary_f_score(shifted, truth) == 1.0
    assert boundary_f_score(np.roll(truth, 3, axis=1), truth) < 0.75  # left and right edges 3 px off
    # A blob of nearly the same area with the wrong outline: high IoU, low boundary score.
    ragged = truth.copy()
    ragged[16:48:2, 12:16] = True
    ragged[16:48:2, 48:52] = True
    assert boundary_f_score(ragged, truth) < 0.9


def test_boundary_f_score_ignores_the_image_edge_and_empty_masks_agree():
    full = np.ones((32, 32), bool)
    assert boundary_f_score(full, full) == 1.0  # a landslide throughout has no boundary in the image
    empty = np.zeros((32, 32), bool)
    assert boundary_f_score(empty, empty) == 1.0
    blob = empty.copy()
    blob[8:16, 8:16] = True
    assert boundary_f_score(blob, empty) == 0.0
    assert boundary_f_score(empty, blob) == 0.0
    with pytest.raises(ValueError, match="differ in shape"):
        boundary_f_score(blob, blob[:16])


def test_loss_is_bce_plus_iou_and_rewards_the_truth():
    target = torch.zeros(1, 1, 8, 8)
    target[..., 2:6, 2:6] = 1
    right, wrong = (target * 2 - 1) * 10, (1 - target * 2) * 10
    assert bce_iou_loss(right, target) < 0.01 < 1.0 < bce_iou_loss(wrong, target)
    torch.testing.assert_close(
        bce_iou_loss(wrong, target),
        torch.nn.functional.binary_cross_entropy_with_logits(wrong, target) + iou_loss(wrong, target),
    )
    assert iou_loss(torch.full((1, 1, 4, 4), -20.0), torch.zeros(1, 1, 4, 4)) < 1e-6  # empty and predicted empty


def test_the_papers_code_loss_is_half_bce_half_dice_and_the_default():
    target = torch.zeros(2, 1, 8, 8)
    target[0, :, 2:6, 2:6] = 1
    logits = torch.randn(2, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    prob = torch.sigmoid(logits)
    dice = 1 - (2 * (prob * target).sum((1, 2, 3)) + 1) / (prob.sum((1, 2, 3)) + target.sum((1, 2, 3)) + 1)
    torch.testing.assert_close(dice_loss(logits, target), dice.mean())
    bce = torch.nn.functional.binary_cross_entropy_with_logits(logits, target)
    torch.testing.assert_close(bce_dice_loss(logits, target), 0.5 * bce + 0.5 * dice.mean())
    from translandseg.training.trainer import TrainConfig

    assert LOSSES[TrainConfig().loss] is bce_dice_loss and LOSSES["bce+iou"] is bce_iou_loss
    with pytest.raises(ValueError, match="loss must be one of"):
        TrainConfig(loss="focal")
