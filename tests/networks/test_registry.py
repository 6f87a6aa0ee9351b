"""The network registry: every name builds a MONAI network with the right output shape, and
scripts (``torch.jit.script``) exactly where the registry says it does."""

from __future__ import annotations

import logging
from dataclasses import replace

import pytest
import torch
from monai.networks.nets import UNet

from medseg.errors import MedsegError
from medseg.networks import NETWORKS, build_network
from medseg.networks.registry import torchscript_mode
from medseg.networks.zoo import UNetPlusPlus
from medseg.planning.planner import VNET_CHANNELS
from medseg.planning.plans import NetworkSpec

SMALL = {
    "unet": NetworkSpec("unet", (4, 8, 16), ((2, 2, 1), (2, 2, 2)), num_res_units=1),
    "dynunet": NetworkSpec(
        "dynunet", (4, 8, 16), ((2, 2, 1), (2, 2, 2)), ((3, 3, 1), (3, 3, 3), (3, 3, 3))
    ),
    "segresnet": NetworkSpec("segresnet", (4, 8, 16), ((2, 2, 2), (2, 2, 2))),
    "basicunet": NetworkSpec("basicunet", (4, 4, 8, 16, 32), ((2, 2, 2),) * 4),
    "vnet": NetworkSpec("vnet", (16, 32), ((2, 2, 2),)),
    "swinunetr": NetworkSpec("swinunetr", (12, 12, 24, 48, 96, 192), ((2, 2, 2),) * 5),
    "unetr": NetworkSpec("unetr", (4, 8, 16, 32, 32), ((2, 2, 2),) * 4, input_size=(32, 32, 16)),
    "attentionunet": NetworkSpec("attentionunet", (4, 8, 16), ((2, 2, 1), (2, 2, 2))),
    "basicunetplusplus": NetworkSpec("basicunetplusplus", (4, 4, 8, 16, 32), ((2, 2, 2),) * 4),
    "highresnet": NetworkSpec("highresnet", (4, 4, 8, 8, 8), ((1, 1, 1),) * 4),
    "deeplab": NetworkSpec("deeplab", (4, 8, 16), ((2, 2, 1), (2, 2, 2))),
}
# Input of each test network (B=1, C=1): SwinUNETR needs sides divisible by 32 and at least 64
# (its 1/32 features must have more than one voxel), UNETR exactly its input_size.
SHAPES = {"swinunetr": (64, 64, 64)}
SHAPE = (32, 32, 16)


def _input(name: str, batch: int = 1) -> torch.Tensor:
    gen = torch.Generator().manual_seed(0)
    return torch.randn(batch, 1, *SHAPES.get(name, SHAPE), generator=gen)


def test_every_registered_network_is_covered() -> None:
    assert set(SMALL) == set(NETWORKS)


@pytest.mark.parametrize("name", sorted(SMALL))
def test_builds_and_keeps_spatial_shape(name: str) -> None:
    torch.manual_seed(0)
    net = build_network(SMALL[name], in_channels=1, out_channels=3).eval()
    x = _input(name)
    with torch.no_grad():
        y = net(x)
    assert y.shape == (1, 3, *x.shape[2:])


@pytest.mark.parametrize("name", sorted(SMALL))
def test_input_channels_are_honoured(name: str) -> None:
    """A 2-channel network takes 2-channel input (and its first layer sees both)."""
    net = build_network(SMALL[name], in_channels=2, out_channels=3).eval()
    first = next(m for m in net.modules() if isinstance(m, torch.nn.Conv3d))
    assert first.in_channels == 2
    if name == "swinunetr":  # a 64^3 forward costs seconds; the zoo tests run it
        return
    x = _input(name)
    with torch.no_grad():
        assert net(torch.cat([x, x], dim=1)).shape == (1, 3, *x.shape[2:])
        with pytest.raises(RuntimeError):
            net(x)


# Their TorchScript claims are checked on the exported bundles of test_network_zoo.py.
EXPORT_TESTED = {
    "swinunetr",
    "unetr",
    "attentionunet",
    "basicunetplusplus",
    "highresnet",
    "deeplab",
}


@pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning")
@pytest.mark.parametrize(
    ("name", "deep_supervision"),
    [(n, False) for n in sorted(set(SMALL) - EXPORT_TESTED)] + [("dynunet", True)],
)
def test_torchscript_support_is_what_the_registry_says(name: str, deep_supervision: bool) -> None:
    """``torchscript_mode`` (what bundle export does; ``medseg train --help`` prints it) is
    true: "script" networks script and agree with eager mode at another input size;
    "trace" networks fail to script and trace to the same outputs at the patch."""
    torch.manual_seed(0)
    spec = replace(SMALL[name], deep_supervision=deep_supervision)
    net = build_network(spec, 1, 3).eval()
    x = _input(name)
    if torchscript_mode(spec) == "script":
        scripted = torch.jit.script(net)
        x = torch.randn(1, 1, 48, 32, 16)  # any input size, not only the traced one
        with torch.no_grad():
            torch.testing.assert_close(scripted(x), net(x), atol=1e-5, rtol=1e-4)
        return
    with pytest.raises(Exception):  # noqa: B017  # torch raises several types here
        torch.jit.script(net)
    with torch.no_grad():
        traced = torch.jit.trace(net, x, check_trace=False)
        torch.testing.assert_close(traced(x), net(x), atol=1e-5, rtol=1e-4)


def test_unet_plus_plus_deep_supervision_stacks_the_nested_outputs_in_training() -> None:
    spec = replace(SMALL["basicunetplusplus"], deep_supervision=True)
    net = build_network(spec, 1, 2)
    assert isinstance(net, UNetPlusPlus)
    x = torch.randn(2, 1, 32, 32, 16)
    stacked = net.train()(x)
    assert stacked.shape == (2, 4, 2, 32, 32, 16)  # deepest decoder first, as DynUNet
    with torch.no_grad():
        assert net.eval()(x).shape == (2, 2, 32, 32, 16)
        deepest = net.net(x)[-1]
        torch.testing.assert_close(net(x), deepest)


def test_highresnet_logits_can_be_negative() -> None:
    """MONAI's HighResNet ends in norm + ReLU (logits >= 0); medseg's ends in a 1x1x1 conv."""
    net = build_network(SMALL["highresnet"], 1, 3).eval()
    assert isinstance(net.blocks[-1], torch.nn.Conv3d)
    with torch.no_grad():
        assert float(net(_input("highresnet")).min()) < 0


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        (NetworkSpec("unetr", (4, 8, 16, 32, 32), ((2, 2, 2),) * 4), "input_size"),
        (
            NetworkSpec("unetr", (4, 8, 16, 32, 32), ((2, 2, 2),) * 4, input_size=(24, 32, 16)),
            "multiple of 16",
        ),
        (NetworkSpec("swinunetr", (16, 16, 32, 64, 128, 256), ((2, 2, 2),) * 5), "multiple of 12"),
        (NetworkSpec("deeplab", (4, 8, 18), ((2, 2, 2),) * 2), "divisible by 4"),
        (NetworkSpec("highresnet", (4, 8, 16), ((1, 1, 1),) * 2), "expected 5 channels"),
        (NetworkSpec("basicunetplusplus", (4, 8, 16), ((2, 2, 2),) * 2), "at least 5"),
    ],
)
def test_specs_a_network_cannot_build_are_refused(spec: NetworkSpec, message: str) -> None:
    with pytest.raises(MedsegError, match=message):
        build_network(spec, 1, 2)


def test_fixed_ratio_networks_warn_when_channels_are_not_what_is_built(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """UNETR's widths are feature_size x 1, 2, 4, 8 and the ViT's hidden size: other middle
    entries are not built, and the log says so (as for vnet)."""
    spec = NetworkSpec("unetr", (4, 8, 8, 32, 48), ((2, 2, 2),) * 4, input_size=(32, 32, 16))
    with caplog.at_level(logging.WARNING, logger="medseg"):
        net = build_network(spec, 1, 2)
    assert "unetr: plans.network.channels [4, 8, 8, 32, 48] are not what is built" in caplog.text
    assert net.vit.patch_embedding.position_embeddings.shape[-1] == 48  # hidden_size
    convs = [m.out_channels for m in net.encoder3.modules() if isinstance(m, torch.nn.Conv3d)]
    assert 16 in convs and 8 not in convs  # 4 * feature_size, not channels[2]
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="medseg"):
        build_network(replace(spec, channels=(4, 8, 16, 32, 48)), 1, 2)
    assert not caplog.records


def test_dynunet_deep_supervision_outputs_in_training() -> None:
    spec = NetworkSpec("dynunet", (4, 8, 16, 32), ((2, 2, 2),) * 3, deep_supervision=True)
    net = build_network(spec, 1, 2).train()
    y = net(torch.randn(2, 1, 32, 32, 32))
    assert y.shape[:3] == (2, 3, 2)  # full resolution + 2 deep-supervision heads


def test_unknown_network_lists_the_registry() -> None:
    spec = NetworkSpec.__new__(NetworkSpec)
    object.__setattr__(spec, "name", "resnet")
    with pytest.raises(MedsegError, match=r"unknown network 'resnet'.*unet"):
        build_network(spec, 1, 2)


def test_spec_validation() -> None:
    with pytest.raises(MedsegError, match="expected 2 strides"):
        NetworkSpec("unet", (4, 8, 16), ((2, 2, 2),)).validate()


def _first_conv_shape(spec: NetworkSpec, x: torch.Tensor) -> tuple[int, ...]:
    """Spatial shape of the first convolution's output."""
    net = build_network(spec, 1, 3).eval()
    first = next(m for m in net.modules() if isinstance(m, torch.nn.Conv3d))
    shapes: list[tuple[int, ...]] = []
    first.register_forward_hook(lambda _m, _i, out: shapes.append(tuple(out.shape[2:])))
    with torch.no_grad():
        assert net(x).shape == (1, 3, *x.shape[2:])
    return shapes[0]


def test_unet_full_res_level_computes_features_at_input_resolution() -> None:
    x = torch.randn(1, 1, 16, 24, 16)
    full = NetworkSpec("unet", (4, 8, 16), ((2, 2, 2), (2, 2, 2)), full_res_level=True)
    legacy = NetworkSpec("unet", (4, 8, 16), ((2, 2, 2), (2, 2, 2)))
    assert _first_conv_shape(full, x) == (16, 24, 16)
    assert _first_conv_shape(legacy, x) == (8, 12, 8)  # MONAI's own layout halves at once
    # channels[i] lives at level i; the bottom block at the coarsest level is twice as wide
    net = build_network(full, 1, 3)
    widths = [m.out_channels for m in net.modules() if isinstance(m, torch.nn.Conv3d)]
    assert widths[0] == 4 and max(widths) == 32


def test_unet_head_channels_widen_the_top_block_before_a_1x1_classifier() -> None:
    x = torch.randn(2, 1, 16, 24, 16)
    spec = NetworkSpec("unet", (4, 8, 16), ((2, 2, 2), (2, 2, 2)), full_res_level=True)
    plain = build_network(spec, 1, 3)
    headed = build_network(replace(spec, head_channels=6), 1, 3)
    assert isinstance(plain, UNet)  # 0 keeps MONAI's own network (and old checkpoints)
    assert isinstance(headed, torch.nn.Sequential) and isinstance(headed[0], UNet)
    classifier = headed[-1]
    assert isinstance(classifier, torch.nn.Conv3d)
    assert classifier.kernel_size == (1, 1, 1) and classifier.in_channels == 6
    assert headed[0](x).shape == (2, 6, 16, 24, 16)  # the top block emits 6 maps
    assert headed(x).shape == (2, 3, 16, 24, 16)
    with pytest.raises(MedsegError, match="head_channels"):
        replace(spec, head_channels=-1).validate()


def test_unet_with_head_scripts_as_the_bundle_exports_it() -> None:
    """``medseg export`` writes TorchScript; the wrapped network must script and agree."""
    torch.manual_seed(0)
    spec = NetworkSpec("unet", (4, 8, 16), ((2, 2, 2), (2, 2, 2)), head_channels=6)
    net = build_network(spec, 1, 3).eval()
    scripted = torch.jit.script(net)
    x = torch.randn(1, 1, 16, 16, 16)
    with torch.no_grad():
        assert torch.allclose(scripted(x), net(x), atol=1e-6)


@pytest.mark.parametrize("name", sorted(SMALL))
def test_dropout_reaches_every_network(name: str) -> None:
    """``NetworkSpec.dropout`` becomes MONAI dropout layers with that probability."""

    def rates(spec: NetworkSpec) -> set[float]:
        net = build_network(spec, in_channels=1, out_channels=3)
        return {m.p for m in net.modules() if isinstance(m, torch.nn.modules.dropout._DropoutNd)}

    # MONAI's VNet, like the original V-Net, always drops half the skip channels in its two
    # top up-transitions; its constructor cannot change that (MONAI issue #6116).
    fixed = {0.5} if name == "vnet" else set()
    # layers with p=0 drop nothing (SwinUNETR's attention dropout is a separate rate)
    assert rates(replace(SMALL[name], dropout=0.3)) - {0.0} == {0.3} | fixed
    assert rates(SMALL[name]) - {0.0} == fixed  # off: no layer, or layers that drop nothing


def test_vnet_is_built_with_the_widths_planning_records(caplog: pytest.LogCaptureFixture) -> None:
    """MONAI's VNet cannot change its widths: planning records them (``VNET_CHANNELS``) and
    a spec with other channels says that they are not what is built."""
    net = build_network(NetworkSpec("vnet", VNET_CHANNELS, ((2, 2, 2),) * 4), 1, 3)
    downs = [net.down_tr32, net.down_tr64, net.down_tr128, net.down_tr256]
    widths = [net.in_tr.conv_block.conv.out_channels] + [d.down_conv.out_channels for d in downs]
    assert tuple(widths) == VNET_CHANNELS
    assert not caplog.records
    with caplog.at_level(logging.WARNING, logger="medseg"):
        build_network(NetworkSpec("vnet", (4, 8, 16), ((2, 2, 2),) * 2), 1, 3)
    assert "are not what MONAI's VNet builds" in caplog.text


def test_attention_heads_keep_monais_head_width_and_shrink_with_the_network() -> None:
    """At MONAI's default widths the heads are MONAI's (SwinUNETR 48: 3, 6, 12, 24; UNETR
    768: 12); narrower networks get fewer heads of the same width, at least one."""
    from medseg.networks.zoo import SWIN_HEAD_WIDTH, VIT_HEAD_WIDTH, heads_for

    assert [heads_for(48 * 2**i, SWIN_HEAD_WIDTH) for i in range(4)] == [3, 6, 12, 24]
    assert heads_for(768, VIT_HEAD_WIDTH) == 12
    assert [heads_for(12 * 2**i, SWIN_HEAD_WIDTH) for i in range(4)] == [1, 1, 3, 6]
    assert heads_for(192, VIT_HEAD_WIDTH) == 3
    assert heads_for(100, VIT_HEAD_WIDTH) == 1  # 100 has no divisor 1 < h <= 1
    assert all(w % heads_for(w, 16) == 0 for w in range(1, 400))
