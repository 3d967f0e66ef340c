"""The database drivers aitems-sync installs as extras, and the fix for a missing one.

A source or state URL whose driver is not installed fails with the fix the operator needs: the
extra of ``pyproject.toml`` that installs it (``pip install 'aitems-sync[postgres]'``), or, for
a driver no extra installs, the URL that uses one that does.
"""

from __future__ import annotations

from sqlalchemy.engine import URL

#: The extra (pyproject.toml's ``optional-dependencies``) that installs each driver, by its
#: SQLAlchemy driver name.
EXTRAS = {"psycopg": "postgres", "pymysql": "mysql"}
#: The driver of each database that an extra installs.
_EXTRA_DRIVERS = {"postgresql": "psycopg", "mysql": "pymysql", "mariadb": "pymysql"}


def install_hint(url: URL) -> str:
    """How to install the missing driver of ``url``, as an instruction to the operator."""
    backend, driver = url.get_backend_name(), url.get_driver_name()
    extra = EXTRAS.get(driver)
    if extra is not None:
        return f"install it with pip install 'aitems-sync[{extra}]'"
    ours = _EXTRA_DRIVERS.get(backend)
    if ours is not None:
        named = "names" if "+" in url.drivername else "names no driver, so SQLAlchemy picks"
        return (f"the URL {named} {driver}, which aitems-sync does not install: write it as "
                f"{backend}+{ours}://... and pip install 'aitems-sync[{EXTRAS[ours]}]', or "
                f"install {driver} yourself")
    return (f"install the Python driver of {url.drivername} in the environment that runs "
            "aitems-sync")
