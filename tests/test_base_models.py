"""Base segmentation models: the authors' state_dict layouts, shapes, input checks, the
registry, and ImageNet weights that are loaded only on request (never downloaded here)."""
from __future__ import annotations

import logging
import urllib.error
import urllib.request

import pytest
import torch
import torchvision

from data_utils.errors import InputError
from patchrefinenet.models import (BASE_MODELS, DLinkNet34, PFANet, ResUNetPlusPlus, build_base_model,
                                   init_imagenet_backbone)

# The authors' state_dicts (docs/authors-seg.md §SA), one "path shape" item per module:
# "64x3x7x7" is a weight shape, "+64" adds a bias of that length, "bn64" a BatchNorm2d(64)
# (weight, bias, running_mean, running_var, num_batches_tracked).
DINKNET34 = """
firstconv 64x3x7x7; firstbn bn64; encoder1.0.conv1 64x64x3x3; encoder1.0.bn1 bn64
encoder1.0.conv2 64x64x3x3; encoder1.0.bn2 bn64; encoder1.1.conv1 64x64x3x3
encoder1.1.bn1 bn64; encoder1.1.conv2 64x64x3x3; encoder1.1.bn2 bn64
encoder1.2.conv1 64x64x3x3; encoder1.2.bn1 bn64; encoder1.2.conv2 64x64x3x3
encoder1.2.bn2 bn64; encoder2.0.conv1 128x64x3x3; encoder2.0.bn1 bn128
encoder2.0.conv2 128x128x3x3; encoder2.0.bn2 bn128; encoder2.0.downsample.0 128x64x1x1
encoder2.0.downsample.1 bn128; encoder2.1.conv1 128x128x3x3; encoder2.1.bn1 bn128
encoder2.1.conv2 128x128x3x3; encoder2.1.bn2 bn128; encoder2.2.conv1 128x128x3x3
encoder2.2.bn1 bn128; encoder2.2.conv2 128x128x3x3; encoder2.2.bn2 bn128
encoder2.3.conv1 128x128x3x3; encoder2.3.bn1 bn128; encoder2.3.conv2 128x128x3x3
encoder2.3.bn2 bn128; encoder3.0.conv1 256x128x3x3; encoder3.0.bn1 bn256
encoder3.0.conv2 256x256x3x3; encoder3.0.bn2 bn256; encoder3.0.downsample.0 256x128x1x1
encoder3.0.downsample.1 bn256; encoder3.1.conv1 256x256x3x3; encoder3.1.bn1 bn256
encoder3.1.conv2 256x256x3x3; encoder3.1.bn2 bn256; encoder3.2.conv1 256x256x3x3
encoder3.2.bn1 bn256; encoder3.2.conv2 256x256x3x3; encoder3.2.bn2 bn256
encoder3.3.conv1 256x256x3x3; encoder3.3.bn1 bn256; encoder3.3.conv2 256x256x3x3
encoder3.3.bn2 bn256; encoder3.4.conv1 256x256x3x3; encoder3.4.bn1 bn256
encoder3.4.conv2 256x256x3x3; encoder3.4.bn2 bn256; encoder3.5.conv1 256x256x3x3
encoder3.5.bn1 bn256; encoder3.5.conv2 256x256x3x3; encoder3.5.bn2 bn256
encoder4.0.conv1 512x256x3x3; encoder4.0.bn1 bn512; encoder4.0.conv2 512x512x3x3
encoder4.0.bn2 bn512; encoder4.0.downsample.0 512x256x1x1; encoder4.0.downsample.1 bn512
encoder4.1.conv1 512x512x3x3; encoder4.1.bn1 bn512; encoder4.1.conv2 512x512x3x3
encoder4.1.bn2 bn512; encoder4.2.conv1 512x512x3x3; encoder4.2.bn1 bn512
encoder4.2.conv2 512x512x3x3; encoder4.2.bn2 bn512; dblock.dilate1 512x512x3x3 +512
dblock.dilate2 512x512x3x3 +512; dblock.dilate3 512x512x3x3 +512
dblock.dilate4 512x512x3x3 +512; decoder4.conv1 128x512x1x1 +128; decoder4.norm1 bn128
decoder4.deconv2 128x128x3x3 +128; decoder4.norm2 bn128; decoder4.conv3 256x128x1x1 +256
decoder4.norm3 bn256; decoder3.conv1 64x256x1x1 +64; decoder3.norm1 bn64
decoder3.deconv2 64x64x3x3 +64; decoder3.norm2 bn64; decoder3.conv3 128x64x1x1 +128
decoder3.norm3 bn128; decoder2.conv1 32x128x1x1 +32; decoder2.norm1 bn32
decoder2.deconv2 32x32x3x3 +32; decoder2.norm2 bn32; decoder2.conv3 64x32x1x1 +64
decoder2.norm3 bn64; decoder1.conv1 16x64x1x1 +16; decoder1.norm1 bn16
decoder1.deconv2 16x16x3x3 +16; decoder1.norm2 bn16; decoder1.conv3 64x16x1x1 +64
decoder1.norm3 bn64; finaldeconv1 64x32x4x4 +32; finalconv2 32x32x3x3 +32
finalconv3 1x32x3x3 +1
"""
SODMODEL = """
vgg16.0 64x3x3x3 +64; vgg16.2 64x64x3x3 +64; vgg16.5 128x64x3x3 +128
vgg16.7 128x128x3x3 +128; vgg16.10 256x128x3x3 +256; vgg16.12 256x256x3x3 +256
vgg16.14 256x256x3x3 +256; vgg16.17 512x256x3x3 +512; vgg16.19 512x512x3x3 +512
vgg16.21 512x512x3x3 +512; vgg16.24 512x512x3x3 +512; vgg16.26 512x512x3x3 +512
vgg16.28 512x512x3x3 +512; cpfe_conv3_3.conv_1_1 32x256x1x1
cpfe_conv3_3.conv_dil_3 32x256x3x3; cpfe_conv3_3.conv_dil_5 32x256x3x3
cpfe_conv3_3.conv_dil_7 32x256x3x3; cpfe_conv3_3.bn bn128; cpfe_conv4_3.conv_1_1 32x512x1x1
cpfe_conv4_3.conv_dil_3 32x512x3x3; cpfe_conv4_3.conv_dil_5 32x512x3x3
cpfe_conv4_3.conv_dil_7 32x512x3x3; cpfe_conv4_3.bn bn128; cpfe_conv5_3.conv_1_1 32x512x1x1
cpfe_conv5_3.conv_dil_3 32x512x3x3; cpfe_conv5_3.conv_dil_5 32x512x3x3
cpfe_conv5_3.conv_dil_7 32x512x3x3; cpfe_conv5_3.bn bn128; cha_att.linear_1 96x384 +96
cha_att.linear_2 384x96 +384; hl_conv1 64x384x3x3 +64; hl_bn1 bn64; ll_conv_1 64x64x3x3 +64
ll_bn_1 bn64; ll_conv_2 64x128x3x3 +64; ll_bn_2 bn64; ll_conv_3 64x128x3x3 +64; ll_bn_3 bn64
spa_att.grp1_conv1k 32x64x1x9 +32; spa_att.grp1_bn1 bn32; spa_att.grp1_convk1 1x32x9x1 +1
spa_att.grp1_bn2 bn1; spa_att.grp2_convk1 32x64x9x1 +32; spa_att.grp2_bn1 bn32
spa_att.grp2_conv1k 1x32x1x9 +1; spa_att.grp2_bn2 bn1; ff_conv_1 1x128x3x3 +1
"""
RESUNETPLUSPLUS = """
input_layer.0 32x3x3x3 +32; input_layer.1 bn32; input_layer.3 32x32x3x3 +32
input_skip.0 32x3x3x3 +32; squeeze_excite1.fc.0 2x32; squeeze_excite1.fc.2 32x2
residual_conv1.conv_block.0 bn32; residual_conv1.conv_block.2 64x32x3x3 +64
residual_conv1.conv_block.3 bn64; residual_conv1.conv_block.5 64x64x3x3 +64
residual_conv1.conv_skip.0 64x32x3x3 +64; residual_conv1.conv_skip.1 bn64
squeeze_excite2.fc.0 4x64; squeeze_excite2.fc.2 64x4; residual_conv2.conv_block.0 bn64
residual_conv2.conv_block.2 128x64x3x3 +128; residual_conv2.conv_block.3 bn128
residual_conv2.conv_block.5 128x128x3x3 +128; residual_conv2.conv_skip.0 128x64x3x3 +128
residual_conv2.conv_skip.1 bn128; squeeze_excite3.fc.0 8x128; squeeze_excite3.fc.2 128x8
residual_conv3.conv_block.0 bn128; residual_conv3.conv_block.2 256x128x3x3 +256
residual_conv3.conv_block.3 bn256; residual_conv3.conv_block.5 256x256x3x3 +256
residual_conv3.conv_skip.0 256x128x3x3 +256; residual_conv3.conv_skip.1 bn256
aspp_bridge.aspp_block1.0 512x256x3x3 +512; aspp_bridge.aspp_block1.2 bn512
aspp_bridge.aspp_block2.0 512x256x3x3 +512; aspp_bridge.aspp_block2.2 bn512
aspp_bridge.aspp_block3.0 512x256x3x3 +512; aspp_bridge.aspp_block3.2 bn512
aspp_bridge.output 512x1536x1x1 +512; attn1.conv_encoder.0 bn128
attn1.conv_encoder.2 512x128x3x3 +512; attn1.conv_decoder.0 bn512
attn1.conv_decoder.2 512x512x3x3 +512; attn1.conv_attn.0 bn512
attn1.conv_attn.2 1x512x1x1 +1; up_residual_conv1.conv_block.0 bn640
up_residual_conv1.conv_block.2 256x640x3x3 +256; up_residual_conv1.conv_block.3 bn256
up_residual_conv1.conv_block.5 256x256x3x3 +256
up_residual_conv1.conv_skip.0 256x640x3x3 +256; up_residual_conv1.conv_skip.1 bn256
attn2.conv_encoder.0 bn64; attn2.conv_encoder.2 256x64x3x3 +256; attn2.conv_decoder.0 bn256
attn2.conv_decoder.2 256x256x3x3 +256; attn2.conv_attn.0 bn256
attn2.conv_attn.2 1x256x1x1 +1; up_residual_conv2.conv_block.0 bn320
up_residual_conv2.conv_block.2 128x320x3x3 +128; up_residual_conv2.conv_block.3 bn128
up_residual_conv2.conv_block.5 128x128x3x3 +128
up_residual_conv2.conv_skip.0 128x320x3x3 +128; up_residual_conv2.conv_skip.1 bn128
attn3.conv_encoder.0 bn32; attn3.conv_encoder.2 128x32x3x3 +128; attn3.conv_decoder.0 bn128
attn3.conv_decoder.2 128x128x3x3 +128; attn3.conv_attn.0 bn128
attn3.conv_attn.2 1x128x1x1 +1; up_residual_conv3.conv_block.0 bn160
up_residual_conv3.conv_block.2 64x160x3x3 +64; up_residual_conv3.conv_block.3 bn64
up_residual_conv3.conv_block.5 64x64x3x3 +64; up_residual_conv3.conv_skip.0 64x160x3x3 +64
up_residual_conv3.conv_skip.1 bn64; aspp_out.aspp_block1.0 32x64x3x3 +32
aspp_out.aspp_block1.2 bn32; aspp_out.aspp_block2.0 32x64x3x3 +32
aspp_out.aspp_block2.2 bn32; aspp_out.aspp_block3.0 32x64x3x3 +32
aspp_out.aspp_block3.2 bn32; aspp_out.output 32x96x1x1 +32; output_layer.0 1x32x1x1 +1
"""
AUTHORS = {"dlinknet": (DINKNET34, 314), "pfanet": (SODMODEL, 115), "resunetplusplus": (RESUNETPLUSPLUS, 254)}
NARROW = (8, 16, 32, 64, 128)


def expand(listing: str) -> list[tuple[str, tuple[int, ...]]]:
    """Listing → ordered [(state_dict key, shape)], () for num_batches_tracked."""
    entries = []
    for item in listing.replace("\n", "; ").split(";"):
        if not item.strip():
            continue
        path, *specs = item.split()
        if specs[0].startswith("bn"):
            n = int(specs[0][2:])
            entries += [(f"{path}.{p}", (n,)) for p in ("weight", "bias", "running_mean", "running_var")]
            entries.append((f"{path}.num_batches_tracked", ()))
            continue
        entries.append((f"{path}.weight", tuple(int(d) for d in specs[0].split("x"))))
        if len(specs) == 2:
            entries.append((f"{path}.bias", (int(specs[1][1:]),)))
    return entries


def random_state_dict(listing: str) -> dict[str, torch.Tensor]:
    """A stand-in for the released file: random float32 tensors, int64 batch counters."""
    g = torch.Generator().manual_seed(0)
    sd = {}
    for key, shape in expand(listing):
        if key.endswith("num_batches_tracked"):
            sd[key] = torch.tensor(123, dtype=torch.int64)
        else:
            sd[key] = torch.rand(shape, generator=g) + 0.5
    return sd


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny inputs gain nothing from intra-op threads, and on a busy 2-core machine they thrash."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def models(one_thread):
    torch.manual_seed(0)
    return {name: cls().eval() for name, cls in BASE_MODELS.items()}


@pytest.mark.parametrize("name", list(AUTHORS))
def test_state_dict_keys_and_shapes_equal_the_authors(models, name):
    listing, count = AUTHORS[name]
    expected = expand(listing)
    assert len(expected) == count
    got = [(k, tuple(v.shape)) for k, v in models[name].state_dict().items()]
    assert sorted(got) == sorted(expected)  # same keys and shapes …
    assert got == expected  # … in the authors' order
    counters = [v for k, v in models[name].state_dict().items() if k.endswith("num_batches_tracked")]
    assert counters and all(c.dtype == torch.int64 for c in counters)


@pytest.mark.parametrize("name", list(AUTHORS))
def test_authors_state_dict_loads_strictly(name):
    sd = random_state_dict(AUTHORS[name][0])
    model = build_base_model(name)
    model.load_state_dict(sd, strict=True)
    loaded = model.state_dict()
    assert all(torch.equal(loaded[k], v) for k, v in sd.items())


def test_parameter_counts_equal_the_authors(models):
    counts = {name: sum(p.numel() for p in m.parameters()) for name, m in models.items()}
    assert counts == {"dlinknet": 31_096_129, "pfanet": 16_381_607, "resunetplusplus": 14_482_564}


@pytest.mark.parametrize("name,size", [("dlinknet", (64, 96)), ("pfanet", (64, 48)), ("resunetplusplus", (64, 40))])
def test_forward_gives_probabilities_at_input_size(models, name, size):
    x = torch.randn(2, 3, *size)
    with torch.no_grad():
        y = models[name](x)
    assert y.shape == (2, 1, *size)
    assert torch.isfinite(y).all() and (y > 0).all() and (y < 1).all()


def test_input_multiples_are_the_authors():
    assert (DLinkNet34.input_multiple, PFANet.input_multiple, ResUNetPlusPlus.input_multiple) == (32, 16, 8)


def test_pfanet_forward_with_aux_returns_the_channel_attention_mean(models):
    model = models["pfanet"]
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        prob, reg = model.forward_with_aux(x)
        assert torch.equal(prob, model(x))
        # the regulariser is the mean of the sigmoid channel weights of the 384 pyramid channels
        seen = {}
        handle = model.cha_att.register_forward_hook(lambda m, i, o: seen.update(w=o[0]))
        model(x)
        handle.remove()
    assert reg.shape == () and 0 < reg.item() < 1
    assert seen["w"].shape == (1, 384, 1, 1)
    assert reg.item() == pytest.approx(seen["w"].mean().item())


def test_other_models_have_a_zero_aux_term():
    model = ResUNetPlusPlus(filters=NARROW).eval()
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        prob, aux = model.forward_with_aux(x)
    assert torch.equal(prob, model(x)) and aux.item() == 0.0


@pytest.mark.parametrize("name", ["dlinknet", "pfanet", "resunetplusplus"])
def test_gradients_reach_every_parameter(name):
    torch.manual_seed(0)
    model = build_base_model(name, **({"filters": NARROW} if name == "resunetplusplus" else {})).train()
    prob, aux = model.forward_with_aux(torch.randn(2, 3, 32, 32))
    (prob.mean() + aux).backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert missing == []


def test_narrow_resunetplusplus_is_small_and_works():
    model = ResUNetPlusPlus(filters=NARROW).eval()
    assert sum(p.numel() for p in model.parameters()) < 14_482_564 / 15  # a quarter of the width: ~1/16 of the weights
    with torch.no_grad():
        assert model(torch.rand(1, 3, 24, 16)).shape == (1, 1, 24, 16)


@pytest.mark.parametrize("filters", [(8, 16, 32, 64), (8, 16, 0, 64, 128), (8.0, 16, 32, 64, 128)])
def test_resunetplusplus_rejects_bad_filters(filters):
    with pytest.raises(InputError, match="5 positive ints"):
        ResUNetPlusPlus(filters=filters)


@pytest.mark.parametrize("name,size,multiple,fix", [
    ("dlinknet", (500, 500), 32, "512×512"),
    ("dlinknet", (64, 48), 32, "64×64"),
    ("pfanet", (40, 72), 16, "48×80"),
    ("resunetplusplus", (60, 64), 8, "64×64"),
])
def test_bad_input_size_names_the_valid_multiple(models, name, size, multiple, fix):
    with pytest.raises(InputError, match=f"divisible by {multiple}.*{size[0]}×{size[1]}.*{fix}"):
        models[name](torch.zeros(1, 3, *size))


@pytest.mark.parametrize("x,match", [
    (torch.zeros(3, 32, 32), "4-D batch"),
    (torch.zeros(1, 1, 32, 32), "3 channels"),
    (torch.zeros(1, 32, 32, 3), "3 channels"),
    (torch.zeros(1, 3, 32, 32, dtype=torch.uint8), "floating-point"),
])
def test_bad_input_layout_is_explained(models, x, match):
    for model in models.values():
        with pytest.raises(InputError, match=match):
            model(x)


def test_unknown_model_name_lists_the_valid_names():
    with pytest.raises(InputError, match="'unet'.*dlinknet, pfanet, resunetplusplus"):
        build_base_model("unet")
    with pytest.raises(KeyError, match="dlinknet, pfanet, resunetplusplus"):
        BASE_MODELS["unet"]
    assert issubclass(InputError, ValueError)


def test_unknown_constructor_argument_is_named():
    with pytest.raises(InputError, match="does not take \\['filters'\\]"):
        build_base_model("dlinknet", filters=NARROW)


def _forbid_network(monkeypatch, hub_loader: bool = True):
    """Make every download raise; ``hub_loader=False`` keeps torch.hub's cache reader working."""
    def refuse(*args, **kwargs):
        raise urllib.error.URLError("network access is forbidden in this test")

    if hub_loader:
        monkeypatch.setattr(torch.hub, "load_state_dict_from_url", refuse)
    monkeypatch.setattr(torch.hub, "download_url_to_file", refuse)
    monkeypatch.setattr(urllib.request, "urlopen", refuse)


def test_construction_never_touches_the_network(monkeypatch, tmp_path):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    _forbid_network(monkeypatch)
    for name in BASE_MODELS:
        assert isinstance(build_base_model(name), torch.nn.Module)
    assert not any(tmp_path.iterdir())


# ImageNet weights: a fake torchvision file in a temporary hub cache. Every tensor is one value
# broadcast to the right shape (stride 0), so the file is tiny and each key recognisable.
TORCHVISION = {"dlinknet": (torchvision.models.resnet34, "resnet34-b627a593.pth",
                            {"conv1.weight": "firstconv.weight", "bn1.running_var": "firstbn.running_var",
                             "layer3.5.conv2.weight": "encoder3.5.conv2.weight",
                             "layer2.0.downsample.1.bias": "encoder2.0.downsample.1.bias"}),
               "pfanet": (torchvision.models.vgg16, "vgg16-397923af.pth",
                          {"features.0.weight": "vgg16.0.weight", "features.28.bias": "vgg16.28.bias"})}


def _fake_imagenet_file(name, torch_home):
    builder, file_name, _ = TORCHVISION[name]
    with torch.device("meta"):
        reference = builder(weights=None).state_dict()
    fake = {k: torch.tensor(float(i) if v.is_floating_point() else i, dtype=v.dtype).expand(v.shape)
            for i, (k, v) in enumerate(reference.items())}
    path = torch_home / "hub" / "checkpoints" / file_name
    path.parent.mkdir(parents=True)
    torch.save(fake, path)
    return fake, path


@pytest.mark.parametrize("name", ["dlinknet", "pfanet"])
def test_imagenet_weights_load_from_the_hub_cache_offline(monkeypatch, tmp_path, name):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    fake, _ = _fake_imagenet_file(name, tmp_path)
    _forbid_network(monkeypatch, hub_loader=False)
    model = build_base_model(name)
    head = "finalconv3.weight" if name == "dlinknet" else "ff_conv_1.weight"
    head_before = model.state_dict()[head].clone()
    assert init_imagenet_backbone(model) is model
    state = model.state_dict()
    for src, dst in TORCHVISION[name][2].items():
        assert torch.equal(state[dst], fake[src].expand_as(state[dst]))
    assert torch.equal(state[head], head_before)  # only the backbone changes
    assert isinstance(build_base_model(name, pretrained=True), torch.nn.Module)


@pytest.mark.parametrize("name,file_name", [("dlinknet", "resnet34-b627a593.pth"), ("pfanet", "vgg16-397923af.pth")])
@pytest.mark.parametrize("patched", ["download_url_to_file", "load_state_dict_from_url"])
def test_offline_without_cached_file_says_where_to_put_it(models, monkeypatch, tmp_path, name, file_name, patched):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))

    def offline(*args, **kwargs):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(torch.hub, patched, offline)
    expected_path = tmp_path / "hub" / "checkpoints" / file_name
    with pytest.raises(InputError) as info:
        init_imagenet_backbone(models[name])
    assert str(expected_path) in str(info.value) and "--no-pretrained" in str(info.value)


def test_pretrained_constructor_flag_fails_clearly_offline(monkeypatch, tmp_path):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    _forbid_network(monkeypatch, hub_loader=False)
    with pytest.raises(InputError, match="resnet34-b627a593.pth.*--no-pretrained"):
        build_base_model("dlinknet", pretrained=True)


def test_unreadable_cached_file_is_reported(models, monkeypatch, tmp_path):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    path = tmp_path / "hub" / "checkpoints" / "resnet34-b627a593.pth"
    path.parent.mkdir(parents=True)
    path.write_bytes(b"truncated download")
    _forbid_network(monkeypatch, hub_loader=False)
    with pytest.raises(InputError, match=f"cannot read .*{path.name}.*delete the file"):
        init_imagenet_backbone(models["dlinknet"])


def test_cached_file_with_wrong_contents_is_reported(models, monkeypatch, tmp_path):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    path = tmp_path / "hub" / "checkpoints" / "vgg16-397923af.pth"
    path.parent.mkdir(parents=True)
    torch.save({"features.0.weight": torch.zeros(64, 3, 5, 5)}, path)
    _forbid_network(monkeypatch, hub_loader=False)
    with pytest.raises(InputError, match="does not hold VGG-16 ImageNet weights.*vgg16.0.weight"):
        init_imagenet_backbone(models["pfanet"])


def test_resunetplusplus_has_no_imagenet_backbone(monkeypatch, caplog):
    _forbid_network(monkeypatch)
    model = ResUNetPlusPlus(filters=NARROW)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    logger = logging.getLogger("patchrefinenet")
    logger.addHandler(caplog.handler)
    try:
        with caplog.at_level(logging.INFO, logger="patchrefinenet"):
            init_imagenet_backbone(model)
    finally:
        logger.removeHandler(caplog.handler)
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())
    assert "no ImageNet backbone" in caplog.text
