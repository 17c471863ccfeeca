"""U-Net nuclei segmentation: training time, quality and speed on this machine.

Trains the segmenter on synthetic demo fields only (``demo_training_pairs``, never the images
scored), then scores it

* on ``../shared/data/dsb2018_nuclei_field`` (img2d.tif + mask2d.tif, a real fluorescence
  field): object F1 at IoU 0.5 and mean matched IoU, border objects excluded on both sides
  (the classical segmenter of ``datasets.segmentation.classical`` alongside, for reference);
* on held-out demo fields (other seeds than the training fields);
* inference speed: fields/s for 2048x2048 2-channel fields (tiles + watershed, whole call).

Usage::

    python benchmarks/bench_segment_unet.py                 # shipped CPU schedule
    python benchmarks/bench_segment_unet.py --seconds 60 --save /tmp/seg.pt
    python benchmarks/bench_segment_unet.py --load /tmp/seg.pt   # score a saved segmenter
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
DSB = REPO.parent / "shared" / "data" / "dsb2018_nuclei_field"


def train(args) -> tuple[object, float]:
    from models.segmentation.segmentation import (
        DEMO_SIZE,
        SegTrainRun,
        demo_training_pairs,
        load_segmenter,
        train_segmenter,
    )

    if args.load:
        return load_segmenter(args.load, args.device), 0.0
    t0, c0 = time.perf_counter(), time.process_time()
    pairs = demo_training_pairs(args.fields, DEMO_SIZE, seed=0)
    gen = time.perf_counter() - t0
    run = SegTrainRun(device=args.device, seed=args.seed, max_seconds=args.seconds,
                      steps=args.steps)  # fmt: skip
    model = train_segmenter(pairs, run=run)
    sec = time.perf_counter() - t0
    last = model.extra["history"][-1]
    print(
        f"train: {args.fields} demo fields {DEMO_SIZE}px (generated in {gen:.1f} s), "
        f"{last['step']} steps ({last['stopped']}) on {model.device}, {sec:.1f} s wall "
        f"({time.process_time() - c0:.0f} CPU-s) in all, "
        f"loss {model.extra['history'][0]['loss']:.3f} -> {last['loss']:.3f}",
        flush=True,
    )
    if args.save:
        model.save(args.save)
    return model, sec


def score_dsb(model) -> dict[str, object]:
    import tifffile

    from datasets.segmentation.classical import segment_nuclei
    from datasets.segmentation.metrics import score_segmentation

    image = tifffile.imread(DSB / "img2d.tif")
    truth = tifffile.imread(DSB / "mask2d.tif").astype(np.int32)
    t0 = time.perf_counter()
    unet = score_segmentation(truth, model.segment(image))
    sec = time.perf_counter() - t0
    classical = score_segmentation(truth, segment_nuclei(image))
    return {"unet": unet, "classical": classical, "seconds": sec}


def score_demo(model, n: int) -> tuple[float, float]:
    from datasets.segmentation.metrics import score_segmentation
    from models.segmentation.segmentation import demo_training_pairs

    scores = [
        score_segmentation(mask, model.segment(image))
        for image, mask in demo_training_pairs(n, 512, seed=1000)
    ]
    return float(np.mean([s.f1 for s in scores])), float(np.mean([s.mean_iou for s in scores]))


def speed(checkpoint: Path, device: str, threads: int, repeats: int) -> None:
    """Print seconds per 2048x2048 2-channel field (normalise, tiles, watershed) and the peak
    RSS of this process, which only loads the segmenter and segments (run as a subprocess)."""
    import torch

    from datasets.fields.demo import make_field
    from models.segmentation.segmentation import load_segmenter

    torch.set_num_threads(threads)
    model = load_segmenter(checkpoint, device)
    field = make_field(np.random.default_rng(7), size=2048, channels=2)[0]
    model.segment(field[:, :512, :512])  # warm-up
    t0 = time.perf_counter()
    for _ in range(repeats):
        n = model.segment(field).max()
    sec = (time.perf_counter() - t0) / repeats
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"{sec} {peak} {n}")


def run_speed(model, args) -> tuple[float, float, int]:
    """(seconds per field, peak RSS MiB, objects found) from a fresh process."""
    with tempfile.TemporaryDirectory() as tmp:
        path = model.save(Path(tmp) / "seg.pt")
        out = subprocess.run(
            [
                sys.executable,
                __file__,
                "--speed-of",
                str(path),
                "--device",
                args.device,
                "--threads",
                str(args.threads),
                "--repeats",
                str(args.repeats),
            ],
            check=True,
            capture_output=True,
            text=True,
        ).stdout.split()
    return float(out[0]), float(out[1]), int(out[2])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="auto")
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch CPU threads (1 is the most robust on a shared CPU)",
    )
    parser.add_argument("--fields", type=int, default=32, help="demo training fields")
    parser.add_argument("--seconds", type=float, default=None, help="training budget")
    parser.add_argument("--steps", type=int, default=None, help="training steps")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--demo-eval", type=int, default=4, help="held-out 512px demo fields")
    parser.add_argument("--repeats", type=int, default=2, help="timed 2048px fields")
    parser.add_argument("--save", type=Path)
    parser.add_argument("--load", type=Path)
    parser.add_argument("--speed-of", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.speed_of:
        return speed(args.speed_of, args.device, args.threads, args.repeats)
    import torch

    torch.set_num_threads(args.threads)
    model, train_sec = train(args)
    rows = []
    if (DSB / "img2d.tif").exists():
        dsb = score_dsb(model)
        for name in ("unet", "classical"):
            s = dsb[name]
            rows.append(
                f"| dsb2018 field, {name} | {s.n_true} | {s.n_pred} | {s.f1:.3f} | "
                f"{s.mean_iou:.3f} |"
            )
    else:
        print(f"skipped dsb2018: {DSB} not found")
    f1, iou = score_demo(model, args.demo_eval)
    rows.append(f"| {args.demo_eval} held-out demo fields 512px, unet | | | {f1:.3f} | {iou:.3f} |")
    per_field, peak, n_objects = run_speed(model, args)
    print("\n| data | true objects | predicted | F1 @ IoU 0.5 | mean matched IoU |")
    print("|---|---|---|---|---|")
    print("\n".join(rows))
    print(
        f"\ntraining: {train_sec:.0f} s wall on {model.device} ({args.threads} threads); "
        f"inference 2048x2048x2 ({n_objects} objects): {per_field:.2f} s/field = "
        f"{1 / per_field:.2f} fields/s, peak RSS {peak:.0f} MiB; load average "
        f"{os.getloadavg()[0]:.1f} (other jobs on this CPU)"
    )


if __name__ == "__main__":
    main()
