"""What poolwatch's instrumentation costs per request, measured two ways.

``python -m benchmarks.overhead`` runs S1 (sequential keep-alive GETs of a
tiny body) in one process with three transports side by side, round after
round, and reports the CPU time per request of each (all threads, the
workers included):

- the defaults: stats, leak tracking and call-site capture on;
- the lightest setting: ``call_site_depth=0`` (stats are always kept);
- the defaults plus one listener that does nothing.

Whole-request numbers move by several percent from run to run on a busy
machine, more than the costs being measured. So the second half times the
instrumented steps themselves, in a loop, and divides them by the same
run's CPU per request: capturing a call site behind the frames an HTTP
client library adds, and emitting an event when nobody listens.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
import timeit
from collections.abc import Callable

import poolwatch
from poolwatch._leaks import capture_call_site

from .servers import start_server

CLIENT_FRAMES = 30  # about what requests.Session.get adds above the transport


def _noop(event: poolwatch.Event) -> None:
    pass


def _configure(transport: poolwatch.Transport, name: str) -> None:
    transport.call_site_depth = 0 if name == "no call-site capture" else 4
    if name == "no-op listener":
        transport.add_listener(_noop)
    else:
        transport.remove_listener(_noop)


SETTINGS = ("defaults", "no call-site capture", "no-op listener")


def _cpu_per_request(transport: poolwatch.Transport, url: str, count: int) -> float:
    start = time.process_time()
    for _ in range(count):
        transport.request("GET", url).read()
    return (time.process_time() - start) / count


def measure_requests(url: str, rounds: int, count: int) -> dict[str, list[float]]:
    """CPU seconds per request for each setting, one sample a round. One
    transport and one connection serve every setting (switched between
    samples), and the order rotates every round, so that neither the
    connection nor drift on the machine favours one of them."""
    samples: dict[str, list[float]] = {name: [] for name in SETTINGS}
    with poolwatch.Transport() as transport:
        _cpu_per_request(transport, url, min(count, 200))  # warm up
        for round_ in range(rounds):
            shift = round_ % len(SETTINGS)
            for name in SETTINGS[shift:] + SETTINGS[:shift]:
                _configure(transport, name)
                samples[name].append(_cpu_per_request(transport, url, count))
    return samples


def _at_depth(frames: int, call: Callable[[], object]) -> Callable[[], object]:
    """``call`` wrapped so that it runs ``frames`` frames down the stack."""

    def nested(level: int) -> object:
        return call() if level == 0 else nested(level - 1)

    return lambda: nested(frames)


def _seconds_per_call(call: Callable[[], object], number: int = 20_000) -> float:
    return min(timeit.repeat(call, number=number, repeat=5)) / number


def measure_steps(url: str) -> dict[str, float]:
    """Seconds per request of each instrumented step: a call-site capture
    behind the frames a client library adds (the empty frames themselves
    subtracted), and the listener check at every event site of a request."""
    baseline = _seconds_per_call(_at_depth(CLIENT_FRAMES, lambda: None))
    capture = _seconds_per_call(_at_depth(CLIENT_FRAMES, lambda: capture_call_site(4)))
    events: list[poolwatch.Event] = []
    with poolwatch.Transport() as transport:
        transport.request("GET", url, listener=events.append).read()
        # What each event site does when no listener is registered.
        check = _seconds_per_call(lambda: transport._listeners or None, number=200_000)
    return {
        "call-site capture": max(capture - baseline, 0.0),
        f"{len(events)} event sites, no listener": check * len(events),
    }


def report(samples: dict[str, list[float]], steps: dict[str, float]) -> str:
    """The markdown report."""
    median = {name: statistics.median(values) for name, values in samples.items()}
    base = median["no call-site capture"]
    lines = [
        "| S1 setting | CPU us/request (median) | min-max | vs lightest |",
        "| --- | ---: | ---: | ---: |",
    ]
    for name, values in samples.items():
        lines.append(
            f"| {name} | {median[name] * 1e6:.1f} | {min(values) * 1e6:.1f}-"
            f"{max(values) * 1e6:.1f} | {median[name] / base - 1:+.1%} |"
        )
    per_request = median["defaults"]
    lines += ["", "| step | us per request | share of a request's CPU |", "| --- | ---: | ---: |"]
    for name, seconds in steps.items():
        lines.append(f"| {name} | {seconds * 1e6:.2f} | {seconds / per_request:.2%} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    """Command line entry point."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.overhead", description=__doc__)
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--requests", type=int, default=2000, help="per round and setting")
    parser.add_argument("--server", choices=("auto", "nginx", "builtin"), default="auto")
    parser.add_argument("--json", action="store_true", help="print JSON instead of markdown")
    args = parser.parse_args(argv)
    with start_server(args.server, cpu=None) as server:
        url = server.base_url + "/tiny"
        samples = measure_requests(url, args.rounds, args.requests)
        steps = measure_steps(url)
    if args.json:
        json.dump({"cpu_per_request": samples, "steps": steps}, sys.stdout, indent=2)
        print()
    else:
        print(f"server: {server.description}; {args.rounds} rounds of {args.requests} requests\n")
        print(report(samples, steps))


if __name__ == "__main__":
    main()
