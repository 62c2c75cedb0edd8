"""SegModel end to end on small clouds, PriorBatchNorm1d, parameter groups, conv algorithm."""
from __future__ import annotations

import pytest
import torch
from spconv.core import ConvAlgo
from torch import nn

from tttkd_ros.core.config import ModelConfig
from tttkd_ros.core.model.backbone import conv_algo_for, set_conv_algo
from tttkd_ros.core.model.norm import PriorBatchNorm1d, set_bn_prior
from tttkd_ros.core.model.segmentation import SegModel, build_model, param_groups
from tttkd_ros.core.model.voxelize import VoxelGrid, voxelize

VOXEL = 0.2


def street_cloud(n: int, seed: int) -> torch.Tensor:
    """(n, 4) points: a ground plane plus one box, within +-10 m."""
    g = torch.Generator().manual_seed(seed)
    ground = torch.rand(n - n // 4, 3, generator=g) * torch.tensor([20.0, 20.0, 0.1]) - 10.0
    box = torch.rand(n // 4, 3, generator=g) * torch.tensor([2.0, 4.0, 1.5]) + 1.0
    xyz = torch.cat([ground, box])
    return torch.cat([xyz, torch.rand(n, 1, generator=g)], dim=1)


def seeded_model(cfg: ModelConfig, seed: int = 0) -> SegModel:
    torch.manual_seed(seed)
    return build_model(cfg, "cpu")


@pytest.fixture(scope="module")
def grid() -> VoxelGrid:
    return voxelize([street_cloud(5000, 0)], VOXEL)


@pytest.mark.parametrize("head", ["linear", "mlp"])
def test_shapes_and_dtypes_end_to_end(grid: VoxelGrid, head: str) -> None:
    cfg = ModelConfig(backbone="tiny", head=head, num_classes=7, feat_dim=24)
    model = seeded_model(cfg)
    out = model(grid)
    # the U-Net returns the input's rows in the input's order, so row i is voxel i
    assert torch.equal(model.backbone(grid.to_sparse_tensor()).indices, grid.coords)
    num_voxels = len(grid.coords)
    assert out.logits.shape == (5000, 7) and out.feat2d.shape == (5000, 24)
    assert out.voxel_logits.shape == (num_voxels, 7)
    assert out.voxel_feat2d.shape == (num_voxels, 24)
    assert out.voxel_features.shape[0] == num_voxels
    for t in (out.logits, out.feat2d, out.voxel_logits, out.voxel_feat2d):
        assert t.dtype == torch.float32 and bool(torch.isfinite(t).all())
    # per point = its voxel's row
    assert torch.equal(out.logits, out.voxel_logits[grid.inverse])
    assert torch.equal(out.feat2d, out.voxel_feat2d[grid.inverse])


@pytest.mark.parametrize("head", ["linear", "mlp"])
def test_backward_reaches_every_parameter(grid: VoxelGrid, head: str) -> None:
    model = seeded_model(ModelConfig(head=head, feat_dim=16))
    model.train()
    out = model(grid)
    labels = torch.randint(0, out.logits.shape[1], (len(out.logits),))
    loss = nn.functional.cross_entropy(out.logits, labels) + out.feat2d.square().mean()
    loss.backward()
    for name, p in model.named_parameters():
        assert p.grad is not None, name
        assert bool(torch.isfinite(p.grad).all()), name
    assert any(float(p.grad.abs().max()) > 0 for p in model.backbone.parameters())


def test_eval_output_is_deterministic_for_a_seed(grid: VoxelGrid) -> None:
    cfg = ModelConfig(feat_dim=16)
    first, second = seeded_model(cfg, 3).eval(), seeded_model(cfg, 3).eval()
    with torch.no_grad():
        a, b, again = first(grid), second(grid), first(grid)
        other = seeded_model(cfg, 4).eval()(grid)
    assert torch.equal(a.logits, b.logits) and torch.equal(a.feat2d, b.feat2d)
    assert torch.equal(a.logits, again.logits)
    assert not torch.equal(a.logits, other.logits)


def test_batched_clouds_do_not_interact(grid: VoxelGrid) -> None:
    cloud0, cloud1 = street_cloud(3000, 1), street_cloud(2000, 2)
    model = seeded_model(ModelConfig(feat_dim=16)).eval()
    with torch.no_grad():
        both = model(voxelize([cloud0, cloud1], VOXEL))
        alone0 = model(voxelize([cloud0], VOXEL))
        alone1 = model(voxelize([cloud1], VOXEL))
    torch.testing.assert_close(both.logits[:3000], alone0.logits, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(both.logits[3000:], alone1.logits, rtol=1e-4, atol=1e-5)


def test_unknown_head_and_backbone_are_refused() -> None:
    with pytest.raises(ValueError, match="head"):
        build_model(ModelConfig(head="conv"), "cpu")
    with pytest.raises(ValueError, match="backbone"):
        build_model(ModelConfig(backbone="huge"), "cpu")


def test_param_groups() -> None:
    model = seeded_model(ModelConfig())
    ids = {which: {id(p) for p in param_groups(model, which)}
           for which in ("backbone", "backbone_bn", "all")}
    bns = [m for m in model.backbone.modules() if isinstance(m, PriorBatchNorm1d)]
    assert ids["backbone"] == {id(p) for p in model.backbone.parameters()}
    assert ids["backbone_bn"] == {id(p) for m in bns for p in (m.weight, m.bias)}
    assert ids["backbone_bn"] < ids["backbone"] < ids["all"]
    assert ids["all"] == {id(p) for p in model.parameters()}
    heads = {id(p) for h in (model.head_cls, model.head_2d) for p in h.parameters()}
    assert not heads & ids["backbone"]
    with pytest.raises(ValueError, match="parameter group"):
        param_groups(model, "heads")


def test_model_runs_after_its_algorithm_was_set_for_another_device(grid: VoxelGrid) -> None:
    assert conv_algo_for("cpu") == ConvAlgo.Native
    model = seeded_model(ModelConfig(feat_dim=16)).eval()
    with torch.no_grad():
        before = model(grid).logits
        set_conv_algo(model, "cuda")  # as if it had been used on a GPU, then moved back
        after = model(grid).logits
    assert torch.equal(before, after)


# ---- PriorBatchNorm1d ---------------------------------------------------------------------

def trained_bn(channels: int = 6) -> tuple[PriorBatchNorm1d, nn.BatchNorm1d]:
    """A PriorBatchNorm1d with non-trivial running stats and affine, and an equal plain BN."""
    torch.manual_seed(0)
    bn = PriorBatchNorm1d(channels)
    for _ in range(3):
        bn(torch.randn(50, channels) * 3.0 + 2.0)
    with torch.no_grad():
        bn.weight.uniform_(0.5, 1.5)
        bn.bias.uniform_(-1.0, 1.0)
    plain = nn.BatchNorm1d(channels, eps=bn.eps)
    plain.load_state_dict(bn.state_dict())
    return bn, plain


def test_prior_one_is_exactly_eval_batch_norm() -> None:
    bn, plain = trained_bn()
    x = torch.randn(40, 6) * 2.0 - 1.0
    bn.train()
    bn.prior = 1.0
    assert torch.equal(bn(x), plain.eval()(x))


def test_prior_zero_normalises_with_detached_unbiased_batch_stats() -> None:
    bn, _ = trained_bn()
    bn.train()
    bn.prior = 0.0
    x = (torch.randn(40, 6) * 2.0 - 1.0).requires_grad_(True)
    bn(x).sum().backward()
    ref_x = x.detach().clone().requires_grad_(True)
    mean, var = ref_x.detach().mean(0), ref_x.detach().var(0, unbiased=True)
    ref = (ref_x - mean) / torch.sqrt(var + bn.eps) * bn.weight + bn.bias
    ref.sum().backward()
    torch.testing.assert_close(bn(x), ref)
    torch.testing.assert_close(x.grad, ref_x.grad)  # no gradient through the batch stats


def test_prior_mixes_source_and_batch_stats() -> None:
    bn, _ = trained_bn()
    bn.prior = 0.85
    x = torch.randn(40, 6) * 2.0 - 1.0
    mean = 0.85 * bn.running_mean + 0.15 * x.mean(0)
    var = 0.85 * bn.running_var + 0.15 * x.var(0, unbiased=True)
    ref = (x - mean) / torch.sqrt(var + bn.eps) * bn.weight + bn.bias
    torch.testing.assert_close(bn(x), ref)


@pytest.mark.parametrize("prior", [0.0, 0.5, 1.0])
def test_running_stats_stay_put_with_a_prior(prior: float) -> None:
    bn, _ = trained_bn()
    before = {k: v.clone() for k, v in bn.state_dict().items()}
    bn.train()
    bn.prior = prior
    bn(torch.randn(40, 6) + 5.0)
    for key, value in bn.state_dict().items():
        assert torch.equal(value, before[key]), key
    bn.prior = None  # ordinary BN again: train mode updates the running stats
    bn(torch.randn(40, 6) + 5.0)
    assert not torch.equal(bn.running_mean, before["running_mean"])


def test_set_bn_prior_reaches_every_layer() -> None:
    model = seeded_model(ModelConfig())
    layers = [m for m in model.modules() if isinstance(m, PriorBatchNorm1d)]
    assert set_bn_prior(model, 0.85) == len(layers) > 0
    assert all(m.prior == 0.85 for m in layers)
    set_bn_prior(model, None)
    assert all(m.prior is None for m in layers)
    with pytest.raises(ValueError, match="prior"):
        set_bn_prior(model, 1.5)
