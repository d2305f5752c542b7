"""Size limits that every image reader checks against a header *before* it allocates pixel memory.

Why: a DICOM or NIfTI header declares an image size, and the libraries (numpy, pydicom, nibabel)
allocate that size before they find out whether the file holds it. An 8 KB file declaring
30000 x 30000 pixels cost 1.8 GB before it was rejected, and one declaring 65535 x 65535 x 100000
frames aborted a whole ingest with MemoryError. So readers compare the declared size, first, with

1. the bytes the file really holds, where they can be counted without keeping them (pixel data
   stored uncompressed; a gzip stream, decompressed into a small reused buffer), and
2. two limits, for what no byte count can bound (compressed pixel data, a series of many files):

   - ``max_slice_voxels`` (default 2**24 = 4096 x 4096): voxels of one 2-D slice;
   - ``max_volume_voxels`` (default 2**29, e.g. 2048 slices of 512 x 512; 1 GiB as int16, 2 GiB as
     float32): voxels of one file, DICOM series or NIfTI volume.

``mrsr ingest`` and ``mrsr upscale`` take ``--max-slice-voxels`` and ``--max-volume-voxels`` for
larger data. A file over a limit is rejected with the reason (ingest: a rejected.csv row; upscale:
skipped), never a crash.
"""

from __future__ import annotations

import gzip
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

DEFAULT_MAX_SLICE_VOXELS = 2**24
DEFAULT_MAX_VOLUME_VOXELS = 2**29


@dataclass(frozen=True)
class SizeLimits:
    """The largest images a reader accepts (small and picklable: sent to decode workers).

    Args:
        max_slice_voxels: voxels of one 2-D slice (rows x columns).
        max_volume_voxels: voxels of one file, series or volume (slices x rows x columns).
    """

    max_slice_voxels: int = DEFAULT_MAX_SLICE_VOXELS
    max_volume_voxels: int = DEFAULT_MAX_VOLUME_VOXELS

    def check(self, rows: int, cols: int, n_slices: int = 1, needed_bytes: int | None = None,
              present_bytes: int | None = None) -> str | None:
        """Why a declared image cannot be read, or None. The one check of every reader.

        Args:
            rows, cols: declared size of one slice.
            n_slices: declared slices (frames) in the file or series.
            needed_bytes: bytes of pixel data the declared size needs (None: not checked).
            present_bytes: bytes of pixel data the file holds (None: unknown, e.g. compressed).
        """
        if rows < 1 or cols < 1 or n_slices < 1:
            return f"header declares an empty or negative size ({n_slices} slice(s) of {rows} x {cols})"
        slice_voxels = rows * cols
        if slice_voxels > self.max_slice_voxels:
            return (f"header declares {rows} x {cols} = {slice_voxels} voxels per slice, over the limit of "
                    f"{self.max_slice_voxels} (--max-slice-voxels)")
        if slice_voxels * n_slices > self.max_volume_voxels:
            return (f"header declares {n_slices} slice(s) of {rows} x {cols} = {slice_voxels * n_slices} voxels, "
                    f"over the limit of {self.max_volume_voxels} (--max-volume-voxels)")
        if needed_bytes is not None and present_bytes is not None and present_bytes < needed_bytes:
            return (f"truncated or corrupt pixel data: header declares {n_slices} slice(s) of {rows} x {cols} "
                    f"({needed_bytes} bytes) but the file holds only {present_bytes}")
        return None


def add_limit_arguments(parser: Any) -> None:
    """``--max-slice-voxels`` and ``--max-volume-voxels`` for a command that reads images."""
    parser.add_argument("--max-slice-voxels", type=int, default=DEFAULT_MAX_SLICE_VOXELS, metavar="N",
                        help=f"largest slice accepted, rows x columns (default {DEFAULT_MAX_SLICE_VOXELS} = 4096 x 4096)")
    parser.add_argument("--max-volume-voxels", type=int, default=DEFAULT_MAX_VOLUME_VOXELS, metavar="N",
                        help=f"largest file/series/volume accepted, in voxels (default {DEFAULT_MAX_VOLUME_VOXELS})")


def limits_from_args(args: Any) -> SizeLimits:
    return SizeLimits(args.max_slice_voxels, args.max_volume_voxels)


def bytes_present(path: str | Path, upto: int) -> int:
    """How many bytes ``path`` holds, counting at most ``upto``: its size, or for ``.gz`` the length
    of its decompressed stream (decompressed into one small buffer, never kept: memory stays flat)."""
    path = str(path)
    if not path.lower().endswith(".gz"):
        return min(os.path.getsize(path), upto)
    total, buf = 0, bytearray(1 << 20)
    with gzip.open(path, "rb") as fh:
        while total < upto:
            got = fh.readinto(memoryview(buf)[: min(len(buf), upto - total)])
            if not got:
                break
            total += got
    return total


# A deflated DICOM data set (transfer syntax 1.2.840.10008.1.2.1.99) is inflated whole by pydicom
# before any header can be read, so a small file can expand to gigabytes (a decompression bomb).
# Its inflated size is counted first, in bounded chunks, against this cap: above the pixel bytes the
# volume limit admits (2**29 voxels of 2 bytes) plus room for the header.
DEFLATED_MAX_BYTES = 2 * DEFAULT_MAX_VOLUME_VOXELS + (64 << 20)


def deflated_dicom_problem(path: str | Path, max_bytes: int = DEFLATED_MAX_BYTES) -> str | None:
    """Why a deflated DICOM file must not be read (it inflates past ``max_bytes``), or None.

    None as well for every file that is not a standard deflated DICOM file (pydicom then decides):
    only the file meta group is parsed, and the deflated stream after it is inflated into chunks of
    at most 16 MB that are counted and dropped, so memory stays flat whatever the file declares.
    """
    import zlib

    import pydicom

    try:
        meta = pydicom.filereader.read_file_meta_info(path)
        if meta.get("TransferSyntaxUID") != pydicom.uid.DeflatedExplicitVRLittleEndian:
            return None
        # preamble (128) + "DICM" (4) + the group length element (12, explicit VR UL) + the rest of group 2
        offset = 128 + 4 + 12 + int(meta.FileMetaInformationGroupLength)
    except Exception:  # no standard file meta: not ours to judge here
        return None
    inflater, total = zlib.decompressobj(-zlib.MAX_WBITS), 0
    with open(path, "rb") as fh:
        fh.seek(offset)
        while chunk := fh.read(1 << 20):
            data = chunk
            while data:
                try:
                    total += len(inflater.decompress(data, 16 << 20))
                except zlib.error:
                    return None  # corrupt stream: pydicom reports it
                if total > max_bytes:
                    return (f"deflated data set inflates to more than {max_bytes} bytes (a decompression bomb?); "
                            "not read")
                data = inflater.unconsumed_tail
    return None


def nifti_size_problem(image: Any, limits: SizeLimits) -> str | None:
    """Why a NIfTI image (loaded by nibabel: header only) cannot be read in memory, or None.

    Slices are the first two axes; every further axis multiplies the slice count. Uses nibabel's
    header (shape, dtype, data offset) before any voxel is read.
    """
    header = image.header
    shape = tuple(int(n) for n in header.get_data_shape())
    if len(shape) < 2:
        return f"header declares shape {shape}: fewer than two dimensions"
    n_slices = math.prod(shape[2:])
    end = int(header.get_data_offset()) + math.prod(shape) * header.get_data_dtype().itemsize
    problem = limits.check(shape[0], shape[1], n_slices)  # before counting bytes: that may decompress
    if problem:
        return problem
    data_file = image.file_map["image"].filename
    return limits.check(shape[0], shape[1], n_slices, end, bytes_present(data_file, end))
