import pytest
import torch
from segment_anything import sam_model_registry

from translandseg.build import build_translandseg
from translandseg.sam_weights import CheckpointError, fit_sam_state_dict, load_sam_weights, read_sam_state_dict


def _official_state_dict_on_meta(model_type):
    """SAM's own builder on the meta device: the official key names and shapes, no memory."""
    with torch.device("meta"):
        return sam_model_registry[model_type]().state_dict()


@pytest.mark.parametrize("model_type", ["vit_b", "vit_l", "vit_h"])
@pytest.mark.parametrize("image_size", [1024, 512, 256])
def test_every_official_key_maps_at_any_input_size(model_type, image_size):
    official = _official_state_dict_on_meta(model_type)
    with torch.device("meta"):
        model = build_translandseg(model_type, image_size)
    fitted = fit_sam_state_dict(official, model)
    assert set(fitted) == set(official)
    expected = model.state_dict()
    assert all(fitted[k].shape == expected[k].shape for k in fitted)


def test_official_shapes_are_resized_where_the_input_size_demands():
    official = _official_state_dict_on_meta("vit_l")
    assert official["image_encoder.pos_embed"].shape == (1, 64, 64, 1024)
    assert official["image_encoder.blocks.5.attn.rel_pos_h"].shape == (127, 64)  # global attention
    assert official["image_encoder.blocks.0.attn.rel_pos_w"].shape == (27, 64)  # 14x14 windows
    with torch.device("meta"):
        model = build_translandseg("vit_l", 512)
    fitted = fit_sam_state_dict(official, model)
    assert fitted["image_encoder.pos_embed"].shape == (1, 32, 32, 1024)
    assert fitted["image_encoder.blocks.5.attn.rel_pos_h"].shape == (63, 64)
    assert fitted["image_encoder.blocks.0.attn.rel_pos_w"].shape == (27, 64)


def test_loading_copies_weights_and_resizes_smoothly(tiny_sam_checkpoint):
    state = read_sam_state_dict(tiny_sam_checkpoint)
    same = build_translandseg("tiny", 64)
    load_sam_weights(same, state)
    for key, value in same.state_dict().items():
        if not key.startswith("atl."):
            torch.testing.assert_close(value, state[key], rtol=0, atol=0)

    state["image_encoder.pos_embed"] = torch.linspace(0, 1, 4)[None, :, None, None].expand(1, 4, 4, 64).clone()
    larger = build_translandseg("tiny", 128)
    load_sam_weights(larger, state)
    pos = larger.image_encoder.pos_embed
    assert pos.shape == (1, 8, 8, 64)
    column = pos[0, :, 0, 0]
    assert torch.all(column[1:] >= column[:-1] - 1e-6)  # a ramp stays a ramp
    assert column[0] < 0.2 and column[-1] > 0.8


def test_wrong_model_type_is_refused_by_name(tiny_sam_checkpoint):
    with torch.device("meta"):
        model = build_translandseg("vit_b", 1024)
    with pytest.raises(CheckpointError, match="missing keys"):
        fit_sam_state_dict(read_sam_state_dict(tiny_sam_checkpoint), model)


def test_non_checkpoint_files_are_refused(tmp_path):
    junk = tmp_path / "sam_vit_b_01ec64.pth"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="not a readable PyTorch checkpoint"):
        read_sam_state_dict(junk)
    wrapped = tmp_path / "wrapped.pth"
    torch.save({"model": {"w": torch.zeros(1)}}, wrapped)
    with pytest.raises(CheckpointError, match="does not hold a SAM state dict"):
        read_sam_state_dict(wrapped)
