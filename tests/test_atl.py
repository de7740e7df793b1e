import threading

import pytest
import torch

from translandseg.build import LITE, SAM_CONFIGS, build_translandseg, default_variant
from translandseg.modeling import ATL_VARIANTS, DEFAULT_ATL_VARIANT, get_variant
from translandseg.modeling.atl import high_frequency


def test_ten_variants_and_each_bases_default():
    assert len(ATL_VARIANTS) == 10
    assert default_variant(LITE) == "inblock"  # bench/README.md, cross-validated on the samples
    assert build_translandseg("tiny", 64).atl.variant.name == default_variant("vit_b") == DEFAULT_ATL_VARIANT
    default = ATL_VARIANTS[DEFAULT_ATL_VARIANT]
    assert (default.middle, default.middle_layers, default.deployment, default.residual) == ("mlp", 2, "every", True)
    assert {v.deployment for v in ATL_VARIANTS.values()} == {"every", "first", "global", "inside"}
    assert {v.residual for v in ATL_VARIANTS.values()} == {True, False}
    assert {(v.middle, v.middle_layers) for v in ATL_VARIANTS.values()} >= {("mlp", 1), ("mlp", 2)}
    assert any(v.middle == "conv" for v in ATL_VARIANTS.values())
    with pytest.raises(ValueError, match="unknown ATL variant"):
        get_variant("mlp7")


@pytest.mark.parametrize("name", [n for n, v in ATL_VARIANTS.items() if v.deployment != "inside"])
def test_every_variant_prompts_its_blocks_and_segments(name):
    torch.manual_seed(0)
    model = build_translandseg("tiny", image_size=64, variant=name)
    expected_blocks = {"every": (0, 1, 2, 3), "first": (0,), "global": SAM_CONFIGS["tiny"].encoder_global_attn_indexes}
    images = torch.rand(2, 3, 64, 64) * 255
    x = (images - model.pixel_mean) / model.pixel_std
    prompts = model.atl(x, model.image_encoder.patch_embed(x))
    assert tuple(prompts) == expected_blocks[ATL_VARIANTS[name].deployment]
    assert all(p.shape == (2, 4, 4, 64) for p in prompts.values())
    assert model(images).shape == (2, 1, 64, 64)


def test_residual_adds_the_module_input():
    torch.manual_seed(0)
    plain = build_translandseg("tiny", 64, "mlp1").atl.lightweight[0]
    torch.manual_seed(0)
    residual = build_translandseg("tiny", 64, "mlp1_res").atl.lightweight[0]
    x = torch.randn(1, 4, 4, 2)
    torch.testing.assert_close(residual(x), plain(x) + x)


def test_inblock_adapter_adapts_every_attention_output_only_while_encoding():
    torch.manual_seed(0)
    model = build_translandseg("tiny", image_size=64, variant="inblock")
    adapters = model.atl.adapters
    assert len(adapters) == SAM_CONFIGS["tiny"].encoder_depth
    assert all((a.down.in_features, a.down.out_features) == (64, 16) for a in adapters)  # width / 4
    seen = []  # what each attention hands back to its block (hooks run after the adapter's)
    for block in model.image_encoder.blocks:
        block.attn.register_forward_hook(lambda module, inputs, output: seen.append(output))
    images = torch.rand(1, 3, 64, 64) * 255
    plain = model.encode_plain(images)
    raw, seen[:] = list(seen), []
    adapted = model.encode(images)
    assert len(raw) == len(seen) == 4
    first, y = adapters[0], raw[0]  # the first block's input is the same in both passes
    expected = y + first.up(torch.nn.functional.gelu(first.down(y)))
    torch.testing.assert_close(seen[0], expected)
    assert not torch.allclose(adapted, plain)
    torch.testing.assert_close(model.encode_plain(images), plain)  # the plain encoder stays plain
    model(images).mean().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.atl.parameters())


def test_inblock_adapter_leaves_a_plain_encoding_on_another_thread_plain():
    """The app encodes the automatic mask and, in the background, the click embedding at once."""
    torch.manual_seed(0)
    model = build_translandseg("tiny", image_size=64, variant="inblock")
    images = torch.rand(1, 3, 64, 64) * 255
    with torch.no_grad():
        plain, adapted = model.encode_plain(images), model.encode(images)
        results, start = {"plain": [], "adapted": []}, threading.Barrier(2)

        def run(name, encode):
            for _ in range(30):
                start.wait()
                results[name].append(encode(images))

        threads = [threading.Thread(target=run, args=("plain", model.encode_plain)),
                   threading.Thread(target=run, args=("adapted", model.encode))]  # fmt: skip
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert len(results["plain"]) == len(results["adapted"]) == 30
    assert all(torch.equal(r, plain) for r in results["plain"])
    assert all(torch.equal(r, adapted) for r in results["adapted"])


def test_high_frequency_removes_the_low_frequencies():
    constant = torch.full((1, 3, 32, 32), 2.0)
    assert high_frequency(constant).abs().max() < 1e-5
    checkerboard = (torch.arange(32)[:, None] + torch.arange(32)[None, :]) % 2 * 2.0 - 1
    checker = checkerboard.expand(1, 3, 32, 32)
    torch.testing.assert_close(high_frequency(checker), checker.abs(), atol=1e-5, rtol=0)


def test_weight_init_as_the_public_code():
    torch.manual_seed(0)
    atl = build_translandseg("vit_b", 256).atl
    assert abs(atl.embedding_down.weight.std().item() - 0.02) < 0.002
    assert torch.count_nonzero(atl.shared_up.bias) == 0
    assert torch.count_nonzero(atl.handcrafted_embed.bias) == 0


def _shares(model_type, variant=DEFAULT_ATL_VARIANT):
    with torch.device("meta"):
        model = build_translandseg(model_type, 1024, variant)
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.trainable_parameters())
    return trainable, total


def test_vit_l_trains_the_papers_1_3_percent_without_allocating_weights():
    trainable, total = _shares("vit_l", "mlp1")  # the paper's best ATL
    assert trainable == 4_174_884 and total == 312_459_376
    assert round(100 * trainable / total, 1) == 1.3
    trainable, total = _shares("vit_l")  # the default ATL, two layers per module
    assert trainable == 4_200_228 and round(100 * trainable / total, 1) == 1.3


def test_encoder_and_prompt_encoder_are_frozen():
    model = build_translandseg("tiny", 64)
    trainable = {id(p) for p in model.trainable_parameters()}
    for name, p in model.named_parameters():
        assert p.requires_grad == name.startswith(("atl.", "mask_decoder.")), name
        assert (id(p) in trainable) == p.requires_grad
    model.train()
    assert not model.image_encoder.training and model.atl.training
