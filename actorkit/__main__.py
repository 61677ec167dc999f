"""The command line: ``actorkit start|stop|status`` (also ``python -m actorkit``)."""

from __future__ import annotations

import argparse
import json
import sys
import threading

from . import cluster, runtime


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="actorkit", description="Run an actorkit node that drivers can join.")
    commands = parser.add_subparsers(dest="command", required=True)
    start = commands.add_parser("start", help="start a node server")
    start.add_argument("--head", action="store_true", help="start the head node")
    start.add_argument("--address", help="join the head node at HOST:PORT with this machine")
    start.add_argument("--host", default="127.0.0.1", help="interface to listen on (default: loopback only)")
    start.add_argument(
        "--port",
        type=int,
        help="head: serve drivers and nodes over TCP on this port (default: a unix socket only, "
        "for drivers on this machine); member: serve objects on this port (default: any free one)",
    )
    start.add_argument("--num-cpus", type=float, help="CPUs to offer (default: all)")
    start.add_argument("--num-gpus", type=float, help="GPUs to offer (default: 0)")
    start.add_argument("--resources", type=json.loads, help='custom resources as JSON, e.g. \'{"node_a": 1}\'')
    start.add_argument("--object-store-memory", type=int, help="bytes of shared memory for objects")
    start.add_argument("--block", action="store_true", help="stay in the foreground")
    commands.add_parser("stop", help="stop the node started on this machine")
    status = commands.add_parser("status", help="show nodes, resources and their use")
    status.add_argument("--address", default="auto")
    dashboard = commands.add_parser("dashboard", help="serve a live page of the node started on this machine")
    dashboard.add_argument("--address", default="auto")
    dashboard.add_argument("--port", type=int, default=0, help="port on 127.0.0.1 (default: any free one)")
    args = parser.parse_args(argv)

    if args.command == "stop":
        return cluster.stop_local_cluster()
    if args.command == "dashboard":
        return _serve_dashboard(args.address, args.port)
    if args.command == "status":
        from .status import print_status  # lazy: `actorkit start` (a node) loads no driver client

        return print_status(args.address)
    if args.head == bool(args.address):
        parser.error("start needs either --head or --address HOST:PORT (of the head)")
    if not args.block:
        return cluster.start_head_in_background(sys.argv[1:] if argv is None else argv)
    num_cpus = int(args.num_cpus) if args.num_cpus is not None and args.num_cpus == int(args.num_cpus) else args.num_cpus
    if args.address:
        cluster.run_member(
            args.address, num_cpus, args.num_gpus, args.resources, args.host, args.port, args.object_store_memory
        )
    else:
        cluster.run_head(num_cpus, args.num_gpus, args.resources, args.host, args.port, args.object_store_memory)
    return 0


def _serve_dashboard(address: str, port: int) -> int:
    from .dashboard import Dashboard  # lazy: http.server loads for `actorkit dashboard` only

    try:
        runtime.init(address=address, log_to_driver=False)
    except ConnectionError as e:
        print(f"actorkit dashboard: {e}")
        return 1
    page = Dashboard(runtime.current_client(), port)
    print(f"actorkit dashboard: {page.url}  (Ctrl-C stops it)", flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        pass
    finally:
        page.stop()
        runtime.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
