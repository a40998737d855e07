"""The WSGI entry point: ``gunicorn -c gunicorn.conf.py wsgi:app``.

gevent must patch the standard library before anything else is imported:
psycopg, redis and the sqlite3 wrapper only cooperate with other greenlets if
they see the patched socket and threading modules.
"""

from gevent import monkey

monkey.patch_all()

from api import create_app  # noqa: E402 - must come after monkey-patching
from workers.presence_sweeper import PresenceSweeper  # noqa: E402

app = create_app()

if not app.config["REDIS_URL"]:
    # Embedded mode: presence lives in this process, so this process sweeps it.
    PresenceSweeper(app).start_in_background()
