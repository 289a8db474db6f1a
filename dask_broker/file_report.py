"""What :func:`~dask_broker.copy_files` / :func:`~dask_broker.move_files` did: the reports."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = ["FilesReport", "ResourceReport"]


def _human(n: int) -> str:
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            return f"{int(size)} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"  # pragma: no cover


@dataclass
class ResourceReport:
    """What was (or, in a dry run, would be) done to one resource or stream_resource.

    ``action`` is ``copied``, ``moved``, ``skipped`` (already under the new
    root), ``cleaned`` (already moved; old files left behind were deleted), or
    the same prefixed with ``would `` in a dry run.  ``files`` pairs each old
    path with its new path; ``bytes`` is their total size.  ``spec`` is a
    resource's spec or a stream_resource's mimetype.
    """

    uid: str
    spec: str
    action: str
    files: list[tuple[str, str]] = field(default_factory=list)
    bytes: int = 0
    deleted: list[str] = field(default_factory=list)
    #: uids of other resources that still point at old files (which were kept)
    kept_for: list[str] = field(default_factory=list)
    #: why old files were kept although no resource is known to use them
    note: str = ""

    def __str__(self) -> str:
        n = len(self.files)
        kept = (f"; old files kept: resource(s) {', '.join(self.kept_for)} still use them"
                if self.kept_for else "")
        note = f"; {self.note}" if self.note else ""
        return (f"{self.action:<14} {self.spec:<10} {self.uid}  "
                f"{n} file{'s' if n != 1 else ''}, {_human(self.bytes)}{kept}{note}")


@dataclass
class FilesReport:
    """The result of :func:`copy_files` / :func:`move_files`: one :class:`ResourceReport` each.

    Examples
    --------
    >>> report = FilesReport("move_files", "/new", dry_run=True)
    >>> print(report)
    move_files to '/new' (dry run): 0 resources, 0 files, 0 B
    """

    operation: str
    new_root: str
    dry_run: bool = False
    resources: list[ResourceReport] = field(default_factory=list)
    #: source folders a move emptied and removed
    removed_dirs: list[str] = field(default_factory=list)

    @property
    def files(self) -> list[tuple[str, str]]:
        """Every ``(old path, new path)`` pair."""
        return [pair for r in self.resources for pair in r.files]

    @property
    def bytes(self) -> int:
        """Total size of the files."""
        return sum(r.bytes for r in self.resources)

    def _summary(self) -> str:
        return (f"{self.operation} to {self.new_root!r}{' (dry run)' if self.dry_run else ''}: "
                f"{len(self.resources)} resources, {len(self.files)} files, {_human(self.bytes)}")

    def __str__(self) -> str:
        lines = [self._summary(), *(f"  {r}" for r in self.resources)]
        if self.removed_dirs:
            lines.append(f"  emptied source folder(s) deleted: {', '.join(self.removed_dirs)}")
        return "\n".join(lines)

    def __repr__(self) -> str:
        return f"<FilesReport {self._summary()}>"

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        printer.text(str(self))
