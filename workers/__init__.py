"""Background processes, each a small class run by ``python -m workers NAME``.

base.Worker         the loop: run a step, sleep, stop cleanly on SIGTERM
inbox_pruner        drops inbox entries past the retention period
"""
