"""The point decoder's click training on a tiny SAM: it trains what it is told to, keeps the rest."""

import math
from dataclasses import replace

import numpy as np
import pytest
import torch

from translandseg.adapter import AdapterInfo, save_adapter
from translandseg.interactive.embedding_cache import EmbeddingCache
from translandseg.interactive.prompting import PointPrompter
from translandseg.interactive.training import (
    ClickFrame,
    ClickTrainConfig,
    frame_key,
    frame_windows,
    prepare_frames,
    train_point_decoder,
)
from translandseg.loading import load_model


@pytest.fixture
def prompter(tiny_sam_checkpoint):
    loaded = load_model("tiny", tiny_sam_checkpoint, image_size=64)
    return PointPrompter.of(loaded, EmbeddingCache(0))


def _frames(prompter, count=4):
    rng = np.random.default_rng(0)
    frames = []
    for _ in range(count):
        label = np.zeros((48, 48), bool)
        top, left = rng.integers(4, 24, 2)
        label[top : top + 16, left : left + 16] = True
        rgb = rng.integers(0, 255, (48, 48, 3), dtype=np.uint8)
        rgb[label] = 200
        frames.append(ClickFrame(frame_key(prompter, rgb), rgb, label, np.ones_like(label), np.zeros_like(label)))
    return frames


@pytest.mark.parametrize("kept", [(), ("transformer",)])
def test_click_training_changes_the_decoder_but_what_it_keeps(prompter, kept):
    before = {k: v.clone() for k, v in prompter.prompt_decoder.state_dict().items()}
    config = ClickTrainConfig(epochs=1, max_clicks=2, accumulate=1, lr=1e-2, kept=kept, max_steps=3)
    history = train_point_decoder(prompter, _frames(prompter), config, progress=False)
    assert history and np.isfinite(history[0]["loss"])
    after = prompter.prompt_decoder.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    transformer = {k for k in before if k.startswith("transformer.")}
    assert any(k.startswith("output_hypernetworks_mlps.") for k in changed)
    assert bool(changed & transformer) == (kept == ())
    assert not any(p.requires_grad for p in prompter.prompt_decoder.parameters())  # frozen again after


def test_the_click_loss_is_part_of_what_training_optimises(prompter):
    def trained_copy(click_weight):
        decoder = prompter.prompt_decoder
        start = {k: v.clone() for k, v in decoder.state_dict().items()}
        config = ClickTrainConfig(epochs=1, max_clicks=2, accumulate=1, lr=1e-2, click_weight=click_weight, max_steps=2)
        history = train_point_decoder(prompter, _frames(prompter), config, progress=False)
        trained = {k: v.clone() for k, v in decoder.state_dict().items()}
        decoder.load_state_dict(start)
        return history[0]["loss"], trained

    plain_loss, plain = trained_copy(0.0)
    weighted_loss, weighted = trained_copy(1.0)
    assert weighted_loss > plain_loss  # the same sequences, scored with the clicks' BCE added
    assert any(not torch.equal(plain[k], weighted[k]) for k in plain)  # and trained towards it


def test_training_frames_add_the_focus_window_only_when_asked():
    label = np.zeros((512, 512), bool)
    label[300:340, 100:160] = True
    whole = (0, 0, 512, 512)
    windows = frame_windows(label, 256)
    assert windows[0] == whole and len(windows) == 2
    col, row, width, height = windows[1]  # the engine's zoom: at least 256 px, around the landslide
    assert width == height == 256 and col <= 100 and col + width >= 160 and row <= 300 and row + height >= 340
    assert frame_windows(label, 256, focus=False) == [whole]
    assert frame_windows(label, 1024) == [whole]  # an image no larger than the zoom is framed whole


def test_a_weight_average_keeps_the_average_not_the_last_step(prompter):
    decoder = prompter.prompt_decoder
    start = {k: v.clone() for k, v in decoder.state_dict().items()}

    def trained(ema_decay):
        decoder.load_state_dict(start)
        config = ClickTrainConfig(epochs=1, max_clicks=2, accumulate=1, lr=1e-2, max_steps=3, ema_decay=ema_decay)
        train_point_decoder(prompter, _frames(prompter), config, progress=False)
        return {k: v.clone() for k, v in decoder.state_dict().items()}

    last, frozen, halfway = trained(None), trained(1.0), trained(0.5)
    assert all(torch.equal(frozen[k], start[k]) for k in start)  # an average that never moves keeps the start
    assert all(torch.equal(trained(0.0)[k], last[k]) for k in last)  # one that forgets at once is the last step
    moved = [k for k in start if not torch.equal(start[k], last[k])]
    assert moved and all(not torch.equal(halfway[k], last[k]) for k in moved)
    with pytest.raises(ValueError, match="ema_decay"):
        ClickTrainConfig(ema_decay=1.5)


def test_a_soup_averages_decoders_trained_from_the_same_start_at_each_seed(prompter):
    decoder = prompter.prompt_decoder
    start = {k: v.clone() for k, v in decoder.state_dict().items()}
    frames = _frames(prompter)

    def trained(**fields):
        decoder.load_state_dict(start)
        config = ClickTrainConfig(epochs=1, max_clicks=2, accumulate=1, lr=1e-2, max_steps=3, **fields)
        history = train_point_decoder(prompter, frames, config, progress=False)
        return history, {k: v.clone() for k, v in decoder.state_dict().items()}

    (_, first), (_, second) = trained(seed=1), trained(seed=2)
    history, soup = trained(soup_seeds=(1, 2))
    assert [epoch["seed"] for epoch in history] == [1, 2]
    moved = [k for k in start if not torch.equal(first[k], second[k])]
    assert moved  # the seeds trained different decoders
    for k in start:
        torch.testing.assert_close(soup[k], (first[k] + second[k]) / 2)
    with pytest.raises(ValueError, match="soup_seeds"):
        ClickTrainConfig(soup_seeds=(3, 3))


def test_primed_training_primes_the_prompter_and_trains_on_what_it_shows(prompter):
    decoder = prompter.prompt_decoder
    start = {k: v.clone() for k, v in decoder.state_dict().items()}
    frames = _frames(prompter)

    def trained(primed):
        decoder.load_state_dict(start)
        config = ClickTrainConfig(epochs=1, max_clicks=2, accumulate=1, lr=1e-2, max_steps=3, primed_clicks=primed)
        train_point_decoder(prompter, frames, config, progress=False)
        assert prompter.primed == primed  # the engine will prompt as training did
        return {k: v.clone() for k, v in decoder.state_dict().items()}

    plain, primed = trained(False), trained(True)
    assert any(not torch.equal(plain[k], primed[k]) for k in plain)  # the same clicks, shown another mask


@pytest.mark.parametrize("with_decoder", [True, False])
def test_an_adapter_says_whether_its_point_decoder_is_primed(tiny_sam_checkpoint, tmp_path, with_decoder):
    loaded = load_model("tiny", tiny_sam_checkpoint, image_size=64)
    info = AdapterInfo("tiny", loaded.sam_sha256, loaded.model.atl.variant.name, 64, clicks_primed=True)
    path = save_adapter(loaded.model, tmp_path / "a.safetensors", info, loaded.prompt_decoder if with_decoder else None)
    again = load_model("tiny", tiny_sam_checkpoint, adapter=path)
    assert again.adapter.clicks_primed
    assert again.clicks_primed == with_decoder  # the base's own decoder is never primed
    assert PointPrompter.of(again, EmbeddingCache(0)).primed == with_decoder
    plain = save_adapter(loaded.model, tmp_path / "b.safetensors", replace(info, clicks_primed=False), loaded.prompt_decoder)
    assert not load_model("tiny", tiny_sam_checkpoint, adapter=plain).clicks_primed


def test_training_frames_are_embedded_once_to_disk_in_float16_keyed_by_pixels_and_base(
        tiny_sam_checkpoint, tmp_path):  # fmt: skip
    from conftest import write_pairs
    from translandseg.data import find_pairs

    pairs = find_pairs(write_pairs(tmp_path / "d", 2))
    folder = tmp_path / "embeddings"

    def prepared(image_size):
        loaded = load_model("tiny", tiny_sam_checkpoint, image_size=image_size)
        prompter = PointPrompter.of(loaded, EmbeddingCache(0, folder, math.inf, disk_dtype="float16"))
        config = ClickTrainConfig(orientations=2, focus_frames=False)
        frames = prepare_frames(prompter, pairs, lambda pair: np.zeros((48, 48), bool), config, progress=False)
        return prompter, frames

    prompter, frames = prepared(64)
    assert len(frames) == 4 and prompter.cache.misses == 4 and len(list(folder.glob("*.float16.npy"))) == 4
    stored = np.load(next(folder.glob("*.npy")))
    assert stored.dtype == np.float16
    again, _ = prepared(64)  # a second run reads every frame from disk
    assert again.cache.misses == 0
    exact = prompter.encode(frames[0].rgb)
    np.testing.assert_allclose(prompter.embedding(frames[0].key, lambda: None), exact, rtol=1e-3, atol=1e-3)
    other, _ = prepared(32)  # another encoder input: nothing stale is reused
    assert other.cache.misses == 4 and len(list(folder.glob("*.npy"))) == 8
    lossless = EmbeddingCache(0, folder)  # a float32 cache in the same folder never reads float16 files
    assert frames[0].key not in lossless and frames[0].key in prompter.cache
