"""Presence: online while a device polls (or did within a window), else offline.

    store.py    where polls are noted: in process (embedded) or in Redis (scaled)
    actions.py  noting polls, reading presence, announcing changes to contacts
    views.py    GET /v1/presence

Polls only touch the store. A change of state is announced (as inbox entries of
type ``presence``) by reconciling what contacts were last told, kept on the user
row, with the truth in the store; the reconciliation runs under the user's row
lock, so each change is announced once even when several sweepers or requests
notice it at the same moment.
"""
