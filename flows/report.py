"""Static HTML report of one video run, ``<out>/<stem>.report/index.html``, and the run's meshes as files.

The page is one self-contained file that opens from disk with no server and no network: images, videos, the avatar's
glb and the 3D viewer (Google's ``<model-viewer>`` web component, Apache-2.0, which bundles three.js (MIT) and lit
(BSD-3-Clause); vendored in ``flows/report_assets`` with their licences) are embedded as data URIs / inline script,
because browsers refuse module scripts and ``fetch`` of ``file://`` URLs. Beside it, ``meshes/`` holds every
reconstructed frame and the canonical avatar as ``.ply`` and ``.glb`` (metres, Y-up), linked from the page.
"""

from __future__ import annotations

import base64
import html
import json
import logging
import math
import time
from collections.abc import Iterable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from flows.results import VideoResult
    from flows.store import RunStore

log = logging.getLogger(__name__)

__all__ = ["ReportInputs", "export_run_meshes", "mesh_views", "normal_image", "report_dir_for", "render_report_html",
           "turntable_meshes", "write_report", "write_video_report"]  # fmt: skip

MODEL_VIEWER = "model-viewer-umd.min.js"
"""The vendored viewer: ``@google/model-viewer`` 4.4.0 ``dist/model-viewer-umd.min.js`` from npm."""
TILE = 192
"""Side (px) of each per-frame panel."""
TURNTABLE_STEPS = 48
_LIGHT = (-0.3, 0.4, 1.0)


def report_dir_for(store_path: str | Path) -> Path:
    """``<out>/<stem>.report`` beside the run store ``<out>/<stem>.zarr``."""
    p = Path(store_path)
    return p.with_name(p.name.removesuffix(".zarr") + ".report")


# ------------------------------------------------------------------------------------------------ pictures (compute)
def normal_image(normals: np.ndarray) -> np.ndarray:
    """Camera-space normals ``(S, S, 3)`` in [-1, 1] (NaN or zero outside) -> ``(S, S, 3) uint8`` RGB, black outside."""
    n = np.nan_to_num(np.asarray(normals, np.float32), nan=0.0)
    inside = np.abs(n).sum(-1) > 0
    img = np.clip((n + 1.0) * 127.5, 0, 255).astype(np.uint8)
    img[~inside] = 0
    return img


def _shade(vertices, faces, size: int, extent: float, centre: np.ndarray, background: float = 0.12) -> np.ndarray:
    """Lambert-shaded orthographic render from +Z of ``vertices`` (V, 3), framing a square of ``extent`` metres."""
    import torch

    from geometry.cameras import OrthographicCamera
    from geometry.render import render_mesh, shade_normals

    scale = size * 0.9 / max(extent, 1e-3)
    camera = OrthographicCamera(scale=torch.tensor([scale]), cx=torch.tensor([size / 2 - scale * centre[0]]),
                                cy=torch.tensor([size / 2 + scale * centre[1]]), width=size, height=size)  # fmt: skip
    v = torch.as_tensor(np.asarray(vertices, np.float32))[None]
    f = torch.as_tensor(np.asarray(faces, np.int64))
    r = render_mesh(v, f, camera)
    img = shade_normals(r.normal_front, light_dir=_LIGHT, mask=r.mask)
    img = torch.where(r.mask[..., None], img, torch.full_like(img, background))
    return (img[0].clamp(0, 1).numpy() * 255.0 + 0.5).astype(np.uint8)


def _rotate_y(vertices: np.ndarray, angle: float, centre: np.ndarray) -> np.ndarray:
    c, s = math.cos(angle), math.sin(angle)
    rot = np.array([[c, 0.0, s], [0.0, 1.0, 0.0], [-s, 0.0, c]], np.float32)
    return (np.asarray(vertices, np.float32) - centre) @ rot.T + centre


def mesh_views(vertices: np.ndarray, faces: np.ndarray, size: int = TILE) -> tuple[np.ndarray, np.ndarray]:
    """Front (seen from +Z) and side (turned 90° about Y: seen from the subject's left) shaded renders,
    each ``(size, size, 3) uint8``, on one scale so both show the same body size."""
    v = np.asarray(vertices, np.float32)
    lo, hi = v.min(0), v.max(0)
    centre = (lo + hi) / 2
    extent = float(max(hi[1] - lo[1], hi[0] - lo[0], hi[2] - lo[2]))
    side = _rotate_y(v, -math.pi / 2, centre)
    return _shade(v, faces, size, extent, centre), _shade(side, faces, size, extent, centre)


def turntable_meshes(vertices: np.ndarray, faces: np.ndarray, steps: int = TURNTABLE_STEPS) -> list[tuple]:
    """The mesh turned once about the vertical axis through its centre, in ``steps`` equal steps."""
    v = np.asarray(vertices, np.float32)
    centre = (v.min(0) + v.max(0)) / 2
    return [(_rotate_y(v, 2 * math.pi * k / steps, centre), faces) for k in range(steps)]


# -------------------------------------------------------------------------------------------------------- files
def _png_uri(image: np.ndarray) -> str:
    import cv2

    img = np.asarray(image)
    if img.ndim == 3:
        img = cv2.cvtColor(img, cv2.COLOR_RGB2BGR)
    ok, buf = cv2.imencode(".png", img)
    if not ok:
        raise ValueError("could not encode a PNG")
    return "data:image/png;base64," + base64.b64encode(buf.tobytes()).decode()


def _file_uri(path: Path, mime: str) -> str:
    return f"data:{mime};base64," + base64.b64encode(path.read_bytes()).decode()


def export_run_meshes(store: RunStore, avatar_dir: Path | None, out_dir: str | Path) -> dict[str, list[Path]]:
    """Write each reconstructed frame ``frame_<t:06d>`` and the canonical avatar ``avatar`` as ``.ply`` and ``.glb``
    (with a material; vertex colours when the store holds them) into ``out_dir``; returns name -> files."""
    from avatar.export import save_mesh

    out_dir = Path(out_dir)
    written: dict[str, list[Path]] = {}
    for t in store.mesh_frames():
        mesh = store.read_mesh(t)
        colours = _vertex_colours(mesh)
        written[f"frame_{t:06d}"] = [save_mesh(out_dir / f"frame_{t:06d}.{ext}", mesh.vertices, mesh.faces, colours)
                                     for ext in ("ply", "glb")]  # fmt: skip
    if avatar_dir is not None and (Path(avatar_dir) / "avatar.json").is_file():
        from avatar.model import load_avatar

        av = load_avatar(avatar_dir)
        written["avatar"] = [save_mesh(out_dir / f"avatar.{ext}", av.vertices, av.faces) for ext in ("ply", "glb")]
    return written


def _vertex_colours(mesh) -> np.ndarray | None:
    """Per-vertex colours a store mesh carries (trimesh ``ColorVisuals``), else None."""
    visual = getattr(mesh, "visual", None)
    if visual is not None and getattr(visual, "kind", None) == "vertex":
        return np.asarray(visual.vertex_colors)[:, :3]
    return None


# ------------------------------------------------------------------------------------------------------- report
@dataclass
class ReportInputs:
    """Everything the page shows, already encoded (data URIs) or as text.

    Attributes:
        title: page title (the video's file name).
        message: the run's one-line outcome.
        summary: rows of (label, value) for the summary table.
        contact_sheet: data URI of the contact sheet PNG, or None.
        frames: per frame: (label, image URI, normals URI, mesh-front URI, mesh-side URI).
        avatar_glb: data URI of the avatar's glb (animated when a preview motion exists), or None.
        animation: name of the glb's animation to play, or None.
        videos: (caption, data URI) of MP4s (turntable, re-posed motion).
        curves: data URI of the training-curves PNG, or None.
        downloads: (label, relative href) of mesh files beside the page.
    """

    title: str
    message: str
    summary: list[tuple[str, str]]
    contact_sheet: str | None
    frames: list[tuple[str, str, str, str, str]]
    avatar_glb: str | None
    animation: str | None
    videos: list[tuple[str, str]]
    curves: str | None
    downloads: list[tuple[str, str]]


_CSS = """
body{font-family:system-ui,sans-serif;margin:0 auto;max-width:1200px;padding:16px;background:#f6f6f4;color:#222}
h1{font-size:1.4em}h2{font-size:1.15em;margin-top:1.6em;border-bottom:1px solid #ccc}
table{border-collapse:collapse}td,th{padding:3px 10px;border-bottom:1px solid #ddd;text-align:left;vertical-align:top}
img.sheet{max-width:100%}figure{display:inline-block;margin:0 12px 12px 0}video{width:360px;background:#222}
model-viewer{width:100%;height:520px;background:#2b2b2b;border-radius:6px}
.frames td{padding:2px}.frames img{width:160px;height:160px;display:block}.dl a{margin-right:10px}
"""


def render_report_html(inputs: ReportInputs, viewer_js: str) -> str:
    """The complete page (a string) from :class:`ReportInputs` and the viewer's JavaScript."""
    e = html.escape
    out = [f"<!doctype html><html lang=en><head><meta charset=utf-8><title>{e(inputs.title)} — avatarize report"
           f"</title><style>{_CSS}</style>"]  # fmt: skip
    if inputs.avatar_glb:
        out.append(f"<script>{viewer_js}</script>")
    out += [f"</head><body><h1>{e(inputs.title)}: {e(inputs.message)}</h1>", "<h2>Summary</h2><table>"]
    out += [f"<tr><th>{e(k)}</th><td>{e(v)}</td></tr>" for k, v in inputs.summary]
    out.append("</table>")
    if inputs.avatar_glb:
        anim = f' animation-name="{e(inputs.animation)}" autoplay' if inputs.animation else ""
        out.append("<h2>Avatar (drag to turn, scroll to zoom)</h2>"
                   f'<model-viewer id=avatar src="{inputs.avatar_glb}" camera-controls{anim} '
                   'shadow-intensity="1" exposure="0.9" camera-orbit="0deg 80deg auto" interaction-prompt="none" '
                   'alt="the clothed avatar"></model-viewer>')  # fmt: skip
    if inputs.videos:
        out.append("<h2>Videos</h2>")
        out += [f'<figure><video controls loop muted autoplay playsinline src="{uri}"></video>'
                f"<figcaption>{e(cap)}</figcaption></figure>" for cap, uri in inputs.videos]  # fmt: skip
    if inputs.curves:
        out.append(f'<h2>Training curves</h2><img class=sheet alt="training curves" src="{inputs.curves}">')
    if inputs.contact_sheet:
        out.append(f'<h2>Contact sheet (body fit)</h2><img class=sheet alt="contact sheet" '
                   f'src="{inputs.contact_sheet}">')  # fmt: skip
    if inputs.frames:
        out.append("<h2>Frames</h2><table class=frames><tr><th>frame</th><th>image</th><th>normals</th>"
                   "<th>mesh front</th><th>mesh side</th></tr>")  # fmt: skip
        for label, *uris in inputs.frames:
            cells = "".join(f'<td><img alt="{e(label)}" src="{u}"></td>' for u in uris)
            out.append(f"<tr><td>{e(label)}</td>{cells}</tr>")
        out.append("</table>")
    if inputs.downloads:
        out.append("<h2>Meshes (metres, Y-up)</h2><p class=dl>")
        out += [f'<a href="{e(href)}">{e(label)}</a>' for label, href in inputs.downloads]
        out.append("</p>")
    out.append(f"<p><small>written by avatarize {time.strftime('%Y-%m-%d %H:%M:%S')}; 3D view: "
               "&lt;model-viewer&gt; (Apache-2.0) with three.js (MIT).</small></p></body></html>")  # fmt: skip
    return "\n".join(out)


def _viewer_js() -> str:
    return (resources.files("flows") / "report_assets" / MODEL_VIEWER).read_text(encoding="utf-8")


def _frame_rows(store: RunStore, frames: Iterable[int], size: int) -> list[tuple[str, str, str, str, str]]:
    import cv2

    rows = []
    for t in frames:
        image = store.read_frames([t]).image[0]
        normals = normal_image(store.read_normals([t]).front[0])
        mesh = store.read_mesh(t)
        front, side = mesh_views(mesh.vertices, mesh.faces, size)

        def small(img: np.ndarray) -> np.ndarray:
            return img if img.shape[0] == size else cv2.resize(img, (size, size), interpolation=cv2.INTER_AREA)

        rows.append((f"{t}", _png_uri(small(image)), _png_uri(small(normals)), _png_uri(front), _png_uri(side)))
    return rows


def _summary_rows(store: RunStore, result: VideoResult | None, avatar_dir: Path | None) -> list[tuple[str, str]]:
    from flows.store import FrameStatus

    status = store.status()
    rows = [("source", str(store.attrs.source_path)), ("run store", str(store.path)),
            ("frames", f"{len(status)} sampled, {int((status == FrameStatus.DONE).sum())} done, "
                       f"{int((status == FrameStatus.SKIPPED).sum())} skipped, "
                       f"{int((status == FrameStatus.FAILED).sum())} failed"),
            ("crop", f"{store.image_size} px"), ("body model", str(store.attrs.body_model_id)),
            ("code version", str(store.attrs.code_version))]  # fmt: skip
    losses = store.read_loss()
    finals = [row[np.isfinite(row)][-1] for row in losses if np.isfinite(row).any()]
    if finals:
        rows.append(("final refinement loss (median, range)",
                     f"{np.median(finals):.4g} ({min(finals):.4g} – {max(finals):.4g})"))  # fmt: skip
    if result is not None:
        rows.append(("wall time", f"{result.seconds:.1f} s"))
        total = sum(result.stage_seconds.values()) or 1.0
        rows += [(f"stage: {k}", f"{v:.1f} s ({100 * v / total:.0f}%)")
                 for k, v in sorted(result.stage_seconds.items(), key=lambda kv: -kv[1])]  # fmt: skip
        if result.avatar_error:
            rows.append(("avatar", f"failed: {result.avatar_error}"))
    if avatar_dir is not None and (avatar_dir / "avatar.json").is_file():
        meta = json.loads((avatar_dir / "avatar.json").read_text())
        shape = {k: meta.get(k) for k in ("n_vertices", "n_faces") if k in meta}
        rows.append(("avatar", f"{avatar_dir}" + (f" {shape}" if shape else "")))
        info_path = avatar_dir / "training.json"
        if info_path.is_file():
            info = json.loads(info_path.read_text())
            rows.append(("avatar trained on", f"{len(info.get('frames', []))} frames"))
    return rows


def write_report(
    store_path: str | Path,
    result: VideoResult | None = None,
    avatar_dir: str | Path | None = None,
    out_dir: str | Path | None = None,
    max_frames: int = 60,
    size: int = TILE,
) -> Path:
    """Write ``index.html`` (and ``meshes/``) for a run store; returns the page's path.

    Args:
        store_path: the run store (opened read-only).
        result: the run's ``VideoResult`` (adds wall time, stage seconds, the re-posed preview), or None.
        avatar_dir: the avatar folder (default ``<out>/<stem>.avatar`` when it exists).
        out_dir: report folder (default ``<out>/<stem>.report``).
        max_frames: at most this many frame rows (evenly spaced) in the per-frame table.
        size: side (px) of each per-frame panel.
    """
    from flows.avatar_flow import render_motion_video
    from flows.paths import confine
    from flows.store import open_run

    store = open_run(store_path, "r")
    out = Path(out_dir) if out_dir is not None else report_dir_for(store.path)
    root = out.parent if out_dir is not None else store.path.parent
    for name in ("", "index.html", "turntable.mp4", "meshes"):  # a symlink planted in the output cannot redirect
        confine(out / name, root, "report output")
    out.mkdir(parents=True, exist_ok=True)
    stem = store.path.name.removesuffix(".zarr")
    if avatar_dir is None:
        guess = store.path.with_name(f"{stem}.avatar")
        avatar_dir = Path(result.avatar_dir) if result is not None and result.avatar_dir else guess
    avatar_dir = Path(avatar_dir) if (Path(avatar_dir) / "avatar.json").is_file() else None

    written = export_run_meshes(store, avatar_dir, out / "meshes")
    downloads = [(p.name, f"meshes/{p.name}") for files in written.values() for p in files]
    done = store.mesh_frames()
    if len(done) > max_frames:
        done = [done[round(i)] for i in np.linspace(0, len(done) - 1, max_frames)]
    frames = _frame_rows(store, done, size)

    videos: list[tuple[str, str]] = []
    glb_uri, animation = None, None
    if avatar_dir is not None:
        from avatar.model import load_avatar

        av = load_avatar(avatar_dir)
        turntable = render_motion_video(out / "turntable.mp4", turntable_meshes(av.vertices.numpy(),
                                                                                av.faces.numpy()), fps=24.0, size=384)
        videos.append(("avatar turntable (canonical pose)", _file_uri(turntable, "video/mp4")))
        preview = avatar_dir / "preview"
        for mp4 in sorted(preview.glob("*.mp4")):
            videos.append((f"avatar re-posed with the '{mp4.stem}' motion", _file_uri(mp4, "video/mp4")))
        glb = preview / "avatar.glb"
        if glb.is_file():
            from flows.blender import glb_extras

            animation = glb_extras(glb).get("animation")
        else:
            glb = written["avatar"][1]
        glb_uri = _file_uri(glb, "model/gltf-binary")
    curves = avatar_dir / "training_curves.png" if avatar_dir is not None else None
    sheet = Path(result.contact_sheet) if result is not None and result.contact_sheet else (
        store.path.with_name(f"{stem}.preview") / "contact_sheet.png")  # fmt: skip
    inputs = ReportInputs(
        title=Path(str(store.attrs.source_path)).name,
        message=result.message if result is not None else f"{len(store.mesh_frames())} reconstructed frames",
        summary=_summary_rows(store, result, avatar_dir),
        contact_sheet=_file_uri(sheet, "image/png") if sheet.is_file() else None,
        frames=frames,
        avatar_glb=glb_uri,
        animation=animation,
        videos=videos,
        curves=_file_uri(curves, "image/png") if curves is not None and curves.is_file() else None,
        downloads=downloads,
    )
    page = out / "index.html"
    page.write_text(render_report_html(inputs, _viewer_js() if glb_uri else ""), encoding="utf-8")
    return page


def write_video_report(result: VideoResult) -> Path | None:
    """The video flow's report step: :func:`write_report` for a finished run; logs and returns None on failure (the
    report is a view of the store, never a reason to fail the run)."""
    try:
        page = write_report(result.store, result)
    except Exception as e:  # noqa: BLE001 - the store is the record; a report failure is only logged
        log.warning("%s: could not write the HTML report: %s: %s", result.store, type(e).__name__, e)
        return None
    log.info("report: %s", page)
    return page
