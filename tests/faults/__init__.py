"""Fault injection: the delivery guarantees of DESIGN.md while things break.

    conftest.py     throwaway PostgreSQL and Redis, instances a and b behind haproxy
    backends.py     those throwaway servers: start, stop, restart on the same port
    traffic.py      senders that retry, receivers that re-poll, and the ledger
    test_*.py       one fault each: load alone, a killed worker, Redis restarting,
                    PostgreSQL stopping, SIGTERM to an instance, dropped answers

Each test prints one line of figures (sent, delivered, lost, duplicated, faults
injected) and asserts 0 lost and 0 duplicated.
"""
