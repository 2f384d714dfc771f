"""``avatarize view``: an interactive browser viewer of a run store on 127.0.0.1, built on viser.

A frame slider (and play button) walks the sampled frames: the GUI panel shows the crop with its keypoints, the person
mask and the frame's numbers (status, refinement losses); the 3D scene shows the clothed reconstruction, the fitted
body (wireframe) and the crop as a picture plane behind them, all in the crop camera's frame (metres, Y-up); beside
them the avatar plays a motion (the bundled wave or a given file). The store is opened read-only and its run lock is
never taken, so a store that a run is still writing can be watched: frames appear as they finish (button "reload").
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

__all__ = ["RunningViewer", "ViewerFrame", "find_store", "frame_view", "image_plane", "start_viewer"]

AVATAR_OFFSET = np.array([1.4, 0.0, 0.0], np.float32)
"""Where the avatar stands (metres, right of the reconstruction)."""
IMAGE_DEPTH = -0.35
"""z (metres, crop camera frame) of the picture plane, just behind the reconstruction (closer planes show less
perspective size mismatch against the orthographic crop)."""
_STATUS = {0: "pending", 1: "done", 2: "failed", 3: "skipped"}


def find_store(path: str | Path, stem: str | None = None) -> Path:
    """The run store named by ``path``: a ``.zarr`` store itself, or an output folder holding one (``stem`` picks one
    of several).

    Raises:
        ValueError: no store there, or several and no ``stem``.
    """
    p = Path(path)
    if (p / "zarr.json").is_file():
        return p
    if not p.is_dir():
        raise ValueError(f"{p}: no such run store or output folder")
    stores = sorted(q for q in p.glob("*.zarr") if (q / "zarr.json").is_file())
    if stem is not None:
        stores = [q for q in stores if q.name == f"{stem}.zarr"]
    if not stores:
        raise ValueError(f"{p}: no run store (<stem>.zarr) in this folder" + (f" named {stem!r}" if stem else ""))
    if len(stores) > 1:
        raise ValueError(f"{p}: {len(stores)} run stores ({', '.join(q.stem for q in stores)}); pick one with --video")
    return stores[0]


@dataclass
class ViewerFrame:
    """What the viewer shows for one frame (numpy, crop camera frame).

    Attributes:
        t: store position.
        status: "pending", "done", "failed" or "skipped".
        reason: the failure / skip reason, "" if none.
        tile: ``(S, S, 3) uint8`` crop with the keypoints drawn.
        mask: ``(S, S, 3) uint8`` person mask (white) over the dimmed crop.
        mesh: (vertices (V, 3), faces (F, 3)) of the reconstruction, or None.
        body: (vertices, faces) of the fitted body, or None.
        camera: (scale px/m, cx, cy) of the orthographic crop camera, or None.
        losses: the refinement losses recorded for the frame (finite ones).
    """

    t: int
    status: str
    reason: str
    tile: np.ndarray
    mask: np.ndarray
    mesh: tuple[np.ndarray, np.ndarray] | None
    body: tuple[np.ndarray, np.ndarray] | None
    camera: tuple[float, float, float] | None
    losses: np.ndarray


def image_plane(camera: tuple[float, float, float], size: int) -> tuple[np.ndarray, float]:
    """Centre (x, y) in metres and side in metres of an ``size``² crop seen by the orthographic camera
    ``u = cx + s x``, ``v = cy - s y``."""
    s, cx, cy = camera
    return np.array([(size / 2 - cx) / s, (cy - size / 2) / s], np.float32), size / s


def _body_model(store) -> Any:
    from body import BodyModel

    path = (store.attrs.config or {}).get("body_model")
    return BodyModel(path) if path else BodyModel()


def frame_view(store, t: int, body_model: Any | None = None) -> ViewerFrame:
    """Read frame ``t`` of an open store (read-only) into a :class:`ViewerFrame`."""
    import torch

    from flows.previews import preview_tile

    status = int(store.status()[t])
    frames = store.read_frames([t])
    image = frames.image[0]
    tile = preview_tile(image, frames.keypoints[0])
    dim = (image.astype(np.float32) * 0.35).astype(np.uint8)
    mask = np.where(frames.mask[0][..., None], np.uint8(255), dim)
    mesh = None
    if t in store.mesh_frames():
        m = store.read_mesh(t)
        mesh = (np.asarray(m.vertices, np.float32), np.asarray(m.faces, np.int32))
    fit = store.read_fit("refined", [t])
    if not torch.isfinite(fit.body_pose).all():
        fit = store.read_fit("init", [t])
    body, camera = None, None
    if torch.isfinite(fit.body_pose).all() and body_model is not None:
        with torch.no_grad():
            out = body_model(betas=fit.betas, global_orient=fit.global_orient, body_pose=fit.body_pose,
                             transl=fit.transl)  # fmt: skip
        body = (out.vertices[0].numpy().astype(np.float32), np.asarray(body_model.faces, np.int32))
    if torch.isfinite(fit.camera).all():
        camera = tuple(float(x) for x in fit.camera[0])
    losses = store.read_loss([t])[0]
    return ViewerFrame(t=t, status=_STATUS.get(status, str(status)), reason=store.reasons().get(t, ""), tile=tile,
                       mask=mask, mesh=mesh, body=body, camera=camera,
                       losses=losses[np.isfinite(losses)])  # fmt: skip


def _frame_markdown(view: ViewerFrame, source_index: int) -> str:
    lines = [f"**frame {view.t}** (source frame {source_index}): {view.status}"]
    if view.reason:
        lines.append(f"reason: {view.reason}")
    if len(view.losses):
        lines.append(f"refinement loss: {view.losses[0]:.4g} → {view.losses[-1]:.4g} ({len(view.losses)} iterations)")
    if view.mesh is not None:
        lines.append(f"reconstruction: {len(view.mesh[0])} vertices")
    return "  \n".join(lines)


@dataclass
class RunningViewer:
    """A started viewer: its server, URL, and a stop function."""

    server: Any
    url: str
    stop_event: threading.Event

    def stop(self) -> None:
        self.stop_event.set()
        self.server.stop()


def start_viewer(store_path: str | Path, motion_path: str | Path | None = None, host: str = "127.0.0.1",
                 port: int = 8080) -> RunningViewer:  # fmt: skip
    """Open the store read-only and serve the viewer (returns at once; the server runs in background threads)."""
    import viser

    from flows.store import open_run

    store = open_run(store_path, "r")
    stem = store.path.name.removesuffix(".zarr")
    size = store.image_size
    body_model = _body_model(store)
    source_indices = list(store.attrs.frame_indices)
    server = viser.ViserServer(host=host, port=port, label=f"avatarize: {stem}", verbose=False)
    server.scene.set_up_direction("+y")
    server.scene.set_background_image(np.full((4, 4, 3), 48, np.uint8))  # dark grey: the light meshes stand out
    server.scene.configure_environment_map("studio", environment_intensity=0.6)
    server.initial_camera.position = (0.0, 0.0, 4.5)  # straight in front: the crop lines up with the meshes
    server.initial_camera.look_at = (0.0, 0.0, 0.0)
    stop = threading.Event()

    gui = server.gui
    gui.add_markdown(f"### {stem}\n`{store.path}` (read-only)")
    slider = gui.add_slider("frame", min=0, max=max(store.n_frames - 1, 0), step=1, initial_value=0)
    play = gui.add_checkbox("play frames", initial_value=False)
    show_body = gui.add_checkbox("fitted body", initial_value=True)
    show_recon = gui.add_checkbox("reconstruction", initial_value=True)
    reload_btn = gui.add_button("reload (a running store)")
    info = gui.add_markdown("")
    blank = np.zeros((size, size, 3), np.uint8)
    tile_img = gui.add_image(blank, label="crop + keypoints")
    mask_img = gui.add_image(blank, label="mask")
    lock = threading.Lock()

    def show(t: int) -> None:
        with lock:
            view = frame_view(store, t, body_model)
            tile_img.image = view.tile
            mask_img.image = view.mask
            info.content = _frame_markdown(view, source_indices[t] if t < len(source_indices) else t)
            if view.mesh is not None:
                verts, faces = view.mesh
                server.scene.add_mesh_simple("/frame/reconstruction", verts, faces, color=(200, 200, 205),
                                             side="double", visible=show_recon.value)  # fmt: skip
            else:
                server.scene.add_mesh_simple("/frame/reconstruction", np.zeros((3, 3), np.float32),
                                             np.array([[0, 1, 2]], np.int32), visible=False)  # fmt: skip
            if view.body is not None:
                server.scene.add_mesh_simple("/frame/body", view.body[0], view.body[1], color=(90, 200, 255),
                                             wireframe=True, visible=show_body.value)  # fmt: skip
            if view.camera is not None:
                centre, side = image_plane(view.camera, size)
                # viser lays images out with +y down (OpenCV); half a turn about x puts the crop upright in Y-up
                where = (float(centre[0]), float(centre[1]), IMAGE_DEPTH)
                server.scene.add_image("/frame/image", frames_image(t), side, side, format="jpeg",
                                       wxyz=(0.0, 1.0, 0.0, 0.0), position=where)  # fmt: skip

    def frames_image(t: int) -> np.ndarray:
        return store.read_frames([t]).image[0]

    @slider.on_update
    def _(_event) -> None:
        show(int(slider.value))

    @show_body.on_update
    def _(_event) -> None:
        show(int(slider.value))

    @show_recon.on_update
    def _(_event) -> None:
        show(int(slider.value))

    @reload_btn.on_click
    def _(_event) -> None:
        show(int(slider.value))

    show(0)
    _start_avatar(server, store.path.with_name(f"{stem}.avatar"), motion_path, stop, gui)

    def frame_player() -> None:
        while not stop.wait(0.5):
            if play.value and store.n_frames > 1:
                slider.value = (int(slider.value) + 1) % store.n_frames  # triggers show()

    threading.Thread(target=frame_player, name="viewer-frames", daemon=True).start()
    return RunningViewer(server=server, url=f"http://{host}:{server.get_port()}", stop_event=stop)


def _start_avatar(server, avatar_dir: Path, motion_path, stop: threading.Event, gui) -> None:
    """The avatar re-posed with the motion (precomputed, fast skinning), played in a loop beside the frames."""
    if not (avatar_dir / "avatar.json").is_file():
        gui.add_markdown(f"no avatar yet (`{avatar_dir.name}`)")
        return
    from avatar.model import load_avatar
    from avatar.repose import repose_fast
    from body.motion import load_motion
    from flows.avatar_flow import DEFAULT_MOTION

    avatar = load_avatar(avatar_dir)
    motion = load_motion(Path(motion_path) if motion_path else DEFAULT_MOTION)
    posed = repose_fast(avatar, motion).numpy().astype(np.float32)
    faces = avatar.faces.numpy().astype(np.int32)
    centre = posed[0].mean(0)
    offset = AVATAR_OFFSET - np.array([centre[0], 0.0, centre[2]], np.float32)
    playing = gui.add_checkbox(f"avatar: play '{Path(motion_path or DEFAULT_MOTION).stem}'", initial_value=True)
    handle = server.scene.add_mesh_simple("/avatar", posed[0], faces, color=(230, 220, 200), position=offset)
    step = max(1, round(motion.fps / 10.0))  # ~10 updates a second

    def player() -> None:
        k = 0
        while not stop.wait(step / motion.fps):
            if playing.value:
                k = (k + step) % len(posed)
                handle.vertices = posed[k]

    threading.Thread(target=player, name="viewer-avatar", daemon=True).start()
