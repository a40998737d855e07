"""Run a background worker: ``python -m workers inbox-pruner [--once]``; or, once
after restoring the database from a backup, ``python -m workers after-restore``."""

import argparse
import logging

from api import create_app
from api.db import db
from workers.after_restore import RESTORE_GAP, renumber_after_restore
from workers.inbox_pruner import InboxPruner
from workers.presence_sweeper import PresenceSweeper

WORKERS = {worker.name: worker for worker in (InboxPruner, PresenceSweeper)}
AFTER_RESTORE = "after-restore"  # a one-off, not a worker (see workers.after_restore)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m workers", description=__doc__)
    parser.add_argument("name", choices=[*sorted(WORKERS), AFTER_RESTORE])
    parser.add_argument("--once", action="store_true", help="run one step and exit")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    app = create_app()
    if args.name == AFTER_RESTORE:
        with app.app_context():
            renumber_after_restore(db.session)
        print(f"{AFTER_RESTORE}: counters moved {RESTORE_GAP:,} ahead; devices resync (410) once")
        return
    if WORKERS[args.name].needs_redis and not app.config["REDIS_URL"]:
        parser.exit(
            2,
            f"{args.name} works on the state shared in Redis; without REDIS_URL the "
            "web process runs it itself.\n",
        )
    worker = WORKERS[args.name](app)
    if args.once:
        with worker.app.app_context():
            print(f"{worker.name}: handled {worker.step()}")
    else:
        worker.run_as_process()


if __name__ == "__main__":
    main()
