"""Video decoding: decord first, PyAV as the fallback; every failure is one typed error.

:class:`VideoReader` opens a file once and decodes only the frames asked for
(``get_batch(indices)``), which is what every sampler in :mod:`videohpm.data.sampling` needs: a
clip or the union of all multi-view clips is decoded in one call. decord is the fast path
(``VideoReader.get_batch`` seeks to the key frame before each far-away index and skips the rest);
PyAV is used where decord cannot open or decode a file (some containers / codecs decord's
bundled FFmpeg rejects) and decodes sequentially up to the last requested frame.

Missing, empty, truncated or undecodable files all raise :class:`VideoDecodeError` carrying the
path and the reason, so that datasets can count and replace (training) or report (test) them.
"""
from __future__ import annotations

import os
from typing import List, Optional, Sequence

import numpy as np

# Load PyAV's FFmpeg before decord's: decord dlopens its bundled FFmpeg/libvpx with RTLD_GLOBAL,
# and a PyAV imported *after* it binds its libavcodec to decord's older libvpx (no symbol
# versioning in libvpx), which breaks PyAV's VP9 encoder ("avcodec_open2(libvpx-vp9) returned
# 22"). Imported first, PyAV binds its own (RTLD_NOW) and decord still binds to its own.
import av  # noqa: F401  (import order matters, see above)

__all__ = ["VideoDecodeError", "VideoReader", "BACKENDS", "check_video"]

BACKENDS = ("decord", "pyav")

_DECORD_QUIET = False


class VideoDecodeError(RuntimeError):
    """A video could not be opened or decoded.

    Attributes:
        path: the file.
        reason: what went wrong (``"file not found"``, ``"empty file (0 bytes)"``, the decoder's
            message, ...).
    """

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = str(path)
        self.reason = str(reason)

    def __reduce__(self):  # picklable across DataLoader worker processes
        return (type(self), (self.path, self.reason))


def _short(e: BaseException, limit: int = 300) -> str:
    msg = f"{type(e).__name__}: {e}".strip().replace("\n", " ")
    return msg if len(msg) <= limit else msg[:limit] + "..."


class _DecordBackend:
    name = "decord"

    def __init__(self, path: str, num_threads: int) -> None:
        global _DECORD_QUIET
        import decord  # lazy: after PyAV (imported at the top, see above); only this backend needs it

        if not _DECORD_QUIET:
            # FFmpeg's own log lines ("Read error", "moov atom not found") would flood the
            # console for every broken file; the reason is carried by VideoDecodeError instead.
            decord.logging.set_level(decord.logging.QUIET)
            _DECORD_QUIET = True
        self._vr = decord.VideoReader(path, num_threads=num_threads, ctx=decord.cpu(0))
        self.num_frames = len(self._vr)
        self.fps = float(self._vr.get_avg_fps())

    def get_batch(self, indices: List[int]) -> np.ndarray:
        return self._vr.get_batch(indices).asnumpy()

    def close(self) -> None:
        self._vr = None


class _PyAVBackend:
    name = "pyav"

    def __init__(self, path: str, num_threads: int) -> None:
        import av  # loaded at the top already (load order, see above); named here for the reader

        self._path = path
        self._threads = num_threads
        container = av.open(path)
        try:
            if not container.streams.video:
                raise ValueError("no video stream")
            stream = container.streams.video[0]
            n = int(stream.frames or 0)
            if n <= 0:
                # Some containers (webm) do not store a frame count: count the video packets,
                # which needs demuxing only, not decoding.
                n = sum(1 for p in container.demux(stream) if p.size > 0)
            self.num_frames = n
            rate = stream.average_rate or stream.guessed_rate
            self.fps = float(rate) if rate else 0.0
        finally:
            container.close()

    def get_batch(self, indices: List[int]) -> np.ndarray:
        import av  # as in __init__

        wanted = set(indices)
        last = max(wanted)
        got = {}
        k = -1
        with av.open(self._path) as container:
            stream = container.streams.video[0]
            stream.thread_count = self._threads
            for k, frame in enumerate(container.decode(stream)):
                if k in wanted:
                    got[k] = frame.to_ndarray(format="rgb24")
                if k >= last:
                    break
        if len(got) < len(wanted):
            raise ValueError(f"only {k + 1} frames decodable, frame {last} requested")
        return np.stack([got[i] for i in indices])

    def close(self) -> None:
        pass


_BACKEND_CLASSES = {"decord": _DecordBackend, "pyav": _PyAVBackend}


class VideoReader:
    """One opened video file.

    Args:
        path: video file.
        backend: ``"decord"`` (default) or ``"pyav"``.
        num_threads: decoder threads (decord ``num_threads``; 1 is best with many DataLoader
            workers, which already use every core).
        fallback: backend tried when ``backend`` fails to open or decode the file
            (``None`` disables it).

    Attributes:
        num_frames: number of frames the container reports (> 0).
        fps: average frame rate (0.0 when unknown).
        backend: name of the backend currently in use.

    Raises:
        VideoDecodeError: missing / empty / unreadable file (both backends failed).
        ValueError: unknown backend name.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        backend: str = "decord",
        num_threads: int = 1,
        fallback: Optional[str] = "pyav",
    ) -> None:
        self.path = os.fspath(path)
        for key, name in (("backend", backend), ("fallback", fallback)):
            if name is not None and name not in _BACKEND_CLASSES:
                raise ValueError(f"{key}: unknown video backend {name!r}; expected one of {BACKENDS}")
        self._num_threads = int(num_threads)
        self._fallback = fallback if fallback != backend else None
        if not os.path.isfile(self.path):
            raise VideoDecodeError(self.path, "file not found" if not os.path.exists(self.path) else "not a file")
        if os.path.getsize(self.path) == 0:
            raise VideoDecodeError(self.path, "empty file (0 bytes)")
        self._errors: List[str] = []
        self._impl = self._open(backend)
        if self._impl is None and self._fallback is not None:
            self._impl = self._open(self._fallback)
            self._fallback = None
        if self._impl is None:
            raise VideoDecodeError(self.path, "; ".join(self._errors))

    def _open(self, name: str):
        try:
            impl = _BACKEND_CLASSES[name](self.path, self._num_threads)
        except Exception as e:  # decord.DECORDError, RuntimeError, av.FFmpegError, ...
            self._errors.append(f"{name} open: {_short(e)}")
            return None
        if impl.num_frames <= 0:
            self._errors.append(f"{name}: no frames")
            return None
        return impl

    @property
    def num_frames(self) -> int:
        return int(self._impl.num_frames)

    @property
    def fps(self) -> float:
        return float(self._impl.fps)

    @property
    def backend(self) -> str:
        return self._impl.name

    def get_batch(self, indices: Sequence[int]) -> np.ndarray:
        """Decode the given frames (any order, repeats allowed).

        Args:
            indices: frame indices in ``[0, num_frames)``.

        Returns:
            ``[len(indices), H, W, 3]`` uint8 RGB.

        Raises:
            ValueError: an index outside ``[0, num_frames)`` (a sampler bug, not a broken file).
            VideoDecodeError: the frames could not be decoded by any backend.
        """
        idx = [int(i) for i in indices]
        if not idx:
            raise ValueError("get_batch: no frame indices")
        n = self.num_frames
        bad = [i for i in idx if i < 0 or i >= n]
        if bad:
            raise ValueError(f"{self.path}: frame indices {bad[:4]} outside [0, {n})")
        try:
            frames = self._impl.get_batch(idx)
        except Exception as e:
            self._errors.append(f"{self._impl.name} decode: {_short(e)}")
            if self._fallback is None:
                raise VideoDecodeError(self.path, "; ".join(self._errors)) from None
            impl = self._open(self._fallback)
            self._fallback = None
            if impl is None:
                raise VideoDecodeError(self.path, "; ".join(self._errors)) from None
            self._impl = impl
            try:
                frames = impl.get_batch(idx)
            except Exception as e2:
                self._errors.append(f"{impl.name} decode: {_short(e2)}")
                raise VideoDecodeError(self.path, "; ".join(self._errors)) from None
        if frames.ndim != 4 or frames.shape[0] != len(idx) or frames.shape[-1] != 3 or frames.size == 0:
            raise VideoDecodeError(self.path, f"decoder returned frames of shape {tuple(frames.shape)}")
        return frames

    def close(self) -> None:
        self._impl.close()

    def __enter__(self) -> "VideoReader":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def check_video(
    path: str | os.PathLike,
    backend: str = "decord",
    fallback: Optional[str] = "pyav",
    full: bool = False,
    num_threads: int = 1,
) -> Optional[str]:
    """Try to read a video; return ``None`` when fine, else the reason it is broken.

    By default the first, middle and last frames are decoded (catches missing, empty, truncated
    and undecodable files at a fraction of a full decode); ``full=True`` decodes every frame.
    """
    try:
        with VideoReader(path, backend=backend, num_threads=num_threads, fallback=fallback) as vr:
            n = vr.num_frames
            if full:
                step = 64  # bounded memory: decode in chunks
                for s in range(0, n, step):
                    vr.get_batch(range(s, min(n, s + step)))
            else:
                vr.get_batch(sorted({0, n // 2, n - 1}))
    except VideoDecodeError as e:
        return e.reason
    return None
