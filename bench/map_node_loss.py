"""A Ray Data map over a callable class when a node dies mid-map: actor pool against tasks.

Why the data stages run their workers in tasks (``pipelines/stage_exec.py``). On a local cluster of
4 one-CPU nodes (``ray.cluster_utils.Cluster``), a stage-like map runs a worker with a costly
``__init__`` (``--init-s``) over ``--blocks`` read units of ``--work-s`` each. When the first piece
file is written, one worker node is removed (``remove_node``, not graceful). Contestants: ``tasks``,
the stages' ``map_units`` (the worker built once per process); ``actors``, the same read and
``_PieceWriter`` on a 4-actor ``ActorPoolStrategy``, as ``map_units`` ran a costly worker before. Reported per run: seconds to the end, or a hang past ``--timeout``.

    python -m bench.map_node_loss                     # actors, then tasks, then both again
    python -m bench.map_node_loss --runs tasks actors --timeout 300

Each run is its own process (its own cluster), killed at ``--timeout``.
"""
from __future__ import annotations

import argparse
import contextlib
import os
import signal
import subprocess
import sys
import threading
import time

from cluster.ray_settings import system_config, use_node_env

BLOCKS, WORK_S, INIT_S = 40, 1.0, 1.0


def _run(mode: str, blocks: int, work_s: float, init_s: float) -> None:
    import tempfile

    import pyarrow as pa
    import ray
    import ray.data
    from ray.cluster_utils import Cluster

    from pipelines import stage_exec, storage

    class Writer:  # the StageWriter surface map_units uses
        stage = "bench"

        def __init__(self, tmp):
            self.tmp = tmp

        def add_file(self, *args):
            pass

    def read_unit(unit):
        yield pa.table({"x": list(range(unit.start, unit.start + 10))})

    class Costly:
        costly_setup = True

        def __init__(self):
            time.sleep(init_s)

        def __call__(self, table):
            time.sleep(work_s)
            return table, {"rows": table.num_rows}

    use_node_env()
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False,
                                                             "_system_config": system_config()})
    workers = [cluster.add_node(num_cpus=1) for _ in range(3)]
    cluster.wait_for_nodes()
    ray.init(address=cluster.address, log_to_driver=False)
    ray.data.DataContext.get_current().enable_progress_bars = False
    tmp = tempfile.mkdtemp(prefix="map_node_loss-")

    def remove_when_written():  # the first piece file: every worker holds a block, actors queued calls
        while not any(f.endswith(".parquet") for f in os.listdir(tmp)):
            time.sleep(0.02)
        cluster.remove_node(workers[0], allow_graceful=False)

    threading.Thread(target=remove_when_written, daemon=True).start()
    units = [stage_exec.Unit("unit", i * 10) for i in range(blocks)]
    schema = pa.schema([("x", pa.int64())])
    start = time.time()
    with stage_exec.stage_data_context():
        if mode == "tasks":  # the stages' map_units
            totals, _ = stage_exec.map_units(Writer(tmp), units, read=read_unit, worker=Costly, schema=schema)
        else:  # map_units as it was: the same read and _PieceWriter, on a 4-actor pool
            ds = ray.data.read_datasource(stage_exec.UnitSource(units, read_unit, (), storage.capture_env()),
                                          override_num_blocks=len(units))
            ds = ds.map_batches(stage_exec._PieceWriter, fn_constructor_args=(Costly, (), schema, tmp, "part", {}),
                                batch_size=None, batch_format="pyarrow", num_cpus=1,
                                compute=ray.data.ActorPoolStrategy(min_size=4, max_size=4, initial_size=4))
            totals = {"rows": sum(stage_exec.collect(ds).column("rows").to_pylist())}
    print(f"RESULT {mode} {totals['rows'] // 10} blocks in {time.time() - start:.1f} s", flush=True)
    ray.shutdown()
    cluster.shutdown()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--runs", nargs="+", default=["actors", "tasks", "actors", "tasks"], choices=["actors", "tasks"])
    ap.add_argument("--blocks", type=int, default=BLOCKS)
    ap.add_argument("--work-s", type=float, default=WORK_S)
    ap.add_argument("--init-s", type=float, default=INIT_S)
    ap.add_argument("--timeout", type=float, default=240)
    args = ap.parse_args()
    print(f"{args.blocks} blocks x {args.work_s} s on 4 one-CPU nodes (ideal ~{args.blocks * args.work_s / 4:.0f} s), "
          f"one node removed at the first file; load average {os.getloadavg()[0]:.1f}")
    for mode in args.runs:
        cmd = [sys.executable, "-m", "bench.map_node_loss", "--child", mode, str(args.blocks), str(args.work_s),
               str(args.init_s)]
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                                start_new_session=True)  # its cluster's processes share its group
        try:
            out, _ = proc.communicate(timeout=args.timeout)
            line = next((x for x in out.splitlines() if x.startswith("RESULT ")), "RESULT " + mode + " failed")
            print(line[len("RESULT "):], flush=True)
        except subprocess.TimeoutExpired:
            print(f"{mode} hung: not done after {args.timeout:.0f} s", flush=True)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        time.sleep(2)


if __name__ == "__main__":
    if sys.argv[1:2] == ["--child"]:
        _run(sys.argv[2], int(sys.argv[3]), float(sys.argv[4]), float(sys.argv[5]))
    else:
        main()
