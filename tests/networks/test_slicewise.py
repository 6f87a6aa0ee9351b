"""SliceWise2D: a 2D network on every slice of a 3D input, built from a 2d-configuration spec."""

from __future__ import annotations

import pytest
import torch
from monai.networks.nets import UNet

from medseg.errors import MedsegError
from medseg.networks.registry import build_network, torchscript_mode
from medseg.networks.slicewise import SliceWise2D, in_plane
from medseg.planning.plans import NetworkSpec


def _spec(name: str, axis: int, deep_supervision: bool = False) -> NetworkSpec:
    strides = tuple(tuple(1 if a == axis else 2 for a in range(3)) for _ in range(2))
    kernels = ((3, 3, 3),) * 3 if name == "dynunet" else ()
    return NetworkSpec(
        name=name,  # type: ignore[arg-type]
        channels=(4, 8, 16),
        strides=strides,  # type: ignore[arg-type]
        kernel_sizes=kernels,
        num_res_units=1,
        full_res_level=name == "unet",
        deep_supervision=deep_supervision,
        slice_axis=axis,
    )


def _shape(axis: int, slices: int = 3) -> list[int]:
    shape = [2, 1, 16, 16, 16]
    shape[2 + axis] = slices
    return shape


@pytest.mark.parametrize("axis", [0, 1, 2])
def test_each_slice_is_the_2d_network_of_that_slice(axis: int) -> None:
    torch.manual_seed(0)
    net2d = UNet(2, 1, 3, channels=(4, 8), strides=(2,), num_res_units=0).eval()
    net = SliceWise2D(net2d, axis).eval()
    x = torch.randn(*_shape(axis))
    with torch.no_grad():
        out = net(x)
        assert out.shape == (2, 3, *x.shape[2:])
        for k in range(x.shape[2 + axis]):
            plane = x.select(2 + axis, k)  # (B, C, H, W)
            torch.testing.assert_close(out.select(2 + axis, k), net2d(plane))


@pytest.mark.parametrize("name", ["unet", "dynunet"])
def test_registry_builds_2d_networks_that_script(name: str) -> None:
    torch.manual_seed(0)
    net = build_network(_spec(name, 1), 1, 3).eval()
    assert isinstance(net, SliceWise2D)
    assert not any(isinstance(m, torch.nn.Conv3d) for m in net.modules())
    assert torchscript_mode(_spec(name, 1)) == "script"
    x = torch.randn(*_shape(1, 5))
    with torch.no_grad():
        ref = net(x)
        torch.testing.assert_close(torch.jit.script(net)(x), ref)
        # slices are independent: changing one leaves the others' logits as they were
        x2 = x.clone()
        x2[:, :, :, 0] += 5.0
        changed = net(x2)
    torch.testing.assert_close(changed[:, :, :, 1:], ref[:, :, :, 1:])
    assert not torch.allclose(changed[:, :, :, 0], ref[:, :, :, 0])


def test_deep_supervision_keeps_medseg_layout() -> None:
    net = build_network(_spec("dynunet", 0, deep_supervision=True), 1, 3).train()
    out = net(torch.randn(*_shape(0)))
    assert out.shape == (2, 2, 3, 3, 16, 16)  # (B, 1 + n_ds, K, X, Y, Z)
    assert torchscript_mode(_spec("dynunet", 0, deep_supervision=True)) == "trace"


def test_3d_only_network_with_a_slice_axis_is_refused() -> None:
    spec = NetworkSpec(name="segresnet", channels=(8, 16), strides=((2, 2, 1),), slice_axis=2)
    with pytest.raises(MedsegError, match=r"slice_axis 2.*segresnet"):
        build_network(spec, 1, 2)


def test_in_plane_drops_the_slice_axis() -> None:
    assert in_plane(((2, 1, 2), (3, 1, 4)), 1) == [(2, 2), (3, 4)]
    assert in_plane(((2, 2, 2),), None) == [(2, 2, 2)]
