"""A dataset: recognising one at a path (:func:`open_dataset`), listing its items, naming it."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from hubtune.data.folders import class_folders, folder_modality, iter_folder
from hubtune.data.items import Item
from hubtune.data.tables import TABLE_SUFFIXES, iter_table, table_columns
from hubtune.errors import DatasetError


@dataclass(frozen=True)
class Dataset:
    """A readable dataset: where it is and what kind of items it holds."""

    location: Path
    modality: str  # "image" | "text"

    def __iter__(self) -> Iterator[Item]:
        if self.location.is_dir():
            yield from iter_folder(self.location)
        else:
            yield from iter_table(self.location)

    def items(self) -> list[Item]:
        return list(self)

    def name(self, given: str | None = None) -> str:
        """The name the store records it under: ``given`` (``""`` too), else the file or folder name;
        checked now, so a name the store would refuse stops a run before its work, not after."""
        from hubtune.store import check_dataset_name

        return check_dataset_name(given if given is not None else self.location.stem)


@dataclass(frozen=True)
class ListedDataset(Dataset):
    """A dataset whose items were listed once (each file read and hashed once), for a process that goes
    over it several times: ``compare`` extracts it once per model."""

    listed: tuple[Item, ...] = ()

    def __iter__(self) -> Iterator[Item]:
        yield from self.listed


def open_dataset(location: str | Path) -> Dataset:
    """Recognise the dataset at ``location``; the error says which layouts are accepted."""
    path = Path(location).expanduser()
    if path.is_dir():
        if not class_folders(path):
            raise DatasetError(f"{path}: a folder dataset needs one subfolder per class (optionally under train/val/test)")
        return Dataset(path, folder_modality(path))
    if path.is_file() and path.suffix.lower() in TABLE_SUFFIXES:
        return Dataset(path, "text" if table_columns(path) == "text" else "image")
    if not path.exists():
        raise DatasetError(f"{path}: no such file or folder")
    raise DatasetError(
        f"{path}: expected a folder with one subfolder per class, or a .jsonl/.csv/.tsv file with a "
        "'text' or 'path' column"
    )
