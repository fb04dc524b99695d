"""The last incomplete training batch is dropped only when each rank has more than one batch."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from training.module import CachedRowsDataModule


class _Rows(CachedRowsDataModule):
    def row(self, row: dict[str, Any]) -> dict[str, Any]:
        return row

    def transforms(self) -> tuple[Any, Any]:
        from monai.transforms import Compose

        return Compose([]), Compose([])


@pytest.mark.parametrize(("world", "dropped"), [(1, True), (2, False)])
def test_drop_last_is_decided_on_each_ranks_share(world: int, dropped: bool) -> None:
    # 10 rows, batch 8: one process has a full batch (and drops the 2 left over); two DDP ranks
    # have 5 rows each, and dropping would leave a rank with no batch at all.
    module = _Rows([{"x": i} for i in range(10)], [{"x": 0}], batch_size=8)
    module.trainer = SimpleNamespace(world_size=world)  # type: ignore[assignment]
    module.setup("fit")
    assert module.train_dataloader().drop_last is dropped
