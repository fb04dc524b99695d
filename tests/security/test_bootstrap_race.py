"""Admin bootstrap race: several processes bootstrap at once on an empty catalog (each saw no
user); exactly one first admin may result, the others are refused."""

from __future__ import annotations

import threading

from governance.auth import BootstrapError, Role, add_user, authenticate, list_users
from governance.catalog import open_catalog


def test_concurrent_bootstraps_create_exactly_one_admin() -> None:
    open_catalog()  # migrated before the race, as a running deployment's catalog is
    barrier = threading.Barrier(8)
    won: list[str] = []
    refused: list[str] = []

    def bootstrap(n: int) -> None:
        barrier.wait()
        try:
            issued = add_user(f"admin{n}", Role.ADMIN, by=None)
            won.append(issued.token)
        except BootstrapError:
            refused.append(f"admin{n}")

    threads = [threading.Thread(target=bootstrap, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(won) == 1 and len(refused) == 7
    admin = authenticate(won[0])
    assert [u.name for u in list_users(by=admin)] == [admin.name]
