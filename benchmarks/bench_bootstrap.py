"""bootstrap's own work: a table read whole into one gzip CSV in an S3 server, rows/s and RSS.

What is timed is what bootstrap does before AiTEMS reads the file (which is AiTEMS's time, not
ours): the extraction from SQLite, shaping and validation, the CSV, gzip, and the multipart
upload to moto's S3 server on loopback (its own process), plus staging what the next run
needs. The load runs in a child process, so its peak RSS (``ru_maxrss``) is its own.

    python benchmarks/bench_bootstrap.py              # 1M interaction rows
    python benchmarks/bench_bootstrap.py --big        # and 10M (about 1 GB of SQLite first)

Targets (issue 21): >= 300,000 rows/s at 1M on a 2-core machine, peak RSS <= 100 MB and flat
from 1M to 10M.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import CHILD_ENV, machine, source_db, workdir, write_spec

BUCKET = "bench-aitems"
TARGET_ROWS_PER_SECOND = 300_000
TARGET_RSS_MB = 100.0


def child(spec_path: str) -> None:
    """Write the events table's file; print what it took."""
    from aitems_sync.commands import open_sources, open_state
    from aitems_sync.objectstorage.client import s3_client
    from aitems_sync.objectstorage.upload import GzipWriter, MultipartUpload
    from aitems_sync.spec.load import load_spec
    from aitems_sync.sync.fileload import FileLoad

    spec = load_spec(Path(spec_path))
    where = spec.object_storage
    assert where is not None
    storage = s3_client(where.endpoint, where.region, "bench", "bench")
    dataset = spec.datasets["events"]
    started = time.perf_counter()
    with open_state(spec) as state, open_sources(spec) as sources, \
            MultipartUpload(storage, where.bucket, f"{where.prefix}events.csv.gz") as upload:
        gzip = GzipWriter(upload)
        snapshot = FileLoad(dataset, sources[dataset.source], state, run_id="bench").write(gzip)
        gzip.close()
        upload.complete()
    print(json.dumps({"rows": snapshot.rows, "seconds": time.perf_counter() - started,
                      "file_bytes": upload.bytes_written, "text_bytes": gzip.text_bytes}))


def measure(rows: int, endpoint: str) -> dict[str, float]:
    source = source_db("events", rows)
    work = workdir(f"bootstrap-{rows}")
    spec = write_spec(work, "events", "http://127.0.0.1:1/api/v1", source)
    spec.write_text(spec.read_text() + f"object_storage: {{endpoint: '{endpoint}', bucket: "
                    f"{BUCKET}, prefix: bench/{rows}/}}\n")
    started = time.perf_counter()
    process = subprocess.Popen([sys.executable, __file__, "--child", str(spec)],
                               stdout=subprocess.PIPE, env=CHILD_ENV)
    assert process.stdout is not None
    output = process.stdout.read()
    _, status, usage = os.wait4(process.pid, 0)
    wall = time.perf_counter() - started
    assert os.waitstatus_to_exitcode(status) == 0, output
    result = json.loads(output)
    assert result["rows"] == rows, result
    return {"rows": rows, "wall_s": wall, "load_s": result["seconds"],
            "rows_per_s": rows / result["seconds"], "peak_rss_mb": usage.ru_maxrss / 1024,
            "cpu_s": usage.ru_utime + usage.ru_stime, "file_mb": result["file_bytes"] / 1e6,
            "csv_mb": result["text_bytes"] / 1e6}


def moto_server() -> tuple[subprocess.Popen[bytes], str]:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    process = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p",
                                str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    endpoint = f"http://127.0.0.1:{port}"
    from aitems_sync.objectstorage.client import s3_client

    client = s3_client(endpoint, "kr-standard", "bench", "bench")
    for _ in range(100):
        try:
            client.create_bucket(Bucket=BUCKET,
                                 CreateBucketConfiguration={"LocationConstraint": "kr-standard"})
            return process, endpoint
        except Exception:  # not listening yet
            time.sleep(0.1)
    raise RuntimeError("moto's S3 server did not start")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--child")
    parser.add_argument("--big", action="store_true")
    args = parser.parse_args()
    if args.child:
        child(args.child)
        return
    print(machine())
    server, endpoint = moto_server()
    try:
        results = [measure(1_000_000, endpoint)]
        if args.big:
            results.append(measure(10_000_000, endpoint))
    finally:
        server.terminate()
        server.wait()
    print("| rows | load s | rows/s | peak RSS MB | CPU s | CSV MB | gzip MB |")
    print("|---:|---:|---:|---:|---:|---:|---:|")
    for r in results:
        print(f"| {r['rows']:,} | {r['load_s']:.2f} | {r['rows_per_s']:,.0f} | "
              f"{r['peak_rss_mb']:.1f} | {r['cpu_s']:.1f} | {r['csv_mb']:.0f} | "
              f"{r['file_mb']:.1f} |")
    first = results[0]
    print(f"target >= {TARGET_ROWS_PER_SECOND:,} rows/s at 1M: "
          f"{'met' if first['rows_per_s'] >= TARGET_ROWS_PER_SECOND else 'short'}; "
          f"peak RSS <= {TARGET_RSS_MB:.0f} MB: "
          f"{'met' if max(r['peak_rss_mb'] for r in results) <= TARGET_RSS_MB else 'over'}")


if __name__ == "__main__":
    main()
