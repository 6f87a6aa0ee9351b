"""The network registry: every name builds a MONAI network with the right output shape."""

from __future__ import annotations

import logging
from dataclasses import replace

import pytest
import torch
from monai.networks.nets import UNet

from medseg.errors import MedsegError
from medseg.networks import NETWORKS, build_network
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
}


def test_every_registered_network_is_covered() -> None:
    assert set(SMALL) == set(NETWORKS)


@pytest.mark.parametrize("name", sorted(SMALL))
def test_builds_and_keeps_spatial_shape(name: str) -> None:
    torch.manual_seed(0)
    net = build_network(SMALL[name], in_channels=1, out_channels=3).eval()
    x = torch.randn(1, 1, 32, 32, 16)
    with torch.no_grad():
        y = net(x)
    assert y.shape == (1, 3, 32, 32, 16)


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
    assert rates(replace(SMALL[name], dropout=0.3)) == {0.3} | fixed
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
