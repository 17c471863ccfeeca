"""Classical segmentation: quality on real and synthetic nuclei, speed and memory on big fields.

Reports, as a markdown table on stdout:

* object F1 / precision / recall / mean matched IoU (IoU >= 0.5, border objects excluded on
  both sides) on the DSB 2018 field in the shared data (112 interior nuclei), default
  settings and, for reference, a single global Otsu threshold; and the same field magnified
  0.6x-4x (nuclei of 7-90 px across: a 10x to a 60x objective);
* the same on synthetic demo fields (``datasets.fields.demo.make_field``) against their masks;
* fields/s (wall and CPU time) and peak RSS for 2048 x 2048 two-channel uint16 fields. The
  fields are generated here, saved to a temporary folder and segmented in a child process,
  so the peak RSS is that of segmentation (plus imports and one field), not of generation;
  the RSS before segmenting (imports and one loaded field) is shown in brackets.

Usage::

    python benchmarks/bench_segment.py            # 6 big fields, 8 demo fields
    python benchmarks/bench_segment.py --quick    # 2 big fields, 4 demo fields
"""

from __future__ import annotations

import argparse
import json
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
DSB = Path(os.environ.get("PHENOSCOUT_SHARED_DATA", REPO.parent / "shared" / "data"))
DSB = DSB / "dsb2018_nuclei_field"


def magnified(image: np.ndarray, truth: np.ndarray, factor: float) -> tuple[np.ndarray, ...]:
    """``image`` and ``truth`` as an objective ``factor`` times stronger would see them: pixels
    interpolated, labels by nearest neighbour, and when enlarged fresh pixel noise (5 grey
    levels, the field's own raw noise) added, since interpolation smooths the noise away."""
    from skimage.transform import rescale

    big = rescale(image.astype(np.float64), factor, order=1)
    if factor > 1:
        big += np.random.default_rng(0).normal(0.0, 5.0, big.shape)
    labels = rescale(truth, factor, order=0, preserve_range=True, anti_aliasing=False)
    return np.clip(big, 0, 65535).astype(np.uint16), labels.astype(np.int32)


def quality_rows(n_demo: int) -> list[str]:
    import tifffile

    from datasets.fields.demo import make_field
    from datasets.segmentation.classical import SegmentConfig, segment_field, segment_nuclei
    from datasets.segmentation.metrics import score_segmentation

    rows = []
    if (DSB / "img2d.tif").is_file():
        image, truth = tifffile.imread(DSB / "img2d.tif"), tifffile.imread(DSB / "mask2d.tif")
        for name, cfg in (("default (local)", SegmentConfig()),
                          ("otsu only", SegmentConfig(threshold="otsu"))):  # fmt: skip
            s = score_segmentation(truth, segment_nuclei(image, cfg))
            rows.append(
                f"| DSB 2018 field, {name} | {s.n_true} | {s.n_pred} | {s.tp} | "
                f"{s.precision:.3f} | {s.recall:.3f} | {s.f1:.3f} | {s.mean_iou:.3f} |"
            )
        for factor in (0.6, 2.0, 3.0, 4.0):
            big, labels = magnified(image, truth, factor)
            s = score_segmentation(labels, segment_nuclei(big))
            rows.append(
                f"| DSB 2018 field magnified {factor:g}x | {s.n_true} | {s.n_pred} | {s.tp} | "
                f"{s.precision:.3f} | {s.recall:.3f} | {s.f1:.3f} | {s.mean_iou:.3f} |"
            )
    else:
        rows.append(f"| DSB 2018 field: {DSB} absent | | | | | | | |")
    rng = np.random.default_rng(2024)
    scores = [score_segmentation(m, segment_field(img)) for img, m, _ in
              (make_field(rng, size=512) for _ in range(n_demo))]  # fmt: skip
    tot = {k: sum(getattr(s, k) for s in scores) for k in ("n_true", "n_pred", "tp")}
    f1s, ious = [s.f1 for s in scores], [s.mean_iou for s in scores]
    rows.append(
        f"| {n_demo} demo fields 512x512 (pooled counts; F1 mean, min) | {tot['n_true']} | "
        f"{tot['n_pred']} | {tot['tp']} | {tot['tp'] / max(tot['n_pred'], 1):.3f} | "
        f"{tot['tp'] / max(tot['n_true'], 1):.3f} | {np.mean(f1s):.3f} (min {min(f1s):.3f}) | "
        f"{np.mean(ious):.3f} |"
    )
    return rows


def speed_child(folder: Path, cell_channel: bool) -> None:
    """Segment every field_*.npy under ``folder``; print one JSON line of timings."""
    from datasets.segmentation.classical import SegmentConfig, segment_field
    from datasets.segmentation.metrics import score_segmentation

    cfg = SegmentConfig(cell_channel=1 if cell_channel else None)
    paths = sorted(folder.glob("field_*.npy"))
    np.load(paths[0])
    before_mib = _peak_mib()  # imports and one field in memory
    wall = cpu = 0.0
    f1s, counts = [], []
    for path in paths:
        field = np.load(path)
        w0, c0 = time.perf_counter(), time.process_time()
        labels = segment_field(field, cfg)
        wall += time.perf_counter() - w0
        cpu += time.process_time() - c0
        counts.append(int(labels.max()))
        if not cell_channel:
            f1s.append(score_segmentation(np.load(str(path).replace("field_", "mask_")), labels).f1)
    print(json.dumps({"n": len(paths), "wall": wall, "cpu": cpu, "peak_mib": _peak_mib(),
                      "before_mib": before_mib, "objects": counts, "f1": f1s}))  # fmt: skip


def _peak_mib() -> float:
    """Peak RSS of this process (MiB): VmHWM where /proc has it (ru_maxrss would carry over
    the parent's peak from before exec), else ``resource.getrusage``."""
    status = Path("/proc/self/status")
    if status.is_file():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def speed_rows(n_fields: int, size: int) -> list[str]:
    from datasets.fields.demo import make_field

    rng = np.random.default_rng(7)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(n_fields):
            image, mask, _ = make_field(rng, size=size)
            np.save(Path(tmp) / f"field_{i}.npy", image)
            np.save(Path(tmp) / f"mask_{i}.npy", mask)
        for cells in (False, True):
            cmd = [sys.executable, __file__, "--child", tmp] + (["--cells"] if cells else [])
            out = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout)
            what = "cells (nuclei + cell_channel=1)" if cells else "nuclei (default)"
            f1 = f"F1 mean {np.mean(out['f1']):.3f}" if out["f1"] else ""
            rows.append(
                f"| {what}, {out['n']} fields {size}x{size}x2 uint16 | "
                f"{out['n'] / out['wall']:.2f} | {out['n'] / out['cpu']:.2f} | "
                f"{out['peak_mib']:.0f} ({out['before_mib']:.0f}) | "
                f"{min(out['objects'])}-{max(out['objects'])} per field {f1} |"
            )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="2 big fields, 4 demo fields")
    parser.add_argument("--size", type=int, default=2048, help="side of the big fields")
    parser.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--cells", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        speed_child(args.child, args.cells)
        return
    t0 = time.perf_counter()
    print("| data | true | predicted | matched | precision | recall | F1 | mean IoU |")
    print("|---|---|---|---|---|---|---|---|")
    print("\n".join(quality_rows(4 if args.quick else 8)))
    print()
    print("| segmentation | fields/s (wall) | fields/s (CPU) | peak RSS MiB (before) | objects |")
    print("|---|---|---|---|---|")
    print("\n".join(speed_rows(2 if args.quick else 6, args.size)))
    print(f"\n({os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}; "
          f"benchmark took {time.perf_counter() - t0:.0f} s)")  # fmt: skip


if __name__ == "__main__":
    main()
