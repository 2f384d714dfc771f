"""Errors of the run store (:mod:`flows.store`) and its run lock (:mod:`flows.run_lock`)."""

from __future__ import annotations


class RunStoreError(ValueError):
    """A run store could not be created, opened, read or written; the message names the store and the reason."""


class NotARunStoreError(RunStoreError, FileNotFoundError):
    """The path is missing, not a Zarr v3 group, or a Zarr group that avatarize did not create."""


class SchemaVersionError(RunStoreError):
    """The store was written with another (newer or unsupported) layout version than this code reads."""


class RunStoreExistsError(RunStoreError, FileExistsError):
    """``create_run`` found something at the path and ``overwrite`` was not set."""


class ReadOnlyStoreError(RunStoreError):
    """A write was attempted on a store opened with ``mode="r"``."""


class FrameNotWrittenError(RunStoreError, LookupError):
    """Data asked for (a frame's mesh, the avatar) has not been written yet."""


class RunStoreBusyError(RunStoreError, TimeoutError):
    """Another run (process or thread) holds the store's run lock; the message names the holder."""
