"""Multi-process tests: two gunicorn instances (four gevent workers) on one PostgreSQL and Redis.

conftest.py    the ``instances`` fixture: start, wait for /readyz, stop
servers.py     one gunicorn process: its environment, readiness and shutdown
client.py      a requests client checked against openapi.yaml, and what users do with it
"""
