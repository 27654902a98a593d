"""RAVDESS preprocessing: each AV clip -> 8 face/centre crops (112x112) + a 64-mel x 188-frame log-mel, one NPZ.

    python -m merbench_plugins ravdess-prep ROOT [ROOT ...] OUT [--workers N] [--frames 8] [--size 112] [--crop auto]

Video is decoded with OpenCV (``pip install merbench-plugins[ravdess]``); the audio comes from the
paired 48 kHz audio-only wav, read with the standard ``wave`` module, resampled to 16 kHz mono in
torch and cut to the loudest 2.99 s (47872 samples -> 188 centred STFT frames, hop 256). Files
that cannot be read are reported with the reason and skipped; the run goes on.

Crash safety: the settings go into ``OUT/ravdess_prep.json`` before the first clip (a rerun with
other settings is refused unless ``--overwrite``); each NPZ is written atomically (temp file +
``os.replace``) with a header holding the settings and a checksum. A rerun verifies every existing
file, names the truncated, empty, damaged or other-settings ones and rebuilds them with the
missing ones, so the same command resumes after a crash, Ctrl-C or ``kill -9``.
"""
import argparse
import json
import math
import os
import sys
import time
import wave
from collections import Counter
from typing import Dict, List, Optional, Tuple

import numpy as np

from ..cli import refuse
from ..fileio import atomic_write_text
from .ravdess import (MANIFEST, CacheError, RavdessClip, discover, read_cache_file, settings_diff,
                      write_cache_file)

SAMPLE_RATE = 16000
N_FFT = 1024
HOP = 256
N_MELS = 64
MEL_FRAMES = 188
CLIP_SAMPLES = (MEL_FRAMES - 1) * HOP          # 47872: 1 + 47872 // 256 = 188 centred frames
RESAMPLER = "kaiser-sinc-96"                    # part of the settings: caches of the old resampler are rebuilt
CASCADE = "haarcascade_frontalface_default.xml"


class MediaError(Exception):
    """A file that cannot be used; the message is the reason shown in the report."""


def require_cv2():
    try:
        import cv2  # noqa: F401
    except ImportError:
        raise ImportError("RAVDESS video decoding needs OpenCV: pip install merbench-plugins[ravdess] "
                          "(or pip install opencv-python-headless)") from None
    return cv2


# ---------------------------------------------------------------------------------------------------
# video


def even_indices(n: int, k: int) -> List[int]:
    """k frame indices spread evenly over n frames (centre of each of k equal segments)."""
    return [min(n - 1, int((i + 0.5) * n / k)) for i in range(k)]


def find_cascade(path: Optional[str] = None) -> Optional[str]:
    """The Haar face cascade file: ``path`` if given, else the one shipped with OpenCV (if any)."""
    if path:
        if not os.path.isfile(path):
            raise FileNotFoundError(f"face cascade {path!r} does not exist")
        return path
    cv2 = require_cv2()
    root = getattr(getattr(cv2, "data", None), "haarcascades", "") or ""
    candidate = os.path.join(root, CASCADE)
    return candidate if root and os.path.isfile(candidate) else None


_CASCADES: Dict[str, object] = {}


def _detector(path: str):
    if path not in _CASCADES:
        cv2 = require_cv2()
        detector = cv2.CascadeClassifier(path)
        if detector.empty():
            raise MediaError(f"OpenCV cannot load the face cascade {path}")
        _CASCADES[path] = detector
    return _CASCADES[path]


def _face_box(frames: List[np.ndarray], cascade: str) -> Optional[Tuple[int, int, int]]:
    """Median (cx, cy, side) of the largest face per frame, widened by 1.4; None if no face anywhere."""
    cv2 = require_cv2()
    detector = _detector(cascade)
    boxes = []
    for frame in frames:
        grey = cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY)
        small = min(grey.shape) // 8
        faces = detector.detectMultiScale(grey, scaleFactor=1.1, minNeighbors=5, minSize=(small, small))
        if len(faces):
            x, y, w, h = max(faces, key=lambda f: f[2] * f[3])
            boxes.append((x + w / 2.0, y + h / 2.0, 1.4 * max(w, h)))
    if not boxes:
        return None
    cx, cy, side = np.median(np.array(boxes), axis=0)
    return int(round(cx)), int(round(cy)), int(round(side))


def _square_crop(frame: np.ndarray, box: Optional[Tuple[int, int, int]]) -> np.ndarray:
    h, w = frame.shape[:2]
    if box is None:
        cx, cy, side = w // 2, h // 2, min(h, w)
    else:
        cx, cy, side = box
        side = max(8, min(side, h, w))
    x0 = int(np.clip(cx - side // 2, 0, w - side))
    y0 = int(np.clip(cy - side // 2, 0, h - side))
    return frame[y0:y0 + side, x0:x0 + side]


def _decode(path: str, num_frames: int, indices: Optional[List[int]], work_side: int):
    """Decode every frame and keep (downscaled) the wanted ones: ``indices``, or the evenly spaced ones
    by the container's frame count. Returns (kept {index: BGR frame}, frames decoded, frames declared)."""
    cv2 = require_cv2()
    cap = cv2.VideoCapture(path)
    if not cap.isOpened():
        raise MediaError("OpenCV cannot open it (missing, corrupt or not a video)")
    try:
        declared = int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
        wanted = set(indices) if indices is not None else (
            set(even_indices(declared, num_frames)) if declared > 0 else None)    # None: keep all
        kept, n = {}, 0
        while cap.grab():
            if wanted is None or n in wanted:
                ok, frame = cap.retrieve()
                if ok and frame is not None:
                    scale = work_side / float(min(frame.shape[:2]))
                    if scale < 1.0:       # bound memory and detector time: 720p -> short side work_side
                        frame = cv2.resize(frame, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
                    kept[n] = frame
            n += 1
    finally:
        cap.release()
    return kept, n, declared


def read_video_frames(path: str, num_frames: int = 8, size: int = 112, crop: str = "auto",
                      cascade: Optional[str] = None) -> Tuple[np.ndarray, Dict]:
    """-> (uint8 [num_frames, size, size, 3] RGB, info). Raises :class:`MediaError` on unusable video.

    One decoding pass when the container's frame count is right (always for RAVDESS), a second
    one when it is not. Crops: ``face`` (Haar cascade, median box over the 8 frames, centre crop
    if no face is found), ``center`` (central square), ``auto`` (face when a cascade exists).
    """
    cv2 = require_cv2()
    work_side = max(2 * size, 240)
    kept, n, declared = _decode(path, num_frames, None, work_side)
    if n == 0:
        raise MediaError("no decodable video frames")
    if declared > 0 and n < 0.5 * declared:
        raise MediaError(f"truncated: decoded {n} of {declared} declared frames")
    indices = even_indices(n, num_frames)
    if any(i not in kept for i in indices):
        kept, _, _ = _decode(path, num_frames, indices, work_side)
        if any(i not in kept for i in indices):
            raise MediaError(f"frames {sorted(set(indices) - set(kept))} did not decode")
    picked = [kept[i] for i in indices]
    box, used = None, "center"
    if crop in ("auto", "face") and cascade:
        box = _face_box(picked, cascade)
        used = "face" if box is not None else "no_face"
    frames = np.stack([cv2.cvtColor(cv2.resize(_square_crop(f, box), (size, size), interpolation=cv2.INTER_AREA),
                                    cv2.COLOR_BGR2RGB) for f in picked])                # [T, size, size, 3]
    return frames.astype(np.uint8), {"n_video_frames": n, "crop": used}


# ---------------------------------------------------------------------------------------------------
# audio


def read_wav(path: str) -> Tuple[np.ndarray, int]:
    """PCM wav -> (float32 mono in [-1, 1], sample rate) with the standard ``wave`` module."""
    try:
        with wave.open(path, "rb") as w:
            channels, width, rate, declared = w.getnchannels(), w.getsampwidth(), w.getframerate(), w.getnframes()
            raw = w.readframes(declared)
    except FileNotFoundError:
        raise MediaError("file not found") from None
    except (wave.Error, EOFError) as err:
        raise MediaError(f"not a readable PCM wav ({err or 'empty file'}); convert it with "
                         f"`ffmpeg -i IN -acodec pcm_s16le OUT.wav`") from None
    got = len(raw) // (width * channels) if width and channels else 0
    if got == 0:
        raise MediaError("no audio samples")
    if got < declared:
        raise MediaError(f"truncated: header declares {declared} samples, file holds {got}")
    raw = raw[:got * width * channels]
    if width == 1:
        x = (np.frombuffer(raw, np.uint8).astype(np.float32) - 128.0) / 128.0
    elif width == 2:
        x = np.frombuffer(raw, "<i2").astype(np.float32) / 32768.0
    elif width == 3:
        b = np.frombuffer(raw, np.uint8).reshape(-1, 3).astype(np.int32)
        v = b[:, 0] | (b[:, 1] << 8) | (b[:, 2] << 16)
        x = (np.where(v >= 1 << 23, v - (1 << 24), v) / float(1 << 23)).astype(np.float32)
    elif width == 4:
        x = (np.frombuffer(raw, "<i4") / float(1 << 31)).astype(np.float32)
    else:
        raise MediaError(f"unsupported sample width {width} bytes")
    return x.reshape(-1, channels).mean(axis=1), int(rate)


def loudest_window(x: np.ndarray, length: int) -> np.ndarray:
    """The ``length`` samples with the most energy (RAVDESS clips open and close with silence);
    shorter signals are zero-padded on both sides."""
    if x.shape[0] <= length:
        pad = length - x.shape[0]
        return np.pad(x, (pad // 2, pad - pad // 2))
    energy = np.concatenate([[0.0], np.cumsum(x.astype(np.float64) ** 2)])
    start = int(np.argmax(energy[length:] - energy[:-length]))
    return x[start:start + length]


_FRONT_END = {}


def audio_logmel(x: np.ndarray, rate: int) -> np.ndarray:
    """mono waveform at ``rate`` -> float32 [64, 188] log-mel of its loudest 2.99 s at 16 kHz."""
    import torch
    from ..modules.audio import LogMelSpectrogram, resample
    if "logmel" not in _FRONT_END:
        _FRONT_END["logmel"] = LogMelSpectrogram(SAMPLE_RATE, n_fft=N_FFT, hop_length=HOP, n_mels=N_MELS)
    with torch.no_grad():
        wave16 = resample(torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)), rate, SAMPLE_RATE)
        clip = torch.from_numpy(loudest_window(wave16.numpy(), CLIP_SAMPLES))
        logmel = _FRONT_END["logmel"](clip)                                                 # [64, 188]
    return logmel.numpy().astype(np.float32)


# ---------------------------------------------------------------------------------------------------
# one clip -> one NPZ


def process_clip(clip: RavdessClip, out_dir: str, num_frames: int = 8, size: int = 112, crop: str = "auto",
                 cascade: Optional[str] = None, settings: Optional[Dict] = None) -> Tuple[str, Optional[str], str]:
    """Cache one clip; returns (stem, None, crop used) or (stem, "file: reason", "") without raising."""
    try:
        samples, rate = read_wav(clip.audio)
        logmel = audio_logmel(samples, rate)
    except Exception as err:  # noqa: BLE001 - any failure is reported per file and the run goes on
        return clip.stem, f"{clip.audio}: {err if isinstance(err, MediaError) else repr(err)}", ""
    try:
        frames, info = read_video_frames(clip.video, num_frames, size, crop, cascade)
    except ImportError:
        raise
    except Exception as err:  # noqa: BLE001
        return clip.stem, f"{clip.video}: {err if isinstance(err, MediaError) else repr(err)}", ""
    write_cache_file(os.path.join(out_dir, clip.stem + ".npz"), frames, logmel, clip.name, settings or {},
                     crop=info["crop"], n_video_frames=np.int64(info["n_video_frames"]),
                     audio_seconds=np.float32(samples.shape[0] / float(rate)), sample_rate=np.int64(SAMPLE_RATE),
                     video_file=np.array(os.path.basename(clip.video)),
                     audio_file=np.array(os.path.basename(clip.audio)))
    return clip.stem, None, info["crop"]


def _init_worker():
    import torch
    torch.set_num_threads(1)            # one clip per process: small FFTs on many threads only contend
    try:
        import cv2
        cv2.setNumThreads(1)
    except ImportError:
        pass


def _run_job(job):
    return process_clip(*job)


# ---------------------------------------------------------------------------------------------------
# command line


def _progress(iterable, total: int):
    try:
        from tqdm import tqdm
    except ImportError:
        return iterable
    return tqdm(iterable, total=total, unit="clip", desc="ravdess-prep", dynamic_ncols=True)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m merbench_plugins ravdess-prep",
        description="Cache RAVDESS speech clips as NPZ: 8 RGB crops [8,112,112,3] uint8 from each audio-visual "
                    "mp4 (modality 01) and a [64,188] log-mel from its audio-only wav (modality 03). ROOT may "
                    "hold Actor_XX/ folders at any depth (e.g. the unzipped Video_Speech_Actor_XX.zip files "
                    "and Audio_Speech_Actors_01-24.zip). Re-running verifies the cached files, skips the good ones and "
                    "rebuilds missing, truncated, damaged or other-settings ones: after a crash, rerun the same command.")
    p.add_argument("root", nargs="+", help="folder(s) with the RAVDESS download (mp4 and wav files, any nesting; "
                                           "e.g. one video and one audio folder)")
    p.add_argument("out", help="cache folder to write (one <AV stem>.npz per clip)")
    p.add_argument("--workers", type=int, default=min(8, os.cpu_count() or 1),
                   help="parallel processes (default: min(8, CPU count))")
    p.add_argument("--frames", type=int, default=8, help="frames per clip, evenly spaced (default 8)")
    p.add_argument("--size", type=int, default=112, help="side of the square crops (default 112)")
    p.add_argument("--crop", choices=["auto", "face", "center"], default="auto",
                   help="face: Haar-cascade face box; center: central square; auto (default): face when "
                        "OpenCV ships the cascade, else center")
    p.add_argument("--cascade", default=None, help=f"path to {CASCADE} (default: the one in cv2.data)")
    p.add_argument("--overwrite", action="store_true",
                   help="redo every clip, also good ones (needed to change the settings of an existing cache)")
    p.add_argument("--limit", type=int, default=None, help="only the first N clips (a quick try)")
    return p


def _params(args) -> Dict:
    return {"frames": args.frames, "size": args.size, "crop": args.crop, "sample_rate": SAMPLE_RATE,
            "n_fft": N_FFT, "hop": HOP, "n_mels": N_MELS, "mel_frames": MEL_FRAMES, "resampler": RESAMPLER}


def _remove_stale_temps(out: str) -> int:
    """Temp files a killed run left behind (``.tmp-*``; finished files are never temp files)."""
    stale = [f for f in os.listdir(out) if f.startswith(".tmp-")]
    for f in stale:
        os.unlink(os.path.join(out, f))
    return len(stale)


def _existing(clips: List[RavdessClip], out: str, params: Dict, overwrite: bool):
    """(clips to do, [(file, reason)] of cache files to rebuild, {stem: crop} of the good ones)."""
    todo, bad, crops = [], [], {}
    for c in clips:
        path = os.path.join(out, c.stem + ".npz")
        if overwrite or not os.path.exists(path):
            todo.append(c)
            continue
        try:
            crops[c.stem] = read_cache_file(path, params)["header"].get("crop", "center")
        except CacheError as err:
            bad.append((err.path, err.reason))
            todo.append(c)
    return todo, bad, crops


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        require_cv2()
        cascade = None if args.crop == "center" else find_cascade(args.cascade)
    except (ImportError, FileNotFoundError) as err:
        return refuse(err)
    if args.crop == "face" and cascade is None:
        return refuse(f"--crop face needs {CASCADE}, which this OpenCV build does not ship; pass --cascade PATH "
                      f"or use --crop center")
    if args.frames < 1 or args.size < 8:
        return refuse("--frames must be >= 1 and --size >= 8")
    try:
        found = discover(args.root)
    except FileNotFoundError as err:
        return refuse(err)
    clips = found.clips[:args.limit] if args.limit else found.clips
    print(f"found {len(found.clips)} audio-visual clips with their wav; ignored {found.video_only} video-only "
          f"copies and {found.song} song files; {len(found.problems)} file(s) with problems")
    for path, reason in found.problems[:20]:
        print(f"  skipped {path}: {reason}")
    if len(found.problems) > 20:
        print(f"  ... {len(found.problems) - 20} more in {os.path.join(args.out, MANIFEST)}")
    if not clips:
        print(f"error: no usable clip under {' '.join(args.root)}: expected files such as "
              f"Actor_01/01-01-03-01-01-01-01.mp4 with Actor_01/03-01-03-01-01-01-01.wav (any folder nesting)",
              file=sys.stderr)
        return 1

    os.makedirs(args.out, exist_ok=True)
    params = _params(args)
    manifest_path = os.path.join(args.out, MANIFEST)
    if os.path.exists(manifest_path) and not args.overwrite:
        try:
            with open(manifest_path) as f:
                old = json.load(f).get("params", {})
        except (OSError, ValueError, AttributeError):
            old = params                       # unreadable manifest: the files' own headers decide
        if settings_diff(old, params):
            return refuse(f"{args.out} was made with other settings ({settings_diff(old, params)}); use another "
                          f"OUT, the same settings, or --overwrite to rebuild every clip")
    stale = _remove_stale_temps(args.out)
    todo, bad, crops = _existing(clips, args.out, params, args.overwrite)
    # the settings are on disk before the first clip: a killed run cannot leave clips of unknown settings
    atomic_write_text(manifest_path, json.dumps({"params": params, "status": "running", "clips_found": len(found.clips),
                                                 "started": time.strftime("%Y-%m-%d %H:%M:%S")}, indent=2) + "\n")
    if stale:
        print(f"removed {stale} temp file(s) left by an interrupted run")
    for path, reason in bad[:20]:
        print(f"  rebuilding {path}: {reason}")
    if len(bad) > 20:
        print(f"  ... {len(bad) - 20} more to rebuild, listed in {manifest_path}")
    print(f"{len(clips) - len(todo)} already cached, {len(todo)} to do ({len(bad)} bad file(s) to rebuild), "
          f"crop={args.crop}{' (cascade ' + cascade + ')' if cascade else ''}, workers={args.workers}")
    jobs = [(c, args.out, args.frames, args.size, args.crop, cascade, params) for c in todo]
    failures: List[Tuple[str, str]] = []
    start = time.time()
    interrupted = False
    try:
        if args.workers > 1 and len(jobs) > 1:
            import multiprocessing as mp
            # spawn, not fork: torch's thread pools do not survive a fork
            with mp.get_context("spawn").Pool(min(args.workers, len(jobs)), initializer=_init_worker) as pool:
                for stem, error, crop in _progress(pool.imap_unordered(_run_job, jobs), len(jobs)):
                    _record(stem, error, crop, failures, crops)
        else:
            _init_worker()
            for job in _progress(jobs, len(jobs)):
                _record(*_run_job(job), failures, crops)
    except KeyboardInterrupt:
        interrupted = True
    elapsed = time.time() - start

    cached = [c.stem for c in clips if c.stem in crops]
    no_face = sorted(s for s in cached if crops[s] == "no_face")
    report = {"params": params, "status": "interrupted" if interrupted else "complete",
              "root": [os.path.abspath(r) for r in args.root], "clips_found": len(found.clips),
              "clips_cached": len(cached), "video_only_ignored": found.video_only, "song_ignored": found.song,
              "crops": dict(sorted(Counter(crops[s] for s in cached).items())), "no_face": no_face,
              "rebuilt": [{"file": p, "reason": r} for p, r in bad],
              "failed": [{"clip": s, "reason": r} for s, r in failures],
              "name_problems": [{"file": p, "reason": r} for p, r in found.problems],
              "seconds": round(elapsed, 1)}
    atomic_write_text(manifest_path, json.dumps(report, indent=2) + "\n")

    for stem, reason in failures:
        print(f"  failed {stem}: {reason}")
    print(f"done in {elapsed:.1f} s: {len(cached)} of {len(clips)} clips cached in {args.out}, "
          f"{len(todo) - len(failures)} new, {len(bad)} rebuilt, {len(failures)} failed; report: {manifest_path}")
    if no_face:
        print(f"{len(no_face)} of {len(cached)} clips had no detected face: their frames are the central square "
              f"instead (listed under no_face in {manifest_path})")
    if interrupted:
        print("interrupted: finished clips are kept; run the same command again to resume", file=sys.stderr)
        return 130
    return 0 if cached else 1


def _record(stem: str, error: Optional[str], crop: str, failures: List, crops: Dict):
    if error:
        failures.append((stem, error))
        crops.pop(stem, None)
    else:
        crops[stem] = crop


# ---------------------------------------------------------------------------------------------------
# generated RAVDESS-shaped clips (tests, demos)

# emotion code -> (video colour group, audio pitch group): no single modality separates every class,
# so fusion has something to add (4-class: video confuses neutral/angry, audio pairs neutral+sad, happy+angry)
SYNTHETIC_CUES = {1: (0, 0), 2: (1, 0), 3: (1, 1), 4: (2, 0), 5: (0, 1), 6: (2, 1), 7: (3, 0), 8: (3, 1)}
_COLOURS = [(40, 40, 220), (40, 200, 40), (220, 60, 40), (40, 210, 220)]     # BGR


def write_wav(path: str, samples: np.ndarray, rate: int, channels: int = 1) -> None:
    """float [-1, 1] [N] or [N, channels] -> 16-bit PCM wav (standard ``wave`` module)."""
    data = np.clip(np.asarray(samples, dtype=np.float64), -1, 1)
    pcm = (data * 32767).astype("<i2")
    with wave.open(path, "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(pcm.tobytes())


def make_synthetic_ravdess(root: str, actors=range(1, 7), emotions=(1, 3, 4, 5), statements=(1, 2),
                           repetitions=(1,), intensities=(1,), frame_size=(96, 72), n_frames=24, fps=30,
                           audio_rate=48000, seconds=1.5, video_only=True, seed=0) -> List[str]:
    """Write RAVDESS-shaped clips the way the download unzips: ``Video_Speech_Actor_XX/Actor_XX/*.mp4``
    (modality 01, plus 02 copies) and ``Audio_Speech_Actors_01-24/Actor_XX/*.wav`` (modality 03).

    Video: a noisy frame with a coloured ellipse ("face") whose colour follows the emotion's video
    group; audio: a harmonic tone in silence whose pitch follows its audio group (see
    ``SYNTHETIC_CUES``); strong intensity is louder. Returns the AV mp4 paths. Needs OpenCV.
    """
    cv2 = require_cv2()
    rng = np.random.RandomState(seed)
    w, h = frame_size
    written = []
    for actor in actors:
        vdir = os.path.join(root, f"Video_Speech_Actor_{actor:02d}", f"Actor_{actor:02d}")
        adir = os.path.join(root, "Audio_Speech_Actors_01-24", f"Actor_{actor:02d}")
        os.makedirs(vdir, exist_ok=True)
        os.makedirs(adir, exist_ok=True)
        for emotion in emotions:
            for intensity in intensities:
                if emotion == 1 and intensity == 2:
                    continue
                for statement in statements:
                    for repetition in repetitions:
                        key = f"01-{emotion:02d}-{intensity:02d}-{statement:02d}-{repetition:02d}-{actor:02d}"
                        vgroup, agroup = SYNTHETIC_CUES[emotion]
                        frames = []
                        for t in range(n_frames):
                            img = rng.randint(60, 120, size=(h, w, 3)).astype(np.uint8)
                            cx = w // 2 + int(3 * math.sin(t / 3.0)) + rng.randint(-2, 3)
                            colour = tuple(int(c * (0.8 + 0.04 * (actor % 5))) for c in _COLOURS[vgroup])
                            cv2.ellipse(img, (cx, h // 2), (w // 5, h // 3), 0, 0, 360, colour, -1)
                            frames.append(img)
                        for modality in ((1, 2) if video_only else (1,)):
                            path = os.path.join(vdir, f"{modality:02d}-{key}.mp4")
                            writer = cv2.VideoWriter(path, cv2.VideoWriter_fourcc(*"mp4v"), fps, (w, h))
                            if not writer.isOpened():
                                raise RuntimeError(f"OpenCV cannot write mp4 files here ({path})")
                            for img in frames:
                                writer.write(img)
                            writer.release()
                            if modality == 1:
                                written.append(path)
                        n = int(seconds * audio_rate)
                        t = np.arange(n) / audio_rate
                        f0 = (140.0 if agroup == 0 else 280.0) * (1 + 0.03 * (actor % 4)) * rng.uniform(0.97, 1.03)
                        tone = sum(np.sin(2 * np.pi * f0 * k * t) / k for k in (1, 2, 3))
                        envelope = ((t > 0.25 * seconds) & (t < 0.8 * seconds)).astype(np.float64)
                        loud = 0.25 * (1.6 if intensity == 2 else 1.0)
                        audio = loud * tone * envelope / 1.8 + 0.01 * rng.randn(n)
                        write_wav(os.path.join(adir, f"03-{key}.wav"), audio, audio_rate)
    return written
