"""STL-10 unlabeled: one pass over a full-size ``unlabeled_X.bin`` at batch 32 must stay under 2 GiB resident.

    python benchmarks/bench_stl10_memory.py [--fill zeros|random] [--dir DIR] [--batch 32] [--images 100000]

Writes ``stl10_binary/`` (``class_names.txt`` and ``unlabeled_X.bin``: 100000 x 27648 bytes = 2.76 GB)
into a temporary directory, then, in a fresh child process per reader, iterates the images once in
batches and reports the child's peak resident set size (``VmHWM``; ``ru_maxrss`` off Linux, shown
too) against the 2 GiB target, with the time. Readers:

  loader  ``neuroplastic.data.load("stl10", split="unlabeled").batches(32)``: positioned reads
          (``neuroplastic.data.mapped.RecordFile``), what the package uses;
  memmap  the same grey conversion over ``np.memmap`` of the file: the approach the loader avoids,
          because the pages of a file mapping a process has touched count in its RSS.

``--fill zeros`` (default) makes the file with ``truncate``: sparse, instant, no disk used. Reading
its holes still goes through the page cache, and the memmap reader still maps one page per 4 KiB
read, so the memory measured is what real data gives; the loader's time is higher than on data
(the kernel zero-fills each read), see ``--fill random``, which writes random bytes in 8 MiB chunks
(and leaves the file in the page cache). The file is deleted afterwards.
"""
from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from neuroplastic.bench import record

TARGET = 2 * 1024**3
RECORD = 3 * 96 * 96


def peak_rss_bytes() -> int:
    """This process's peak RSS: ``VmHWM`` on Linux, else ``ru_maxrss``.

    Linux carries the parent's ``ru_maxrss`` over ``fork`` + ``exec`` (the child starts at the parent's
    peak), while ``VmHWM`` is the high-water mark of the child's own address space.
    """
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024     # Linux reports KiB


def child(reader: str, root: str, batch: int) -> None:
    """One pass in this (fresh) process; prints a JSON line."""
    from neuroplastic import data
    from neuroplastic.data.stl10 import grey_images

    start_rss = peak_rss_bytes()
    t0 = time.perf_counter()
    total, n = 0.0, 0
    if reader == "loader":
        for x, _ in data.load("stl10", path=root, split="unlabeled").batches(batch):
            total += float(x.sum())
            n += len(x)
    else:
        f = Path(root) / "stl10_binary" / "unlabeled_X.bin"
        mm = np.memmap(f, np.uint8, "r", shape=(f.stat().st_size // RECORD, 3, 96, 96))
        for s in range(0, len(mm), batch):
            x = grey_images(mm[s:s + batch])
            total += float(x.sum())
            n += len(x)
    ru_maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * (1 if sys.platform == "darwin" else 1024)
    print(json.dumps({"reader": reader, "images": n, "seconds": time.perf_counter() - t0, "checksum": total,
                      "rss_before": start_rss, "peak_rss": peak_rss_bytes(), "ru_maxrss": ru_maxrss}))


def write_file(root: Path, images: int, fill: str) -> Path:
    d = root / "stl10_binary"
    d.mkdir()
    (d / "class_names.txt").write_text("\n".join(f"class{i}" for i in range(10)) + "\n")
    f = d / "unlabeled_X.bin"
    size = images * RECORD
    with open(f, "wb") as fh:
        if fill == "zeros":
            fh.truncate(size)
        else:
            rng = np.random.default_rng(0)
            chunk = 8 * 1024**2
            for start in range(0, size, chunk):
                fh.write(rng.bytes(min(chunk, size - start)))
    return f


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--fill", choices=("zeros", "random"), default="zeros")
    p.add_argument("--dir", default=None, help="where to write the temporary data set (default: the system temp dir)")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--images", type=int, default=100_000)
    p.add_argument("--readers", nargs="+", choices=("loader", "memmap"), default=["loader", "memmap"])
    p.add_argument("--child", nargs=2, metavar=("READER", "ROOT"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        child(args.child[0], args.child[1], args.batch)
        return 0
    root = Path(tempfile.mkdtemp(prefix="np-stl10-", dir=args.dir))
    try:
        need = args.images * RECORD
        free = shutil.disk_usage(root).free
        if args.fill == "random" and free < need * 1.1:
            sys.exit(f"{root}: {free / 1e9:.1f} GB free, the random file needs {need / 1e9:.2f} GB; use --fill zeros")
        t0 = time.perf_counter()
        f = write_file(root, args.images, args.fill)
        print(f"wrote {f} ({args.fill}): {need / 1e9:.2f} GB, {f.stat().st_blocks * 512 / 1e9:.2f} GB on disk, "
              f"{time.perf_counter() - t0:.1f} s")
        print(f"one pass at batch {args.batch}, target peak RSS <= 2 GiB ({TARGET} bytes)")
        print(f"{'reader':<8} {'images':>7} {'time s':>7} {'img/s':>7} {'RSS before':>11} {'peak RSS':>9} "
              f"{'ru_maxrss':>9} {'peak/target':>11}")
        ok = True
        ratios = {}
        for reader in args.readers:
            out = subprocess.run([sys.executable, __file__, "--batch", str(args.batch), "--child", reader, str(root)],
                                 capture_output=True, text=True, check=True)
            r = json.loads(out.stdout.strip().splitlines()[-1])
            ratio = r["peak_rss"] / TARGET
            ok &= reader != "loader" or ratio <= 1
            ratios[f"peak RSS / 2 GiB, {reader}"] = {"value": ratio, "target": "<= 1.0" if reader == "loader" else "",
                                                     "what": f"{r['images']} images at batch {args.batch}"}
            print(f"{reader:<8} {r['images']:>7} {r['seconds']:>7.1f} {r['images'] / r['seconds']:>7.0f} "
                  f"{r['rss_before'] / 2**20:>7.0f} MiB {r['peak_rss'] / 2**20:>5.0f} MiB "
                  f"{r['ru_maxrss'] / 2**20:>5.0f} MiB {ratio:>11.3f}")
        print("loader within target" if ok else "loader ABOVE target")
        record("stl10_memory", ratios, fill=args.fill)
        return 0 if ok else 1
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
