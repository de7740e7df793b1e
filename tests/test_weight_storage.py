import copy

import pytest
import torch
from safetensors import safe_open

from translandseg import weight_storage
from translandseg.adapter import AdapterInfo, adapter_storage, load_adapter, round_to_storage, save_adapter
from translandseg.build import build_translandseg
from translandseg.weight_storage import SCALE_SUFFIX, decoded, encoded, rounded


def test_int8_keeps_large_matrices_as_int8_rows_with_one_scale_each_and_the_rest_as_float16():
    torch.manual_seed(0)
    weight = torch.randn(64, 128) * torch.linspace(0.01, 2, 64)[:, None]  # rows of very different ranges
    tensors = {"big.weight": weight, "big.bias": torch.randn(64), "small.weight": torch.randn(8, 8),
               "steps": torch.arange(3)}  # fmt: skip
    stored = encoded(tensors, "int8")
    assert stored["big.weight"].dtype == torch.int8 and stored["big.weight" + SCALE_SUFFIX].shape == (64,)
    assert stored["big.bias"].dtype == stored["small.weight"].dtype == torch.float16
    assert torch.equal(stored["steps"], tensors["steps"])
    assert stored["big.weight"].abs().amax(dim=1).eq(127).all()  # each row's largest magnitude maps to 127
    back = decoded(stored)
    assert set(back) == set(tensors) and back["big.weight"].dtype == torch.float32
    error = (back["big.weight"] - weight).abs()
    assert (error <= stored["big.weight" + SCALE_SUFFIX][:, None] / 2 + 1e-7).all()  # half a step per row at most
    assert error.max() > 0  # it is a rounding, not a copy


def test_rounded_is_what_loading_gives_and_storing_it_again_changes_nothing():
    torch.manual_seed(1)
    weight = torch.randn(96, 64)
    once = rounded(weight, "int8")
    torch.testing.assert_close(once, decoded(encoded({"w": weight}, "int8"))["w"], rtol=0, atol=0)
    again = encoded({"w": once}, "int8")
    assert torch.equal(again["w"], encoded({"w": weight}, "int8")["w"])
    torch.testing.assert_close(decoded(again)["w"], once, rtol=1e-6, atol=0)
    assert torch.equal(rounded(weight, "float32"), weight)


def test_an_unknown_storage_is_refused():
    with pytest.raises(ValueError, match="float32"):
        encoded({"w": torch.zeros(2)}, "int4")


def test_an_int8_adapter_is_smaller_than_float16_and_loads_as_the_rounded_model(tmp_path, monkeypatch):
    monkeypatch.setattr(weight_storage, "INT8_MIN_ELEMENTS", 1024)  # the tiny model's matrices are small
    torch.manual_seed(2)
    trained = build_translandseg("tiny", 64)
    clicks = copy.deepcopy(trained.mask_decoder)
    with torch.no_grad():
        for weight in clicks.parameters():
            weight.add_(0.1)
    info = AdapterInfo("tiny", "ab" * 32, trained.atl.variant.name, 64)
    half = save_adapter(trained, tmp_path / "half.safetensors", info, clicks, "float16")
    round_to_storage(trained, clicks, "int8")
    path = save_adapter(trained, tmp_path / "int8.safetensors", info, clicks, "int8")
    assert path.stat().st_size < 0.8 * half.stat().st_size and adapter_storage(path) == "int8"
    with safe_open(str(path), framework="pt") as f:
        assert f.get_tensor("prompt_decoder.transformer.layers.0.mlp.lin1.weight").dtype == torch.int8
    fresh = build_translandseg("tiny", 64)
    point = copy.deepcopy(fresh.mask_decoder)
    load_adapter(fresh, path, "tiny", "ab" * 32, point)
    for key, value in trained.state_dict().items():
        if key.startswith(("atl.", "mask_decoder.")):
            torch.testing.assert_close(fresh.state_dict()[key], value, rtol=1e-6, atol=0)
    for key, value in clicks.state_dict().items():
        torch.testing.assert_close(point.state_dict()[key], value, rtol=1e-6, atol=0)
