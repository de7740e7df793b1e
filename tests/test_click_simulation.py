"""Where simulated clicks land: the measuring protocol's deepest pixel, and training's random draws."""

import numpy as np
import pytest

from translandseg.interactive.simulation import next_click


@pytest.fixture
def errors():
    """(prediction, target): a missed 30x30 landslide, and a false alarm larger by area (a 2-px
    strip of 1000 pixels) but far shallower."""
    target = np.zeros((60, 500), bool)
    target[20:50, 20:50] = True
    prediction = np.zeros_like(target)
    prediction[2:4, :] = True
    return prediction, target


def test_measuring_clicks_the_deepest_pixel_of_the_deeper_error(errors):
    click = next_click(*errors)
    assert click.positive and (click.x, click.y) in {(34, 34), (35, 34), (34, 35), (35, 35)}


def test_random_placement_clicks_anywhere_in_the_larger_error_by_area(errors):
    prediction, _ = errors
    rng = np.random.default_rng(0)
    clicks = [next_click(*errors, rng=rng, placement="random") for _ in range(50)]
    assert all(not c.positive and prediction[c.y, c.x] for c in clicks)


def test_inner_placement_clicks_the_deeper_error_deeper_than_half_its_depth(errors):
    rng = np.random.default_rng(0)
    clicks = [next_click(*errors, rng=rng, placement="inner") for _ in range(200)]
    assert all(c.positive for c in clicks)
    depth = np.array([min(c.x - 20, 49 - c.x, c.y - 20, 49 - c.y) + 1 for c in clicks])  # to the square's edge
    assert depth.min() > 15 / 2 - 1  # half the deepest pixel's distance (15), on the pixel grid
    assert len({(c.x, c.y) for c in clicks}) > 20  # drawn at random, not always the deepest pixel


def test_a_click_lands_only_on_valid_pixels_and_none_when_the_mask_matches(errors):
    prediction, target = errors
    valid = np.ones_like(target)
    valid[:, :60] = False  # the missed square lies in nodata: only the false alarm counts
    rng = np.random.default_rng(1)
    for placement in ("random", "inner"):
        click = next_click(prediction, target, valid, rng, placement)
        assert not click.positive and click.x >= 60
        assert next_click(target, target, rng=rng, placement=placement) is None
    with pytest.raises(ValueError, match="placement"):
        next_click(prediction, target, rng=rng, placement="deepest")


def test_click_training_refuses_an_unknown_placement_when_configured():
    from translandseg.interactive.training import ClickTrainConfig

    assert ClickTrainConfig(click_placement="inner").click_placement == "inner"
    with pytest.raises(ValueError, match="placement"):
        ClickTrainConfig(click_placement="deepest")
