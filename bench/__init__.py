"""The polling-strategy comparison harness (``python -m bench compare``).

__main__.py   the CLI: options, profiles (default, --quick), exit status
server.py     start/stop Parley in the scaled mode (gunicorn, PostgreSQL, Redis)
workloads.py  watchers, chat, group-burst: devices, conversations, plan of sends
run.py        set-up, then one phase per strategy: poll loops, sends, drain
clients.py    the simulated devices: aiohttp, the poll loops, traffic counters
ledger.py     every (message, device) delivery checked: lost, duplicate, latency
measure.py    CPU and memory of web, PostgreSQL, Redis and the client from /proc
report.py     terminal table, JSON record, Markdown report with plots
"""
