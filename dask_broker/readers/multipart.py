"""Multipart readers: one file per entry, named by a template (TIFF, JPEG, NPY).

A ``multipart/related;type=...`` stream_resource's ``uri`` is a directory
(ending in ``/``) or a file-name prefix; file ``i`` is ``path +
template.format(i)``, ``i`` counting from 0, and holds entry ``i``.  Old-style
templates (``"%s%s_%6.6d.tiff"`` with a ``filename`` parameter) are converted
by :func:`compile_template` as bluesky-tiled-plugins does.  Nothing stays
open: each read opens, reads and closes its files.  tifffile and Pillow are
imported on first use.
"""

from __future__ import annotations

import abc
import os
import re
from typing import Any, Mapping

import numpy as np

from ..errors import InvalidArgumentError, MissingFileError, OutOfRangeError, ReaderError
from .base import ReaderBase

__all__ = ["compile_template", "MultipartReader", "TIFFReader", "JPEGReader", "NPYReader"]

# An old-style (printf) conversion: %% or %[flags][width][.precision](s|d).
_OLD_CONVERSION = re.compile(r"%%|%([-+ #0]*)(\d*)(?:\.(\d+))?([sd])")


def _int_field(flags: str, width: str, precision: str | None) -> str:
    sign = "+" if "+" in flags else (" " if " " in flags else "")
    if precision:  # %6.6d: at least `precision` digits, zero-padded (as tiled converts it)
        return f"{{:{sign}0{max(int(precision), int(width or 0))}d}}"
    if "-" in flags:
        return f"{{:<{sign}{width}d}}"
    return f"{{:{sign}{'0' if '0' in flags and width else ''}{width}d}}"


def compile_template(template: str, filename: str = "") -> str:
    """A file-name template in new-style ``str.format`` form.

    A new-style template (``"img_{:06d}.tiff"``) is returned unchanged.  An
    old-style one is converted as bluesky-tiled-plugins does: the first ``%s``
    becomes ``filename``, later ``%s`` become ``""`` (the directory part, which
    the uri already gives), and the one integer conversion becomes a
    ``str.format`` field (``%6.6d`` -> ``{:06d}``).

    Parameters
    ----------
    template
        The stream_resource's ``template`` parameter.
    filename
        Its ``filename`` parameter (old-style templates only).

    Raises
    ------
    InvalidArgumentError
        An old-style template without exactly one integer conversion.

    Examples
    --------
    >>> compile_template("%s%s_%6.6d.tiff", "img")
    'img_{:06d}.tiff'
    >>> compile_template("%s_%d.npy")
    '_{:d}.npy'
    >>> compile_template("det_{:06d}.tiff")
    'det_{:06d}.tiff'
    """
    if not any(m.group(0) != "%%" for m in _OLD_CONVERSION.finditer(template)):
        return template
    out: list[str] = []
    n_strings = n_ints = 0
    position = 0
    for match in _OLD_CONVERSION.finditer(template):
        out.append(template[position:match.start()].replace("{", "{{").replace("}", "}}"))
        position = match.end()
        flags, width, precision, kind = match.groups()
        if match.group(0) == "%%":
            out.append("%")
        elif kind == "s":
            out.append(filename.replace("{", "{{").replace("}", "}}") if n_strings == 0 else "")
            n_strings += 1
        else:
            out.append(_int_field(flags, width, precision))
            n_ints += 1
    out.append(template[position:].replace("{", "{{").replace("}", "}}"))
    if n_ints != 1:
        raise InvalidArgumentError(
            f"old-style template {template!r} has {n_ints} integer conversions (%d); a "
            f"multipart stream_resource needs exactly one, for the file number"
        )
    return "".join(out)


def _join(path: str, name: str) -> str:
    # As tiled: the uri and the rendered template are concatenated, one "//" collapsed.
    if path.endswith("/") and name.startswith("/"):
        name = name.lstrip("/")
    return path + name


class MultipartReader(ReaderBase):
    """Base of the one-file-per-entry readers.

    Parameters
    ----------
    path
        The directory (ending in ``/``) or file-name prefix the stream_resource's
        uri points at.
    parameters
        ``template`` (required), ``filename`` (for old-style templates).

    Raises
    ------
    InvalidArgumentError
        No ``template`` parameter, or one that cannot be formatted with a file number.
    MissingFileError
        The directory of the files does not exist.

    Notes
    -----
    Subclasses implement :meth:`_load` (one file -> array) and :meth:`_entry_meta`
    (one file -> entry shape and dtype, from its header).
    """

    def __init__(self, path: str | os.PathLike, parameters: Mapping[str, Any]):
        super().__init__(path, parameters)
        self.template = self._template(self.path, self.parameters, self.mimetype())
        directory = os.path.dirname(self._file(0)) or "."
        if not os.path.isdir(directory):
            raise MissingFileError(
                f"directory {directory!r} of a {self.mimetype()} stream_resource ({self.path!r}, "
                f"parameters {self.parameters!r}) is missing; if the files were moved, set a "
                f"root_map (db.set_root_map) that maps the uri's directory to where they are now"
            )

    @classmethod
    def mimetype(cls) -> str:
        return cls.mimetypes[0] if cls.mimetypes else cls.__name__

    @staticmethod
    def _template(path: str, parameters: Mapping[str, Any], mimetype: str) -> str:
        template = parameters.get("template")
        if not isinstance(template, str) or not template:
            raise InvalidArgumentError(
                f"{mimetype} stream_resource of {path!r} needs the parameter 'template' (file "
                f"names, e.g. 'img_{{:06d}}.tiff'); its parameters are {dict(parameters)!r}"
            )
        compiled = compile_template(template, parameters.get("filename") or "")
        try:
            compiled.format(0)
        except (IndexError, KeyError, ValueError) as err:
            raise InvalidArgumentError(
                f"template {template!r} of the {mimetype} stream_resource of {path!r} cannot "
                f"name file 0 ({type(err).__name__}: {err}); it needs one integer field, "
                f"e.g. 'img_{{:06d}}.tiff'"
            ) from err
        return compiled

    def _file(self, i: int) -> str:
        return _join(self.path, self.template.format(i))

    @classmethod
    def paths(cls, path: str, parameters: Mapping[str, Any],
              n_entries: int | None = None) -> list[str]:
        """``path + template.format(i)`` for ``i`` in ``range(n_entries)``.

        With ``n_entries=None``, the files that exist, counting from 0 up to the
        first missing one.

        Examples
        --------
        >>> TIFFReader.paths("/data/tiffs/", {"template": "img_{:03d}.tiff"}, 2)
        ['/data/tiffs/img_000.tiff', '/data/tiffs/img_001.tiff']
        """
        path = os.fspath(path)
        template = cls._template(path, parameters, cls.mimetype())
        if n_entries is None:
            n_entries = _count(lambda i: _join(path, template.format(i)))
        return [_join(path, template.format(i)) for i in range(n_entries)]

    def __len__(self) -> int:
        return _count(self._file)

    def describe(self) -> tuple[tuple[int, ...], np.dtype]:
        """``(n_files, *entry shape)`` and dtype; the entry is read from file 0's header.

        Raises
        ------
        MissingFileError
            Not even file 0 exists.
        """
        n = len(self)
        if n == 0:
            raise MissingFileError(
                f"no file of the {self.mimetype()} stream_resource {self.path!r} exists: "
                f"{self._file(0)!r} (template {self.template!r}) is missing")
        shape, dtype = self._guarded(self._entry_meta, self._file(0))
        return (n, *shape), dtype

    def read(self, start: int, stop: int) -> np.ndarray:
        """Files ``start`` to ``stop - 1``, stacked into one preallocated array.

        Raises
        ------
        OutOfRangeError
            A file of the range does not exist (the message gives how many do).
        ReaderError
            A file cannot be decoded, or its shape or dtype differs from the first one's.
        """
        start, stop = self._check_range(start, stop, None)
        if start == stop:
            shape, dtype = self.describe()
            return np.empty((0, *shape[1:]), dtype=dtype)
        out: np.ndarray | None = None
        for k, i in enumerate(range(start, stop)):
            file = self._file(i)
            try:
                array = self._guarded(self._load, file)
            except MissingFileError as err:
                raise OutOfRangeError(self._range_message(start, stop, len(self))) from err
            if out is None:
                out = np.empty((stop - start, *array.shape), dtype=array.dtype)
            elif array.shape != out.shape[1:] or array.dtype != out.dtype:
                raise ReaderError(
                    f"{file!r} holds a {array.dtype} array of shape {array.shape}, but "
                    f"{self._file(start)!r} a {out.dtype} one of shape {out.shape[1:]}; the "
                    f"files of one {self.mimetype()} stream_resource must agree")
            out[k] = array
        assert out is not None
        return out

    def _guarded(self, function, file: str):
        try:
            return function(file)
        except FileNotFoundError as err:
            raise MissingFileError(f"{file!r} is missing") from err
        except Exception as err:
            raise ReaderError(f"cannot read {file!r} as {self.mimetype()}: "
                              f"{type(err).__name__}: {err}") from err

    @abc.abstractmethod
    def _load(self, file: str) -> np.ndarray:
        """The array one file holds."""

    @abc.abstractmethod
    def _entry_meta(self, file: str) -> tuple[tuple[int, ...], np.dtype]:
        """Shape and dtype of the array one file holds, without decoding it if possible."""


def _count(file_of) -> int:
    """How many files ``file_of(0), file_of(1), ...`` exist before the first missing one."""
    listings: dict[str, set[str]] = {}
    n = 0
    while True:
        directory, name = os.path.split(file_of(n))
        if directory not in listings:
            try:
                listings[directory] = set(os.listdir(directory or "."))
            except OSError:
                listings[directory] = set()
        if name not in listings[directory]:
            return n
        n += 1


class TIFFReader(MultipartReader):
    """One TIFF file per entry (``multipart/related;type=image/tiff``), read with tifffile.

    Examples
    --------
    >>> import numpy as np, tempfile, tifffile
    >>> directory = tempfile.mkdtemp() + "/"
    >>> for i in range(3):
    ...     tifffile.imwrite(f"{directory}img_{i:06d}.tiff", np.full((4, 5), i, "uint16"))
    >>> reader = TIFFReader(directory, {"template": "img_{:06d}.tiff"})
    >>> reader.describe()
    ((3, 4, 5), dtype('uint16'))
    >>> reader.read(1, 3)[:, 0, 0]
    array([1, 2], dtype=uint16)
    """

    mimetypes = ("multipart/related;type=image/tiff",)

    def _load(self, file: str) -> np.ndarray:
        import tifffile

        return tifffile.imread(file)

    def _entry_meta(self, file: str) -> tuple[tuple[int, ...], np.dtype]:
        import tifffile

        with tifffile.TiffFile(file) as tif:
            series = tif.series[0]
            return tuple(series.shape), np.dtype(series.dtype)


# Pillow image mode -> (trailing shape, dtype) of np.asarray(image).
_PIL_MODES: dict[str, tuple[tuple[int, ...], str]] = {
    "1": ((), "bool"), "L": ((), "uint8"), "P": ((), "uint8"), "LA": ((2,), "uint8"),
    "RGB": ((3,), "uint8"), "YCbCr": ((3,), "uint8"), "RGBA": ((4,), "uint8"),
    "CMYK": ((4,), "uint8"), "I;16": ((), "<u2"), "I": ((), "int32"), "F": ((), "float32"),
}


class JPEGReader(MultipartReader):
    """One JPEG file per entry (``multipart/related;type=image/jpeg``), read with Pillow.

    An entry is ``(H, W)`` for a grey image, ``(H, W, C)`` for a colour one.
    """

    mimetypes = ("multipart/related;type=image/jpeg",)

    def _load(self, file: str) -> np.ndarray:
        from PIL import Image

        with Image.open(file) as image:
            return np.asarray(image)

    def _entry_meta(self, file: str) -> tuple[tuple[int, ...], np.dtype]:
        from PIL import Image

        with Image.open(file) as image:  # reads the header only
            width, height = image.size
            if image.mode in _PIL_MODES:
                extra, dtype = _PIL_MODES[image.mode]
                return (height, width, *extra), np.dtype(dtype)
            array = np.asarray(image)
            return array.shape, array.dtype


class NPYReader(MultipartReader):
    """One ``.npy`` file per entry (``multipart/related;type=application/x-npy``)."""

    mimetypes = ("multipart/related;type=application/x-npy",)

    def _load(self, file: str) -> np.ndarray:
        return np.load(file, allow_pickle=False)

    def _entry_meta(self, file: str) -> tuple[tuple[int, ...], np.dtype]:
        with open(file, "rb") as fh:
            version = np.lib.format.read_magic(fh)
            if version == (1, 0):
                shape, _, dtype = np.lib.format.read_array_header_1_0(fh)
            elif version == (2, 0):
                shape, _, dtype = np.lib.format.read_array_header_2_0(fh)
            else:
                array = np.load(file, mmap_mode="r", allow_pickle=False)
                shape, dtype = array.shape, array.dtype
        return tuple(shape), np.dtype(dtype)
