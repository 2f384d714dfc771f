"""SCANimate avatars: canonicalisation by learned inverse/forward skinning, a pose-conditioned implicit surface in
canonical space, re-posing and exports. Pure compute: tensors and meshes in and out; files only via save_/load_.

Submodules are imported explicitly (``from avatar.train import train_avatar``) to keep ``import avatar`` cheap.
"""
