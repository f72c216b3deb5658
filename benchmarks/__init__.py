"""The poolwatch benchmark harness: ``python -m benchmarks``.

It starts a loopback server in a process of its own (nginx when it is on
PATH, otherwise :mod:`benchmarks.builtin_server`), runs every scenario of
:mod:`benchmarks.scenarios` against every client of
:mod:`benchmarks.clients`, each pair in a fresh process pinned to the
other core, runs interleaved across clients, and writes
``benchmarks/results/latest.{md,json,png}``.

Modules: :mod:`~benchmarks.spec` (shared constants and records),
:mod:`~benchmarks.servers` and :mod:`~benchmarks.builtin_server` (the
loopback servers), :mod:`~benchmarks.registry` and
:mod:`~benchmarks.clients` (the clients, one function each, with
:mod:`~benchmarks.rawsocket` as the floor), :mod:`~benchmarks.scenarios`,
:mod:`~benchmarks.cell` (one client in one scenario, in its own process),
:mod:`~benchmarks.driver` (runs a scenario's cells, interleaved),
:mod:`~benchmarks.report` and :mod:`~benchmarks.cli`.

Apart from the throughput scenarios: ``python -m benchmarks.stress`` (32
threads against the fault server of :mod:`~benchmarks.faultserver`, with
the request mix of :mod:`~benchmarks.faultload`), ``python -m
benchmarks.soak`` (200 000 requests, watching memory, threads and file
descriptors) and ``python -m benchmarks.idle`` (S7: 1 000 idle
connections).
"""
