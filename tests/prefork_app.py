"""A pre-fork server in miniature, for ``tests/test_otlp_fork.py`` (run in an interpreter
of its own: ``python -m tests.prefork_app URL WORKERS MODE``).

The app is imported first, then workers are forked with ``os.fork()``; each initialises
spanmeter after the fork through the gunicorn-style ``post_fork`` hook, serves a known
workload (worker ``k``: ``k + 1`` runs, ``k % 2`` failed tool calls) and leaves through the
``worker_exit`` hook. MODE ``configured-before-fork`` also configures spanmeter in the
parent before forking (the mistake the fork guard is for): the parent serves one run of
agent ``master``, and worker 0 never initialises and serves agent ``never-configured``.
Prints ``{"status": [...]}`` with each worker's exit status.
"""

from __future__ import annotations

import json
import os
import sys
import time
import traceback

import spanmeter
import spanmeter.otlp
from tests import otlp_workload as workload

INTERVAL = 0.1


def worker(k: int, post_fork, mode: str) -> None:
    if mode == "configured-before-fork" and k == 0:
        workload.run(2, agent="never-configured")
        time.sleep(5 * INTERVAL)  # several ticks of the reader inherited from the parent
        return
    post_fork(None, None)
    workload.run(k + 1, failing_tools=k % 2)
    time.sleep(3 * INTERVAL)  # at least one periodic push from the worker's own thread
    spanmeter.otlp.worker_exit(None, None)


def main(url: str, workers: int, mode: str) -> int:
    post_fork = spanmeter.otlp.post_fork_hook(service_name="prefork-app", otlp_endpoint=url,
                                              otlp_interval_seconds=INTERVAL)  # fmt: skip
    if mode == "configured-before-fork":
        spanmeter.configure(service_name="prefork-app", otlp=True, prometheus=False, otlp_endpoint=url,
                            otlp_interval_seconds=INTERVAL)  # fmt: skip
        workload.run(1, agent="master")
    pids = []
    for k in range(workers):
        pid = os.fork()
        if pid == 0:
            code = 0
            try:
                worker(k, post_fork, mode)
            except BaseException:
                traceback.print_exc()
                code = 1
            finally:
                os._exit(code)  # like a forked server's worker: no parent clean-up runs here
        pids.append(pid)
    status = [os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) for pid in pids]
    spanmeter.shutdown()
    print(json.dumps({"status": status}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], int(sys.argv[2]), sys.argv[3]))
