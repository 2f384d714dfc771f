"""Settings of avatar training (network sizes, steps, loss weights, extraction), a pydantic model with presets."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["AvatarConfig"]


class AvatarConfig(BaseModel):
    """SCANimate-style avatar training. Defaults suit a GPU; the ``fast`` preset's
    ``avatar:`` section (flows/presets/fast.yaml) is sized for CPU and tests."""

    model_config = ConfigDict(extra="forbid")

    seed: int = Field(0, description="Seed of network initialisation and sampling.")
    hip_angle_deg: float = Field(30.0, ge=0.0, le=60.0, description="Hip abduction of the canonical Da-pose (deg).")
    # --- data
    samples_per_frame: int = Field(16000, ge=256, description="Surface samples drawn once per training frame.")
    points_per_frame: int = Field(2048, ge=64, description="Surface samples per frame in each training step.")
    frames_per_step: int = Field(4, ge=1, description="Frames per training step.")
    body_points_per_frame: int = Field(1024, ge=0, description="Naked-body vertices per frame per skinning step.")
    visibility_floor: float = Field(
        0.1, ge=0.0, le=1.0, description="Weight of a point never seen by the camera, relative to a visible one."
    )
    pose_smoothing_s: float = Field(
        0.2,
        ge=0.0,
        description="Time scale (s) of the temporal smoothing of the fitted body poses into the poses the avatar holds "
        "in its training frames (avatar.poses.refine_frame_poses; needs the frames' times); 0 holds the fitted poses.",
    )
    # --- skinning networks
    skin_frequencies: int = Field(4, ge=0, description="Positional-encoding frequencies of the skinning nets.")
    skin_width: int = Field(128, ge=8, description="Hidden width of the skinning nets.")
    skin_depth: int = Field(4, ge=1, description="Hidden layers of the skinning nets.")
    code_dim: int = Field(16, ge=1, description="Per-frame latent code size of the inverse skinning net.")
    skin_steps: int = Field(1500, ge=0, description="Adam steps of stage 1 (skinning nets).")
    skin_lr: float = Field(2e-3, gt=0, description="Adam learning rate of stage 1.")
    w_cycle: float = Field(10.0, ge=0, description="Cycle consistency: posed -> canonical -> posed position (m^-1).")
    w_weight_cycle: float = Field(0.1, ge=0, description="Cycle consistency of inverse vs forward weights.")
    w_body: float = Field(1.0, ge=0, description="Naked-body vertices keep the body model's weights (both nets, KL).")
    w_nearest: float = Field(0.2, ge=0, description="Surface points near the body take the nearest body weights (KL).")
    nearest_sigma: float = Field(0.05, gt=0, description="Distance scale (m) of the nearest-body-weight prior.")
    w_sparse: float = Field(0.002, ge=0, description="Sparsity of weights (sum of w^0.7).")
    w_smooth: float = Field(0.1, ge=0, description="Weights of nearby points agree (jittered pairs).")
    smooth_sigma: float = Field(0.01, gt=0, description="Jitter (m) of the smoothness pairs.")
    # --- implicit surface
    sdf_frequencies: int = Field(4, ge=0, description="Positional-encoding frequencies of the SDF net.")
    sdf_width: int = Field(256, ge=16, description="Hidden width of the SDF net.")
    sdf_depth: int = Field(6, ge=2, description="Hidden layers of the SDF net.")
    sdf_steps: int = Field(3000, ge=0, description="Adam steps of stage 2 (implicit surface).")
    sdf_lr: float = Field(5e-4, gt=0, description="Adam learning rate of stage 2.")
    w_surface: float = Field(3.0, ge=0, description="SDF = 0 at canonicalised surface points (L1, normalised units).")
    w_normal: float = Field(1.0, ge=0, description="SDF gradient = canonicalised normal at surface points.")
    w_eikonal: float = Field(0.1, ge=0, description="Unit gradient near the surface and in the box.")
    w_offsurface: float = Field(0.05, ge=0, description="exp(-alpha |sdf|) on random box points (no spurious zeros).")
    w_inside_outside: float = Field(1.0, ge=0, description="Inside the naked body < 0, on the box boundary > 0.")
    near_sigma: float = Field(0.03, gt=0, description="Std (m) of the near-surface samples for the eikonal term.")
    # --- extraction
    resolution: int = Field(256, ge=16, description="Marching-cubes resolution of the canonical mesh.")
    coarse_resolution: int = Field(33, ge=3, description="First level of the coarse-to-fine grid.")
    box_padding: float = Field(0.08, ge=0.0, description="Padding (m) of the canonical box around the samples.")
    reference_pose: Literal["mean", "canonical"] = Field(
        "mean", description="Pose the canonical mesh is extracted at: the training poses' mean feature or the Da-pose."
    )
    checkpoint_every: int = Field(500, ge=1, description="Steps between checkpoints (when a checkpoint dir is given).")
    # --- multi-frame refinement against the frames' masks and normal maps (avatar.refine)
    refine_iterations: int = Field(
        60, ge=0, description="Adam steps refining the canonical mesh against all frames' masks and normals (0: off)."
    )
    refine_lr: float = Field(1e-3, gt=0, description="Adam learning rate of the canonical vertex offsets (m).")
    refine_pose_lr: float = Field(2e-3, ge=0, description="Adam learning rate of the per-frame pose corrections.")
    refine_align_steps: int = Field(
        40, ge=0, description="Full-batch Adam steps aligning every frame's pose to its mask and normals (mesh frozen) "
        "before the joint refinement (0: none).",
    )
    refine_align_lr: float = Field(0.01, gt=0, description="Adam learning rate of that pose alignment (rad, m).")
    refine_align_joints: Literal["root", "all"] = Field(
        "root", description="What the training frames' pose alignment moves: the root (orientation + translation) or "
        "every joint (on the validation clip, all joints raise the training frames' mask IoU 0.872 -> 0.899 but worsen "
        "the Chamfer: the masks pull joints along depth-ambiguous directions).",
    )
    w_refine_align_silhouette: float = Field(
        1.0, ge=0, description="Silhouette weight while aligning the poses (mesh frozen: the mask decides the pose)."
    )
    refine_align_resolution: int = Field(
        256, ge=32, description="Side (px) the frames are rendered at when aligning (at most the frames' own size)."
    )
    refine_resolution: int = Field(
        256, ge=32, description="Side (px) the frames are rendered at during refinement (at most the frames' own size)."
    )
    refine_frames_per_step: int = Field(8, ge=1, description="Frames rendered per refinement step.")
    refine_sigma_px: float = Field(0.7, gt=0, description="Softness (px) of the rendered silhouette's boundary.")
    w_refine_silhouette: float = Field(
        1.0, ge=0, description="Soft silhouette vs the frame's mask (L1 summed over the image / the mask's area)."
    )
    w_refine_normal: float = Field(1.0, ge=0, description="Rendered front normals vs the normal net's (L1).")
    w_refine_normal_back: float = Field(0.3, ge=0, description="Rendered back normals vs the normal net's back map.")
    w_refine_photometric: float = Field(
        1.0, ge=0, description="Rendered vertex colours vs the frame's image (L1 where both see the person), when the "
        "targets carry images and the mesh has colours.",
    )
    w_refine_carve: float = Field(
        0.0, ge=0, description="The canonical surface (vertices, face centroids, edge midpoints), skinned into "
        "every frame, projects inside its mask (visual hull): mean distance outside the mask beyond the margin, in "
        "image widths (pulls in flaps the frames' masks never show). Off: at 300 on the validation clip it lowers the "
        "normal consistency 0.808 -> 0.785 for no Chamfer or IoU gain.",
    )
    refine_carve_margin_px: float = Field(
        1.0, ge=0, description="Distance (px at the refinement resolution) a vertex may stick out of a mask for free."
    )
    w_refine_laplacian: float = Field(
        2.0, ge=0, description="Uniform Laplacian of the offsets, in mean edge lengths (keeps the refinement smooth)."
    )
    w_refine_consistency: float = Field(0.05, ge=0, description="Normal consistency of adjacent faces (1 - cos).")
    w_refine_pose: float = Field(0.01, ge=0, description="Squared size of the per-frame pose corrections (rad^2, m^2).")
    refine_smoothing: int = Field(
        3, ge=0, description="Neighbour-averaging passes applied to the offset field (smooth updates travel farther)."
    )
    # --- colour (avatar.colour)
    colour: bool = Field(True, description="Fuse per-vertex colours of the canonical mesh from the frames.")
    colour_cos_power: float = Field(
        2.0, ge=0, description="Exponent of the viewing-angle weight of a frame's colour sample (higher: the most "
        "frontal views dominate, sharper colour where the frames disagree).",
    )
    colour_subdivisions: int = Field(
        0, ge=0, le=3, description="Midpoint subdivisions of the canonical mesh before its colours are fused (each "
        "level: 4x the faces, finer colour).",
    )
    colour_edge_px: float = Field(4.0, gt=0, description="Distance (px) to the mask border of a full-weight colour.")

