"""The hostile tier (issue 15): one regression test per class of hostile or unusual mail.

Tests here run in-process against the pure core, the services with in-memory twins,
and the Mailgun client against the real local stand-in; their expected values come
from the stdlib ``email`` parser (tests/hostile/oracle.py) or are written out by hand.
"""
