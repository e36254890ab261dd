#!/usr/bin/env python3
"""What `kernel_json()` adds to a scan: median of N in-process calls (after one warm-up call).

    python3 benchmarks/kernel_cost.py [--calls 200] [--procfs /proc]

In-process on purpose: the master document is built inside a scan that already runs, so the
process start-up is not part of this cost. Most of it is the kernel generating /proc/net/netstat
and the nine sysctl files, which is why it barely depends on how many sockets exist.
"""
import argparse
import statistics
import time

from tcp_lld.kernel import kernel_json

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--calls", type=int, default=200)
parser.add_argument("--procfs", default="")
arguments = parser.parse_args()

kernel_json(arguments.procfs)
samples = []
for _ in range(arguments.calls):
    start = time.perf_counter_ns()
    kernel_json(arguments.procfs)
    samples.append((time.perf_counter_ns() - start) / 1000)
samples.sort()
print(f"kernel_json(): median {statistics.median(samples):.0f} us over {arguments.calls} calls "
      f"(p10 {samples[len(samples) // 10]:.0f}, p90 {samples[len(samples) * 9 // 10]:.0f}, max {samples[-1]:.0f})")
