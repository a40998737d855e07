"""Background processes, each a small class run by ``python -m workers NAME``.

base.Worker         the loop: run a step, pause, repeat; stop on SIGTERM
inbox_pruner        drops inbox entries past the retention period
presence_sweeper    turns users offline when their presence window passes
after_restore       a one-off after a restore from backup: counters jump past the clients'
"""
