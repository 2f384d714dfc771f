"""Mesh geometry on Warp + torch: cameras, closest-point/SDF queries, ray-cast and differentiable rendering,
coarse-to-fine surface extraction and reconstruction metrics.

Submodules are imported explicitly (``from geometry.render import render_mesh``) so that importing the package stays
cheap; every module except ``cameras`` and ``surface`` loads Warp.
"""
