"""The process's pooled Redis connections are checked as they are handed out."""

import select

from tests.factories import scaled_only


@scaled_only
def test_a_pooled_connection_holding_an_unread_reply_is_not_handed_out_as_is(app):
    """A reply nobody read (a request cut short mid-command) must not answer the
    next command taken from the pool: the pool sees it waiting and reconnects."""
    client = app.extensions["parley.hub"].client
    pool = client.connection_pool
    connection = pool.get_connection()
    connection.send_command("ECHO", "stale")
    readable, _, _ = select.select([connection._sock], [], [], 5)
    assert readable, "Redis did not answer ECHO"
    pool.release(connection)

    assert client.echo("fresh") == b"fresh"
    assert client.echo("again") == b"again"
