"""The polling-strategy comparison harness (``python -m bench compare``) and the
performance bar, measured (``python -m bench targets``).

__main__.py   the CLI: options, profiles (default, --quick), exit status
targets.py    the bar's scenarios (waiting, fan-out, empty, holding), measured
bar.py        the bar's targets, read off those measurements, and its table
holders.py    many long polls held from several client processes
server.py     start/stop Parley in the scaled mode (gunicorn, PostgreSQL, Redis)
workloads.py  watchers, chat, group-burst, fan-out: devices, conversations, sends
run.py        set-up, then one phase per strategy: poll loops, sends, drain
clients.py    the simulated devices: aiohttp, the poll loops, traffic counters
ledger.py     every (message, device) delivery checked: lost, duplicate, latency
measure.py    CPU and memory of web, PostgreSQL, Redis and the client from /proc
report.py     terminal table, JSON record, Markdown report with plots
"""
