"""Synthetic clothed humans for training and benchmarking the learned parts: body + procedural garments, rendered
RGB / mask / normal maps, perturbed body fits and occupancy samples (pure compute; file IO in icon.synth.shards).
"""

from icon.synth.config import HELDOUT_SEED_START, TRAIN_SEED_START, SynthConfig, split_seeds
from icon.synth.garments import GARMENT_FAMILIES
from icon.synth.poses import POSE_FAMILIES
from icon.synth.sample import SynthSample, make_sample

__all__ = [
    "GARMENT_FAMILIES",
    "HELDOUT_SEED_START",
    "POSE_FAMILIES",
    "TRAIN_SEED_START",
    "SynthConfig",
    "SynthSample",
    "make_sample",
    "split_seeds",
]
