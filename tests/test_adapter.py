import copy

import pytest
import torch
from safetensors import safe_open

from translandseg.adapter import (
    AdapterError,
    AdapterInfo,
    adapter_storage,
    load_adapter,
    read_adapter_info,
    round_to_storage,
    save_adapter,
)
from translandseg.build import build_translandseg
from translandseg.modeling import DEFAULT_ATL_VARIANT


def _info(**changes):
    values = dict(base_model="tiny", base_sha256="ab" * 32, atl_variant=DEFAULT_ATL_VARIANT, image_size=64,
                  training_snapshot="snapshot-7", metrics={"miou": 0.5})
    values.update(changes)
    return AdapterInfo(**values)


def test_adapter_holds_only_trained_weights_and_round_trips(tmp_path):
    torch.manual_seed(1)
    trained = build_translandseg("tiny", 64)
    path = save_adapter(trained, tmp_path / "a.safetensors", _info())
    with safe_open(str(path), framework="pt") as f:
        keys = set(f.keys())
    assert keys and all(k.startswith(("atl.", "mask_decoder.")) for k in keys)
    assert keys == {k for k, _ in trained.named_parameters() if k.startswith(("atl.", "mask_decoder."))}

    torch.manual_seed(2)
    fresh = build_translandseg("tiny", 64)
    info = load_adapter(fresh, path, "tiny", "ab" * 32)
    assert info.training_snapshot == "snapshot-7" and info.metrics == {"miou": 0.5} and info.created_at
    for key in keys:
        torch.testing.assert_close(fresh.state_dict()[key], trained.state_dict()[key], rtol=0, atol=0)
    assert list(tmp_path.iterdir()) == [path]  # no temporary file left


def test_wrong_base_is_refused_clearly(tmp_path):
    model = build_translandseg("tiny", 64)
    path = save_adapter(model, tmp_path / "a.safetensors", _info())
    with pytest.raises(AdapterError, match="trained on SAM tiny, not on vit_b"):
        load_adapter(model, path, "vit_b", "ab" * 32)
    with pytest.raises(AdapterError, match="load it with the checkpoint it was trained on"):
        load_adapter(model, path, "tiny", "cd" * 32)
    with pytest.raises(AdapterError, match=f"ATL {DEFAULT_ATL_VARIANT} at 64px; the model is mlp1"):
        load_adapter(build_translandseg("tiny", 64, "mlp1"), path, "tiny", "ab" * 32)
    with pytest.raises(ValueError, match="no model could load that file"):
        save_adapter(model, tmp_path / "b.safetensors", _info(atl_variant="mlp1"))
    assert not (tmp_path / "b.safetensors").exists()


def test_non_adapter_files_are_refused(tmp_path):
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"\x00" * 20)
    with pytest.raises(AdapterError, match="not a readable safetensors adapter"):
        read_adapter_info(junk)
    from safetensors.torch import save_file

    other = tmp_path / "other.safetensors"
    save_file({"w": torch.zeros(2)}, str(other))
    with pytest.raises(AdapterError, match="not a TransLandSeg adapter"):
        read_adapter_info(other)


def test_a_float16_adapter_is_half_the_size_and_loads_as_float32(tmp_path):
    torch.manual_seed(3)
    trained = build_translandseg("tiny", 64)
    full = save_adapter(trained, tmp_path / "full.safetensors", _info())
    half = save_adapter(trained, tmp_path / "half.safetensors", _info(), storage="float16")
    with safe_open(str(half), framework="pt") as f:
        assert {f.get_slice(k).get_dtype() for k in f.keys()} == {"F16"}
    assert half.stat().st_size < 0.55 * full.stat().st_size
    assert (adapter_storage(half), adapter_storage(full)) == ("float16", "float32")
    fresh = build_translandseg("tiny", 64)
    load_adapter(fresh, half, "tiny", "ab" * 32)
    for key, value in trained.state_dict().items():
        if key.startswith(("atl.", "mask_decoder.")):
            loaded = fresh.state_dict()[key]
            assert loaded.dtype == torch.float32
            torch.testing.assert_close(loaded, value.half().float(), rtol=0, atol=0)  # float16 rounding, nothing else


def test_point_decoder_weights_shared_with_the_automatic_decoder_are_stored_once(tmp_path):
    torch.manual_seed(4)
    trained = build_translandseg("tiny", 64)
    clicks = copy.deepcopy(trained.mask_decoder)  # click training changed the heads, kept the transformer
    with torch.no_grad():
        for head in clicks.output_hypernetworks_mlps.parameters():
            head.add_(0.5)
    path = save_adapter(trained, tmp_path / "a.safetensors", _info(), clicks)
    with safe_open(str(path), framework="pt") as f:
        stored = {k.removeprefix("prompt_decoder.") for k in f.keys() if k.startswith("prompt_decoder.")}
    assert stored == {f"output_hypernetworks_mlps.{k}" for k, _ in clicks.output_hypernetworks_mlps.named_parameters()}
    fresh = build_translandseg("tiny", 64)
    point = copy.deepcopy(fresh.mask_decoder)  # the base's decoder, as load_model makes it
    load_adapter(fresh, path, "tiny", "ab" * 32, point)
    for key, value in clicks.state_dict().items():  # the shared transformer comes from mask_decoder.*
        torch.testing.assert_close(point.state_dict()[key], value, rtol=0, atol=0)


def test_rounded_to_storage_the_model_is_what_its_float16_file_loads_as(tmp_path):
    torch.manual_seed(5)
    trained = build_translandseg("tiny", 64)
    clicks = copy.deepcopy(trained.mask_decoder)
    before = trained.state_dict()["mask_decoder.output_upscaling.0.weight"].clone()
    round_to_storage(trained, clicks, "float16")
    after = trained.state_dict()["mask_decoder.output_upscaling.0.weight"]
    assert after.dtype == torch.float32 and not torch.equal(after, before)
    torch.testing.assert_close(after, before.half().float(), rtol=0, atol=0)
    path = save_adapter(trained, tmp_path / "a.safetensors", _info(), clicks, "float16")
    fresh = build_translandseg("tiny", 64)
    point = copy.deepcopy(fresh.mask_decoder)
    load_adapter(fresh, path, "tiny", "ab" * 32, point)
    for key, value in trained.state_dict().items():
        if key.startswith(("atl.", "mask_decoder.")):
            assert torch.equal(fresh.state_dict()[key], value), key
    assert all(torch.equal(point.state_dict()[k], v) for k, v in clicks.state_dict().items())
