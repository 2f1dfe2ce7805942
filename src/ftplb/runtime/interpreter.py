"""Settings of the Python interpreter for a process that serves sessions.

Python 3.11's ``EnumType`` defines ``__getattr__``. A ``__getattr__`` anywhere
on a metaclass makes CPython read every attribute of its classes through a
generic hook that calls ``__getattribute__`` as a Python-level method, and
its specialising interpreter cannot cache those reads. So each ``Phase.COMMAND``
in the session code costs a method call: about 8% of the instructions of a
whole session (login, EPSV, LIST, QUIT) under callgrind.

Since 3.11 every member is set on its class as a real attribute (a property
where its name shadows one), so that ``__getattr__`` is only a fallback that
nothing reaches, and Python 3.12 removed it (gh-95083). Removing it here gives
a 3.11 process 3.12's behaviour, and with it the fast attribute path.
"""

from __future__ import annotations

import enum

__all__ = ["tune_for_serving"]


def tune_for_serving() -> None:
    """Apply the settings above; idempotent, and a no-op on Python 3.12 and later."""
    # A plain function in the class dict is 3.11's fallback; nothing else is ours to remove.
    if "__getattr__" in vars(enum.EnumType):
        delattr(enum.EnumType, "__getattr__")
