"""Known answers of the deformation chain: nearest vertex, inverse LBS, Dp, De, identity at rest."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from scipy.spatial import cKDTree

from aniportraitgan.body import PortraitBodyModel
from aniportraitgan.cameras import look_at_cameras
from aniportraitgan.frames import SCENE_SCALE
from aniportraitgan.generator import Generator, GeneratorConfig, RenderOptions
from aniportraitgan.latents import LatentSample
from aniportraitgan.generator.generator import mouth_cavity
from aniportraitgan.generator.renderer import volume_points
from aniportraitgan.generator.deformation import (
    ExpressionDeformation,
    PoseDeformation,
    apply_transforms,
    invert_affine,
    box_filter,
    nearest_vertex,
    upsample_volume,
    upsample_volume_at,
)
from aniportraitgan.rotations import axis_angle_to_matrix, rigid

HEAD_ROT = torch.tensor([0.1, 0.6, -0.2])  # axis-angle, scene axes


@pytest.fixture(scope="module")
def body():
    return PortraitBodyModel.load(device="cpu")


def _codes(B=1):
    return torch.zeros(B, 40), torch.zeros(B, 52), torch.zeros(B, 6, 3)


@pytest.mark.parametrize("method", ["bruteforce", "kdtree"])
def test_nearest_vertex_matches_brute_force(method):
    torch.manual_seed(0)
    pts = torch.randn(2, 3000, 3)
    verts = torch.randn(2, 500, 3)
    idx = nearest_vertex(pts, verts, chunk=700, method=method)
    ref = torch.cdist(pts, verts).argmin(-1)
    # Ties / rounding: compare the distances, not only indices.
    d = (pts - verts.gather(1, idx[..., None].expand(-1, -1, 3))).norm(dim=-1)
    d_ref = torch.cdist(pts, verts).min(-1).values
    assert (d - d_ref).abs().max() < 5e-5  # float32 expanded distances
    assert (idx == ref).float().mean() > 0.999


def test_invert_affine_and_apply():
    torch.manual_seed(0)
    R = axis_angle_to_matrix(torch.randn(5, 3))
    T = rigid(R * 1.3, torch.randn(5, 3))
    x = torch.randn(5, 3)
    assert torch.allclose(apply_transforms(invert_affine(T), apply_transforms(T, x)), x, atol=1e-5)
    assert torch.allclose(apply_transforms(T.flatten(-2), x), apply_transforms(T, x))


@pytest.mark.parametrize("shared_blend", [True, False])
def test_dp_at_init_keeps_constant_volumes_and_matches_its_smoothing_reference(shared_blend):
    torch.manual_seed(0)
    dp = PoseDeformation((3, 5, 5), shared_blend=shared_blend)
    eye = torch.eye(4).reshape(16, 1, 1, 1).expand(2, 16, 6, 7, 5).contiguous()
    assert torch.allclose(dp.process(eye), eye, atol=1e-6)
    vol = torch.randn(1, 16, 6, 7, 5)
    out = dp.process(vol)
    assert out.shape == vol.shape
    assert dp.smooth_loss(vol, out) < 1e-10
    with torch.no_grad():  # a trained Dp leaves its reference
        if shared_blend:
            dp.blend1.add_(torch.randn_like(dp.blend1))
        else:
            dp.conv1.bias.add_(0.1)
    assert dp.smooth_loss(vol, dp.process(vol)) > 1e-3


def _two_rigid_halves():
    """A volume [1, 16, 6, 8, 8] whose left half holds one rigid transform, the right another."""
    R1, R2 = axis_angle_to_matrix(torch.tensor([[0.0, 0.6, 0.0], [0.4, 0.0, 0.2]]))
    T1, T2 = rigid(R1, torch.tensor([0.1, 0.0, -0.2])), rigid(R2, torch.tensor([0.0, 0.3, 0.1]))
    vol = T1.reshape(16, 1, 1, 1).expand(16, 6, 8, 8).clone()
    vol[..., 4:] = T2.reshape(16, 1, 1, 1)
    return vol[None], T1, T2


def test_trained_shared_blend_dp_only_blends_transforms():
    """Whatever its kernels learn, the shared blend keeps a constant rigid volume exactly and gives
    each voxel a convex combination of its neighbours' transforms; the 16 -> 16 form does not."""
    torch.manual_seed(0)
    vol, T1, T2 = _two_rigid_halves()
    dp = PoseDeformation((3, 5, 5), shared_blend=True)
    legacy = PoseDeformation((3, 5, 5))
    with torch.no_grad():
        for p in list(dp.parameters()) + list(legacy.parameters()):
            p.add_(torch.randn_like(p) * (2.0 if p.dim() == 3 else 0.01))
    const = T1.reshape(1, 16, 1, 1, 1).expand(1, 16, 6, 8, 8).contiguous()
    assert (dp.process(const) - const).abs().max() < 1e-5
    assert (legacy.process(const) - const).abs().max() > 1e-2
    out = dp.process(vol)[0].permute(1, 2, 3, 0).reshape(-1, 16)
    d = (T1 - T2).flatten()
    a = ((out - T2.flatten()) @ d) / d.dot(d)  # the share of T1 at each voxel
    assert (out - (T2.flatten() + a[:, None] * d)).abs().max() < 1e-5
    assert a.min() > -1e-6 and a.max() < 1 + 1e-6 and (a - 0.5).abs().max() > 0.4


def test_volume_upsampling_is_bilinear_x2():
    torch.manual_seed(0)
    vol = torch.randn(1, 16, 3, 4, 5)
    H, W = 8, 10
    v, u = torch.meshgrid(torch.arange(H) + 0.5, torch.arange(W) + 0.5, indexing="ij")
    uv = torch.stack([u / W * 2 - 1, v / H * 2 - 1], -1).reshape(1, -1, 2)
    got = upsample_volume_at(vol, uv, 6)  # [1, H*W, D, 16]
    ref = F.interpolate(vol, size=(6, H, W), mode="trilinear", align_corners=False)
    assert torch.allclose(got, ref.permute(0, 3, 4, 2, 1).reshape(1, H * W, 6, 16), atol=1e-5)


def test_kdtree_gives_scipy_ckdtree_indices_on_the_body(body):
    torch.manual_seed(0)
    G = Generator(GeneratorConfig.tiny(), body)
    z_id, z_exp, z_pose = torch.randn(2, 40), torch.rand(2, 52) * 0.5, torch.randn(2, 6, 3) * 0.15
    verts = body(z_id, z_exp, z_pose).vertices[:, G.nn_index]
    pts = volume_points(G.config, _cams(2), 32, 32, torch.linspace(1.2, 2.0, 16).expand(2, 16)).reshape(2, -1, 3)
    idx = nearest_vertex(pts, verts, method="kdtree")
    for b in range(2):
        ref = cKDTree(verts[b].double().numpy()).query(pts[b].double().numpy(), k=1)[1]
        assert torch.equal(idx[b], torch.from_numpy(ref).long())


@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-6), (torch.float64, 1e-13)])
def test_separable_box_filter_is_the_avg_pool3d_reference(dtype, tol):
    torch.manual_seed(0)
    dp = PoseDeformation((3, 5, 5))
    vol = torch.rand(2, 16, 8, 12, 10, dtype=dtype)
    ref = F.avg_pool3d(dp._pad(F.avg_pool3d(dp._pad(vol), dp.kernel, stride=1)), dp.kernel, stride=1)
    assert (dp.reference(vol) - ref).abs().max() < tol
    assert (box_filter(vol, (5, 9, 9)) - F.avg_pool3d(vol, (5, 9, 9), stride=1)).abs().max() < tol


@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-6), (torch.float64, 1e-13)])
@pytest.mark.parametrize("shape,size", [((8, 32, 32), (16, 64, 64)), ((5, 7, 9), (9, 13, 17)),
                                        ((3, 32, 20), (5, 70, 40)), ((1, 4, 5), (2, 8, 10)),
                                        ((4, 6, 6), (4, 6, 6))])
def test_separable_upsample_is_dense_trilinear_interpolation(dtype, tol, shape, size):
    torch.manual_seed(0)
    vol = torch.rand(2, 4, *shape, dtype=dtype, requires_grad=True)
    weight = torch.rand(2, 4, *size, dtype=dtype)
    ref = F.interpolate(vol, size=size, mode="trilinear", align_corners=False)
    got = upsample_volume(vol, size)
    assert (got - ref).abs().max() < tol
    g_ref, = torch.autograd.grad((ref * weight).sum(), vol)
    g_got, = torch.autograd.grad((got * weight).sum(), vol)
    assert (g_got - g_ref).abs().max() < 4 * tol  # each input gathers up to 4 outputs per axis


def test_inverse_lbs_undoes_a_head_rotation_and_leaves_the_torso(body):
    z_id, z_exp, z_pose = _codes()
    z_pose[0, 3] = HEAD_ROT
    out = body(z_id, z_exp, z_pose)
    head = body.bone_names.index("head")
    valid = body.nn_valid.nonzero().squeeze(1)
    w = body.skinning_weights[valid]
    posed = out.vertices[:, valid]
    R = axis_angle_to_matrix(HEAD_ROT)
    assert torch.allclose(out.bone_transforms[0, head, :3, :3], R, atol=1e-5)
    j = out.joints[0, head]  # the head joint does not move when only the head turns
    torch.manual_seed(0)
    pts = posed[0][torch.randint(0, posed.shape[1], (4000,))] + torch.randn(4000, 3) * 0.003
    idx = torch.cdist(pts, posed[0]).argmin(-1)
    dp = PoseDeformation()
    T = dp.inverse_lbs(pts[None], posed, w, out.bone_transforms)
    x_p = apply_transforms(T, pts[None])[0]
    head_only = w[idx, head] > 1 - 1e-6
    moved = w[idx][:, [head, body.bone_names.index("eye.L"), body.bone_names.index("eye.R")]].sum(-1) > 1e-6
    assert head_only.sum() > 500 and (~moved).sum() > 500
    # Head points move by the inverse rotation about the head joint...
    expect = (pts[head_only] - j) @ R + j  # R^T (x - j) + j
    assert (x_p[head_only] - expect).norm(dim=-1).max() < 1e-5
    # ...and points skinned to the torso stay where they are.
    assert (x_p[~moved] - pts[~moved]).norm(dim=-1).max() < 1e-6


@pytest.fixture(scope="module")
def tiny_generator(body):
    torch.manual_seed(0)
    return Generator(GeneratorConfig.tiny(), body)


def _cams(B=1):
    return look_at_cameras(torch.linspace(-0.3, 0.3, B), torch.zeros(B))


def test_deformation_is_identity_at_rest_with_dp_and_de(tiny_generator):
    z_id = torch.randn(2, 40)
    z_exp = torch.zeros(2, 52)
    z_pose = torch.zeros(2, 6, 3)
    x_t, x_p, x_c, depths = tiny_generator.deform_view(z_id, z_exp, z_pose, _cams(2), 24)
    assert x_t.shape == (2, 24 * 24, 16, 3) and depths.shape == (2, 16)
    assert (x_p - x_t).abs().max() < 1e-6
    assert (x_c - x_t).abs().max() < 1e-6


def test_generator_head_rotation_through_dp_and_upsampling(body):
    """End to end (half resolution, Dp at init, x2 upsampling): head samples deep inside the head
    region move by the inverse rotation, samples deep in the lower torso stay."""
    torch.manual_seed(0)
    G = Generator(GeneratorConfig.tiny(dp_kernel=(3, 3, 3)), body)
    z_id, z_exp, z_pose = _codes()
    z_pose[0, 3] = HEAD_ROT
    cams = _cams()
    R = 48
    x_t, x_p, _, depths = G.deform_view(z_id, z_exp, z_pose, cams, R)
    out = body(z_id, z_exp, z_pose)
    head = body.bone_names.index("head")
    w = G.nn_weights
    # Label every sample of the transform volume, erode by Dp's footprint, read at full resolution.
    pts = volume_points(G.config, cams, R, R, depths)
    assert pts.shape[1:4] == (R // 2, R // 2, depths.shape[1] // 2)
    h, Dv = pts.shape[1], pts.shape[3]
    idx = nearest_vertex(pts.reshape(1, -1, 3), out.vertices[:, G.nn_index])[0]
    labels = torch.stack([w[idx, head] > 1 - 1e-6, w[idx][:, [head, 18, 19]].sum(-1) < 1e-6], 0).float()
    labels = labels.reshape(2, h, h, Dv).permute(0, 3, 1, 2)[None]  # [1, 2, Dv, h, h]
    k = (5, 5, 5)  # two 3x3x3 convolutions
    pad = F.pad(labels, (2, 2, 2, 2, 2, 2), mode="replicate")
    deep = -F.max_pool3d(-pad, k, stride=1)  # 1 where the whole footprint carries the label
    v, u = torch.meshgrid(torch.arange(R) + 0.5, torch.arange(R) + 0.5, indexing="ij")
    uv = torch.stack([u / R * 2 - 1, v / R * 2 - 1], -1).reshape(1, -1, 2)
    deep_full = upsample_volume_at(deep, uv, depths.shape[1])[0] > 0.9999  # [R*R, D, 2]
    head_pts, torso_pts = deep_full[..., 0], deep_full[..., 1]
    assert head_pts.sum() > 50 and torso_pts.sum() > 50
    Rm = axis_angle_to_matrix(HEAD_ROT)
    j = out.joints[0, head]
    expect = (x_t[0][head_pts] - j) @ Rm + j
    assert (x_p[0][head_pts] - expect).norm(dim=-1).max() < 1e-5
    assert (x_p[0][torso_pts] - x_t[0][torso_pts]).norm(dim=-1).max() < 1e-5
    # The torso set reaches low: lower-torso points (below the shoulders) are among them.
    assert x_t[0][torso_pts][:, 1].min() < -0.2


def test_expression_deformation_starts_as_identity_and_exposes_losses():
    torch.manual_seed(0)
    De = ExpressionDeformation(4, 5, 16, 3, 16, 2)
    w = De.map(torch.randn(2, 4), torch.rand(2, 5))
    x = torch.randn(2, 100, 3) * 0.2
    assert torch.equal(De(x, w), x)
    assert De.minimal_loss(x, De(x, w)) == 0
    assert De.smooth_loss(x, w) == 0
    neutral = torch.randn(2, 30, 3) * 0.1
    expr = neutral + 0.01
    # Target inverse displacement is -0.01 m per axis; De predicts 0 -> loss = 3 (0.01/scale)^2.
    loss = De.imitation_loss(expr, neutral - expr, w)
    assert loss.item() == pytest.approx(3 * (0.01 / SCENE_SCALE) ** 2, rel=1e-5)
    loss.backward()
    assert De.out.weight.grad.abs().sum() > 0


def test_without_dp_plain_skinning_is_exact_per_sample(body):
    """The "w/o Dp" ablation: every sample uses its own nearest vertex's skinning, no smoothing."""
    torch.manual_seed(0)
    G = Generator(GeneratorConfig.tiny(use_dp=False), body)
    z_id, z_exp, z_pose = _codes()
    x_t, x_p, x_c, _ = G.deform_view(z_id, z_exp, z_pose, _cams(), 16)
    assert (x_p - x_t).abs().max() < 1e-6 and (x_c - x_t).abs().max() < 1e-6
    z_pose[0, 3] = HEAD_ROT
    x_t, x_p, _, _ = G.deform_view(z_id, z_exp, z_pose, _cams(), 16)
    out = body(z_id, z_exp, z_pose)
    head = body.bone_names.index("head")
    idx = nearest_vertex(x_t.reshape(1, -1, 3), out.vertices[:, G.nn_index])[0]
    head_only = G.nn_weights[idx, head] > 1 - 1e-6
    assert head_only.sum() > 100
    j = out.joints[0, head]
    expect = (x_t.reshape(-1, 3)[head_only] - j) @ axis_angle_to_matrix(HEAD_ROT) + j
    assert (x_p.reshape(-1, 3)[head_only] - expect).norm(dim=-1).max() < 1e-5
    with torch.no_grad():
        img = G(LatentSample(torch.zeros(1, 40), z_exp, z_pose, torch.zeros(1, 16)), _cams(), options=RenderOptions(portrait_resolution=8, face_resolution=None, return_aux=True))
    assert img.portrait.shape == (1, 3, 8, 8) and img.aux.pose_smooth == 0


def test_mesh_guided_expression_maps_expression_vertices_onto_the_neutral_mesh(body):
    """With mesh guidance (and De at its zero init), a sample on a vertex of the posed expression
    mesh lands exactly on that vertex of the neutral zero-pose mesh: x_c = neutral vertex."""
    torch.manual_seed(0)
    G = Generator(GeneratorConfig.tiny(use_dp=False), body)
    assert G.config.exp_mesh_guided
    z_id = torch.randn(1, 40) * 0.5
    z_exp = torch.zeros(1, 52)
    for name in ("jawOpen", "mouthSmileLeft", "eyeBlinkRight"):
        z_exp[0, body.expression_names.index(name)] = 1.0
    idx = G.nn_index
    single_bone = G.nn_weights.max(-1).values > 1 - 1e-6
    for rotate_head in (False, True):
        z_pose = torch.zeros(1, 6, 3)
        if rotate_head:
            z_pose[0, 3] = HEAD_ROT
        out = body(z_id, z_exp, z_pose)
        posed = out.vertices[:, idx]
        T = G.pose.inverse_lbs(posed, posed, G.nn_weights, out.bone_transforms, G.expression_offsets(out))
        x_c = G.expression(apply_transforms(T, posed), G.expression.map(z_id, z_exp))
        err = (x_c - out.neutral_vertices[:, idx]).norm(dim=-1)[0]
        # Inverse LBS (eq. 4) is exact for vertices skinned to one bone, and for all at zero pose;
        # a few vertices coincide with another in the posed expression mesh (a closed eyelid on
        # the lower lid) and may find that one instead.
        check = single_bone if rotate_head else torch.ones_like(single_bone)
        assert check.sum() > 2000
        assert (err[check] < 1e-5).float().mean() > 0.98, float((err[check] < 1e-5).float().mean())
    # The expression really moves these vertices (so the test is not vacuous).
    assert (out.canonical_vertices[:, idx] - out.neutral_vertices[:, idx]).norm(dim=-1).max() > 0.02


def test_mesh_guidance_adds_the_mouth_interior_to_the_nearest_vertex_search(body):
    guided = Generator(GeneratorConfig.tiny(), body)
    plain = Generator(GeneratorConfig.tiny(exp_mesh_guided=False), body)
    mouth = mouth_cavity(body)
    assert 100 < int(mouth.sum()) < int((~body.nn_valid).sum())  # a part of the cavities only
    assert torch.equal(plain.nn_index, body.nn_valid.nonzero().squeeze(1))
    assert guided.nn_index.numel() == plain.nn_index.numel() + int(mouth.sum())
    # Mouth-interior vertices lie between the mouth landmarks' heights (not eye sockets or ears).
    rest = body(torch.zeros(1, 40), torch.zeros(1, 52), torch.zeros(1, 6, 3))
    y = rest.vertices[0, mouth, 1]
    eyes = rest.landmarks[0, 36:48, 1].min()
    assert (y < eyes).all()


def test_plain_de_imitation_target_is_the_inverse_expression_displacement(body):
    """Without guidance the imitation loss of an untrained De equals the mean squared inverse
    expression displacement of the sampled vertices; with guidance it is zero (no residual)."""
    torch.manual_seed(0)
    z_id, z_exp, z_pose = torch.zeros(1, 40), torch.zeros(1, 52), torch.zeros(1, 6, 3)
    z_exp[0, body.expression_names.index("jawOpen")] = 1.0
    cams = _cams()
    for guided in (False, True):
        G = Generator(GeneratorConfig.tiny(exp_mesh_guided=guided, aux_points=100_000), body)
        out = G(LatentSample(z_id, z_exp, z_pose, torch.zeros(1, 16)), cams, options=RenderOptions(portrait_resolution=8, face_resolution=None, return_aux=True))
        imitation = out.aux.exp_imitation.item()
        if guided:
            assert imitation == 0.0
        else:
            o = out.aux.body
            d = (o.neutral_vertices - o.canonical_vertices)[:, G.nn_index] / SCENE_SCALE
            assert imitation == pytest.approx(d.pow(2).sum(-1).mean().item(), rel=1e-4)
            assert imitation > 0


def test_expression_input_scale_stretches_the_field():
    """De with input scale s at x equals De with scale 1 at s * x: a lower scale is the same
    field with every spatial frequency lowered by s."""
    torch.manual_seed(0)
    slow = ExpressionDeformation(4, 5, 16, 3, 16, 2, input_scale=0.25)
    plain = ExpressionDeformation(4, 5, 16, 3, 16, 2, input_scale=1.0)
    plain.load_state_dict(slow.state_dict())
    torch.nn.init.normal_(slow.out.weight, std=0.1)
    plain.out.weight.data.copy_(slow.out.weight)
    w = slow.map(torch.randn(2, 4), torch.rand(2, 5))
    x = torch.randn(2, 50, 3) * 0.1
    torch.testing.assert_close(slow.displacement(x, w), plain.displacement(x * 0.25, w))
    with pytest.raises(Exception, match="exp_input_scale"):
        GeneratorConfig.tiny(exp_input_scale=0.0)


def test_expression_offsets_bypass_dp_and_keep_a_blink_at_full_strength(body):
    """exp_offsets_after_dp: x_p - x_t of an expression at zero pose is exactly the x2 trilinear
    upsampling of the raw nearest-vertex offsets on the transform volume (Dp never sees them);
    through Dp's averaging (the legacy path) a blink's few-millimetre motion is mostly lost."""
    from aniportraitgan.cameras import face_cameras

    torch.manual_seed(0)
    sharp = Generator(GeneratorConfig.tiny(), body)
    blurred = Generator(GeneratorConfig.tiny(exp_offsets_after_dp=False), body)
    assert sharp.config.exp_offsets_after_dp and sharp.offsets_bypass_dp and not blurred.offsets_bypass_dp
    z_id, z_exp, z_pose = _codes()
    for name in ("eyeBlinkLeft", "eyeBlinkRight"):
        z_exp[0, body.expression_names.index(name)] = 1.0
    out = body(z_id, z_exp, z_pose)
    cams = face_cameras(out.head_center, out.head_rotation, 0.0, 0.0)
    R = 48
    x_t, x_p, _, depths = sharp.deform_view(z_id, z_exp, z_pose, cams, R)
    pts = volume_points(sharp.config, cams, R, R, depths)
    _, h, w, Dv, _ = pts.shape
    idx = nearest_vertex(pts.reshape(1, -1, 3), out.vertices[:, sharp.nn_index])[0]
    raw = sharp.expression_offsets(out)[0, idx].reshape(1, h, w, Dv, 3).permute(0, 4, 3, 1, 2)
    D = depths.shape[1]
    expect = upsample_volume(raw, (D, R, R)).permute(0, 3, 4, 2, 1).reshape(1, R * R, D, 3)
    assert (x_p - x_t - expect).abs().max() < 1e-6
    moved = (x_p - x_t).norm(dim=-1).max()
    assert moved > 0.5 * raw.norm(dim=1).max() > 0.003  # millimetres of eyelid survive
    _, x_p_blurred, _, _ = blurred.deform_view(z_id, z_exp, z_pose, cams, R)
    assert (x_p_blurred - x_t).norm(dim=-1).max() < 0.2 * moved  # measured: 0.37 mm against 7.4
