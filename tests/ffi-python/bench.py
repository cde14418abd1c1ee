"""The Python side of the binding benchmarks (docs/benchmarks.md, "Bindings"): open a store,
list its deals twice (cold, warm), one edit; or the process's peak RSS after opening the store
with a cache budget and listing it. Not a test (pytest does not collect it).

    python3 tests/ffi-python/bench.py time STORE
    python3 tests/ffi-python/bench.py rss STORE CACHE_MIB

The generated module's directory is $SELLSYNC_BINDINGS (scripts/bench-bindings.sh sets it).
"""

import os
import sys
import time

sys.path.insert(0, os.environ["SELLSYNC_BINDINGS"])
import sellsync  # noqa: E402


def ms(t):
    return (time.perf_counter() - t) * 1000


def peak_rss_kib():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return 0


def main(args):
    if len(args) == 2 and args[0] == "time":
        t = time.perf_counter()
        d = sellsync.Device.open(sellsync.DeviceConfig(store_path=args[1]))
        open_ms = ms(t)
        t = time.perf_counter()
        first = d.deals()
        cold = ms(t)
        t = time.perf_counter()
        deals = d.deals()
        warm = ms(t)
        assert len(first) == len(deals)
        t = time.perf_counter()
        d.set(deals[0].id, [sellsync.FieldInput(name="value", value="4242")])
        edit = ms(t)
        print(f"python: deals={len(deals)} open_ms={open_ms:.1f} list_cold_ms={cold:.1f} "
              f"list_warm_ms={warm:.1f} edit_ms={edit:.1f}")
    elif len(args) == 3 and args[0] == "rss":
        cfg = sellsync.DeviceConfig(store_path=args[1], cache_bytes=int(args[2]) << 20)
        d = sellsync.Device.open(cfg)
        n = len(d.deals())
        assert n == len(d.deals())
        print(f"python: deals={n} cache_mib={args[2]} peak_rss_kib={peak_rss_kib()}")
    else:
        sys.exit("usage: bench.py time STORE | rss STORE CACHE_MIB")


if __name__ == "__main__":
    main(sys.argv[1:])
