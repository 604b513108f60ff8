"""Reading and writing files safely: atomic writes and clear errors for bad ONNX files.

Imports only the standard library at module level, so the runtime can use it.
"""

from __future__ import annotations

import codecs
import contextlib
import csv
import errno
import hashlib
import io
import json
import math
import os
import re
import secrets
import shutil
import stat
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from onnxkit.errors import OnnxkitError, first_few, first_repeated
from onnxkit.signals import check_stop, held_back

if TYPE_CHECKING:
    import onnx


# Failures of a write that say the disk, not the program, is at fault.
DISK_ERRORS = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS, errno.EIO}
SCRATCH_PREFIX = ".onnxkit-"
# atomic_path's temporary files: .bert.onnx.onnxkit-PID-RANDOM.tmp.onnx (RANDOM: 8 hex digits)
_TEMPORARY = re.compile(r"\.(?P<name>.+)\.onnxkit-(?P<pid>\d{1,9})-[a-z0-9_]+\.tmp(?P<suffix>.*)")
_SWEPT: set[Path] = set()  # folders this process has swept of killed writers' temporary files


@contextlib.contextmanager
def disk_errors(path: str | os.PathLike) -> Iterator[None]:
    """Turn a full (or read-only, or failing) disk while writing `path` into one clear DiskError."""
    try:
        yield
    except OSError as e:
        if e.errno not in DISK_ERRORS:
            raise
        raise DiskError(f"cannot write {path}: {e.strerror}{disk_hint(e.errno)}") from None


def disk_hint(code: int | None) -> str:
    """What to do about a write that failed with the DISK_ERRORS errno `code` ('' for another)."""
    if code == errno.EFBIG:  # a file-size limit (ulimit -f), not a full disk
        return "; the file outgrew the largest file this process may write (ulimit -f): raise it or write elsewhere"
    if code == errno.EROFS:
        return "; that file system is read-only: write somewhere else"
    return "; free some space or write somewhere else" if code in DISK_ERRORS else ""


class DiskError(OnnxkitError):
    """A write that failed because of the disk (full, read-only, failing), not the program."""


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside `path`; rename it over `path` only on success.

    A failure (or Ctrl-C) removes the temporary file and leaves any existing
    `path` untouched. The file gets the mode a plain `open()` would give it
    (0644 under umask 022): it is created with 0666, less the umask. The temporary
    name holds the writer's process id, so temporary files a killed process left
    (its id no longer running) are swept from the folder, at the first write there.
    """
    path = _file_to_write(Path(path))
    parent = _folder_of(path)
    if parent not in _SWEPT:
        _sweep_temporaries(parent)
        _SWEPT.add(parent)
    tmp_path = None
    try:
        with held_back():  # a stop lands once `tmp_path` names the file: then the finally removes it
            tmp_path = _new_temporary(parent, path)
        with disk_errors(path):
            yield tmp_path
            check_stop()  # a command asked to stop, whose KeyboardInterrupt was lost: not written
            os.replace(tmp_path, path)
    finally:
        if tmp_path is not None:
            tmp_path.unlink(missing_ok=True)


def _file_to_write(path: Path) -> Path:
    """`path`, or the file its symbolic links lead to (written there, as a shell's `>` does); an error for a folder,
    a device, a FIFO or a link loop, which an atomic write would replace with a file."""
    target = resolved(path) if path.is_symlink() else path
    try:
        mode = target.stat().st_mode
    except OSError:  # not there yet (or unreadable): the write says what is wrong
        return target
    if stat.S_ISDIR(mode):
        raise OnnxkitError(f"cannot write {path}: it is a folder; give a file name")
    if not stat.S_ISREG(mode):
        raise OnnxkitError(f"cannot write {path}: it is a device, FIFO or socket, not a file; give a file name")
    return target


def resolved(path: str | os.PathLike) -> Path:
    """`path` made absolute with its symbolic links followed; a link loop is an error naming it."""
    try:
        return Path(path).resolve()
    except RuntimeError as e:  # Python 3.11, 3.12: "Symlink loop from ..." (3.13: OSError ELOOP)
        raise OnnxkitError(f"{path}: a loop of symbolic links; give the path of a file") from e
    except OSError as e:
        if e.errno != errno.ELOOP:
            raise
        raise OnnxkitError(f"{path}: a loop of symbolic links; give the path of a file") from e


def not_a_file(path: Path) -> str:
    """Why `path`, which is no regular file, cannot be read as one: 'no such file', 'a folder', ..."""
    if path.is_dir():
        return "a folder"
    if path.is_symlink() and not path.exists():
        return f"a symbolic link to {resolved(path)}, which does not exist"  # (a loop is its own error)
    return "not a regular file (a device, FIFO or socket)" if path.exists() else "no such file"


@contextlib.contextmanager
def folder_locked(folder: Path) -> Iterator[None]:
    """Hold an exclusive lock on `folder` (flock on it, waiting for another holder): writers of files that belong
    together (a quantized model and its report) take it, so two of them into one folder do not mix their files."""
    import fcntl  # Unix only, as the run folders' locks

    fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # drops the lock


def _new_temporary(parent: Path, path: Path) -> Path:
    """A new empty file in `parent` for a write of `path`, named as _TEMPORARY reads it. Made by os.open with
    mode 0666, which the umask trims as it does a plain open()'s: mkstemp's 0600 needed a chmod after, and the
    umask read from /proc for it took ~90 us a write (a training checkpoint makes three)."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
    while True:  # ends at the first unused name: 32 random bits, so almost always the first
        tmp = parent / f".{path.name}.onnxkit-{os.getpid()}-{secrets.token_hex(4)}.tmp{path.suffix}"
        try:
            os.close(os.open(tmp, flags, 0o666))
            return tmp
        except FileExistsError:
            continue
        except OSError as e:
            raise OnnxkitError(f"cannot write {path}: folder {parent} is not writable ({e.strerror})") from None


def out_of_space(folder: str | os.PathLike, needed: int) -> bool:
    """Whether the disk holding `folder` has fewer than `needed` bytes free."""
    try:
        return shutil.disk_usage(folder).free < needed
    except OSError:
        return False


def same_file(a: str | os.PathLike, b: str | os.PathLike) -> bool:
    """Whether two paths name one file: the same path, or two names (links) of it."""
    a, b = Path(a), Path(b)
    return resolved(a) == resolved(b) or (a.exists() and b.exists() and a.samefile(b))


def _folder_of(path: Path) -> Path:
    """The folder `path` is to be written in; an error when it is missing or a file."""
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        why = "is a file, not a folder" if parent.exists() else "does not exist; create it first"
        raise OnnxkitError(f"cannot write {path}: {parent} {why}")
    return parent


def _sweep_temporaries(folder: Path) -> None:
    """Remove the temporary files of atomic writes whose process no longer runs (killed hard) from `folder`."""
    for stale in folder.glob(".*.onnxkit-*.tmp*"):
        match = _TEMPORARY.fullmatch(stale.name)
        if match and match["suffix"] == Path(match["name"]).suffix and not _running(int(match["pid"])):
            with contextlib.suppress(OSError):  # gone already (another writer swept it), or not ours to remove
                stale.unlink()


@contextlib.contextmanager
def scratch_folder(beside: str | os.PathLike, purpose: str) -> Iterator[Path]:
    """A temporary folder in the folder of `beside` (so big intermediate files land on the output's
    disk, not /tmp), removed afterwards; on Ctrl-C and SIGTERM too. Folders a killed process left
    (named for a process id that no longer runs) are swept first."""
    parent = _folder_of(Path(beside)).resolve()
    prefix = f"{SCRATCH_PREFIX}{purpose}-"
    for stale in parent.glob(f"{prefix}*-*"):
        pid = stale.name[len(prefix):].split("-")[0]
        if pid.isdigit() and not _running(int(pid)):
            shutil.rmtree(stale, ignore_errors=True)
    folder = None
    try:
        with held_back():  # a stop lands once `folder` names it: then the finally removes it
            try:
                folder = Path(tempfile.mkdtemp(prefix=f"{prefix}{os.getpid()}-", dir=parent))
            except OSError as e:
                raise OnnxkitError(f"cannot write in {parent}: {e.strerror}; check the output folder") from None
        with disk_errors(parent):
            yield folder
    finally:
        if folder is not None:
            shutil.rmtree(folder, ignore_errors=True)


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's
    return True


def write_safetensors(
    path: str | os.PathLike, tensors: Mapping[str, Any], metadata: dict[str, str] | None = None
) -> None:
    """Write named numpy arrays to a .safetensors file atomically. The bytes are made in memory and written
    through `atomic_path`: safetensors' own save_file writes a temporary file of its own beside the target
    (.tmpXXXXXX), which a kill -9 left behind for good, and gives it mode 0600."""
    from safetensors.numpy import save

    data = save(dict(tensors), metadata=metadata)
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def npz_arrays(path: str | os.PathLike) -> dict[str, Any]:
    """The named arrays of an .npz file; one holding a single array (numpy.save's .npy format under an .npz
    name) is an OnnxkitError saying so (it was "'numpy.ndarray' object does not support the context manager
    protocol"), and so is an array of Python objects (`_no_objects`). numpy's own errors (a corrupt or empty
    file) pass through."""
    import numpy as np

    _numpy_format(path, ".npz")
    loaded = np.load(path, allow_pickle=False)
    if not isinstance(loaded, np.lib.npyio.NpzFile):
        raise OnnxkitError(f"{path}: holds one array (.npy format), not an .npz archive of named arrays; name it "
                           ".npy, or save it with numpy.savez")
    arrays = {}
    with loaded:
        for key in loaded.files:
            with _no_objects(path, key):
                arrays[key] = loaded[key]
    return arrays


def npy_array(path: str | os.PathLike) -> Any:
    """The array of an .npy file; one of Python objects is an OnnxkitError (`_no_objects`)."""
    import numpy as np

    _numpy_format(path, ".npy")
    with _no_objects(path):
        return np.load(path, allow_pickle=False)


NUMPY_MAGIC = {".npy": b"\x93NUMPY", ".npz": b"PK"}  # what numpy.save and numpy.savez (a zip archive) begin with


def _numpy_format(path: str | os.PathLike, suffix: str) -> None:
    """Refuse a file under an .npy or .npz name that neither numpy writer wrote, naming what it is: numpy read a CSV
    so named as a pickle, and the error said to load it 'unsafely using the allow_pickle= keyword' (train, eval), or
    that its array held Python objects (predict). An empty file is left to numpy (its EOFError)."""
    try:
        with open(path, "rb") as f:
            head = f.read(512)
    except OSError:
        return  # numpy says why
    if not head or any(head.startswith(magic) for magic in NUMPY_MAGIC.values()):
        return
    writer = "numpy.save" if suffix == ".npy" else "numpy.savez"
    text = head.decode("utf-8", errors="replace")
    text = text[:-4] if len(head) == 512 else text  # the read may cut a character in two
    if "\ufffd" not in text and all(c.isprintable() or c in "\t\r\n" for c in text):
        what = f"text, not an {suffix} file ({writer} writes one); a table of numbers goes in a .csv file: name it .csv"
    elif head[:1] == b"\x80":
        what = f"a Python pickle, not an {suffix} file, and onnxkit does not unpickle; save the arrays with {writer}"
    else:
        what = f"not an {suffix} file ({writer} writes one); check that it is the right file, and complete"
    raise OnnxkitError(f"{path}: {what}")


@contextlib.contextmanager
def _no_objects(path: str | os.PathLike, name: str | None = None) -> Iterator[None]:
    """numpy's refusal to unpickle an array of dtype object (pandas' `.values` of a text or mixed column gives one)
    as an error naming the array and the cast that saves it plainly (it was 'write it with numpy.savez', which
    had written it; then '.astype(str)', which on pandas 3 keeps its Arrow string array, saved as objects again)."""
    try:
        yield
    except ValueError as e:
        if "allow_pickle" not in str(e):
            raise
        what, cast = (f"array {name!r}", name if name.isidentifier() else "array") if name else ("its array", "array")
        raise OnnxkitError(f"{path}: {what} holds Python objects (dtype object), which onnxkit does not unpickle; "
                           f"save it as numbers or text: np.asarray({cast}, dtype=np.float32) or np.asarray({cast}, "
                           "dtype=str)") from None


def read_text_file(path: str | os.PathLike) -> str:
    """A text file's contents, UTF-8 with or without a byte-order mark; a file that cannot be
    read, or is not UTF-8, is an error that names it."""
    try:
        data = Path(path).read_bytes()
    except OSError as e:
        raise OnnxkitError(f"{path}: cannot read it ({e.strerror or e})") from None
    data = data.removeprefix(codecs.BOM_UTF8)
    if data.startswith(b"\x1f\x8b"):
        raise OnnxkitError(f"{path}: a gzip-compressed file, not text; decompress it first (gunzip)")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        utf16 = ", it is UTF-16" if data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)) else ""
        raise OnnxkitError(f"{path}: not UTF-8 text (byte 0x{data[e.start]:02x} on line {line}{utf16}); "
                           "save it as UTF-8") from None


def read_csv_text(path: str | os.PathLike) -> str:
    """A CSV file's text (`read_text_file`), with the csv module's field limit (128 KiB by
    default) raised to its length, so one cell may fill the file."""
    content = read_text_file(path)
    csv.field_size_limit(max(csv.field_size_limit(), len(content)))
    return content


CSV_DELIMITERS = ",;\t|"
TABLE_SUFFIXES = (".csv", ".tsv")  # files of rows and delimited cells: a .tsv's are tabs
COLUMN_FILES = (*TABLE_SUFFIXES, ".parquet")  # tables of named columns: train reads a Parquet one as a CSV
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")  # read with Pillow, any case
MISSING_CELLS = frozenset({"", "na", "n/a", "#n/a", "<na>", "null", "none", "?",  # spreadsheets' and pandas' gaps,
                           "#div/0!", "#value!", "#ref!", "#name?", "#num!", "#null!"})  # and formulas' errors (Excel)
_DECIMAL_COMMA = re.compile(r"[+-]?\d*,\d+")
_UNGROUPED_COMMA = re.compile(r"[+-]?(0,\d+|\d+,(\d{1,2}|\d{4,}))")  # a decimal comma, no thousands one: 0,5 2,75
_DOT_GROUPED = re.compile(r"[+-]?\d{1,3}(\.\d{3})+(,\d+)?")  # 1.065 or 524.900,50 where commas mark decimals


def csv_delimiter(line: str) -> str:
    """The one of `CSV_DELIMITERS` that splits a CSV's first line into the most cells: Excel writes ';'
    where the decimal mark is a comma, so ';' wins a tie with ',' (5,1;3,5), and any line whose ';' cells all read
    as numbers with decimal commas (59,0;2,0;21,57: more cells by ','); tab-separated files are common."""
    cells = {d: next(csv.reader([line], delimiter=d), []) for d in CSV_DELIMITERS}
    counts = {d: len(c) for d, c in cells.items()}
    most = max(counts.values())
    decimal_commas = counts[";"] > 1 and all(_decimal_comma_number(c) != c or is_number(c) for c in cells[";"])
    return ";" if counts[";"] == most > 1 or decimal_commas else max(counts, key=counts.__getitem__)


def table_delimiter(path: str | os.PathLike, first_line: str) -> str:
    """The delimiter of a table file: the one a first line 'sep=;' names (`sep_line`), else a .tsv's a tab, a .csv's
    `csv_delimiter` of its first line."""
    return sep_line(first_line) or ("\t" if Path(path).suffix.lower() == ".tsv" else csv_delimiter(first_line))


_SEP_LINE = re.compile(r"sep=(.)", re.IGNORECASE)


def sep_line(line: str) -> str | None:
    """The delimiter a CSV's first line 'sep=;' names (Excel reads that line as the delimiter, not a row, and tools
    writing for Excel put it there), else None."""
    found = _SEP_LINE.fullmatch(line.strip("\r\n"))
    return found.group(1) if found else None


def csv_rows(path: str | os.PathLike) -> tuple[str, list[tuple[int, list[str]]]]:
    """A CSV file's delimiter (`table_delimiter` of its first line that is not blank) and its rows but blank ones and
    a first line 'sep=;' (`read_csv_text`), each with its line number, the cells as written."""
    text = read_csv_text(path)
    first = next((line for line in text.splitlines() if line.strip()), "")
    delimiter = table_delimiter(path, first)
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    rows, start = [], 1
    for row in reader:
        if row:
            rows.append((reader.line_num, row))
            last_start = start
        start = reader.line_num + 1
    if rows and sep_line(first):  # Excel's 'sep=;' line: the delimiter, not a row (the header was read as its cells)
        rows = rows[1:]
    if rows and rows[-1][0] > last_start:  # the last row spans lines: a quote it opens may never close
        _refuse_an_unclosed_quote(path, text, delimiter, last_start)
    return delimiter, rows


def _refuse_an_unclosed_quote(path: str | os.PathLike, text: str, delimiter: str, start: int) -> None:
    """One error line when the row starting on line `start` opens a cell with a quote that no quote closes: the csv
    module read the rest of the file into that cell (a TSV's '"Wow, what a match' made 300 rows 4, unsaid)."""
    tail = "".join(text.splitlines(keepends=True)[start - 1:])
    try:
        for _ in csv.reader(io.StringIO(tail, newline=""), delimiter=delimiter, strict=True):
            pass
    except csv.Error as e:
        if "unexpected end of data" in str(e):
            raise OnnxkitError(f"{path}:{start}: a cell there opens with a quote (\") that no quote closes, so the "
                               "rest of the file would be read as that one cell; close the quote, or write the "
                               "quote mark as two (\"\")") from None


def read_csv_rows(path: str | os.PathLike) -> list[tuple[int, list[str]]]:
    """A CSV file's rows (`csv_rows`) as tables of numbers read them, rows of empty cells left out (Excel's ';;;;'
    under a table): in a ';' file (or a tab one with a comma no thousands separator has: 0,1257 or 2,5), decimal
    commas are read as points (1,5 is 1.5), and where the file writes
    decimals so, points between groups of three digits as thousands separators (German Excel's 1.065 and
    524.900,50: they were read as 1.065 and 524.9); and a column empty on every line, its header too (a delimiter
    ending each line, a blank column between others), is left out."""
    delimiter, rows = csv_rows(path)
    rows = [(n, row) for n, row in rows if any(c.strip() for c in row)]
    if delimiter == ";" or delimiter == "\t" and any(_UNGROUPED_COMMA.fullmatch(c.strip()) for _, r in rows for c in r):
        commas = any(_DECIMAL_COMMA.fullmatch(c.strip()) for _, row in rows for c in row)
        rows = [(n, [_decimal_comma_number(c) if commas else c for c in row]) for n, row in rows]
    if rows and all(len(row) > 1 and not row[-1].strip() for _, row in rows):
        rows = [(n, row[:-1]) for n, row in rows]
    width = len(rows[0][1]) if rows else 0
    if all(len(row) == width for _, row in rows):  # a blank column between others, header too (Excel's spacer)
        kept = [j for j in range(width) if any(row[j].strip() for _, row in rows)]
        if 0 < len(kept) < width:
            rows = [(n, [row[j] for j in kept]) for n, row in rows]
    return rows


def _decimal_comma_number(cell: str) -> str:
    """A cell of a file that writes decimal commas, as a number reads: '1.065,5' -> '1065.5', '6,21' -> '6.21'."""
    text = cell.strip()
    if _DOT_GROUPED.fullmatch(text):
        text = text.replace(".", "")
    elif not _DECIMAL_COMMA.fullmatch(text):
        return cell
    return text.replace(",", ".")


FLAG_WORDS = {"true": "1", "false": "0", "yes": "1", "no": "0"}


def flags_as_numbers(features: list[list[str]]) -> list[list[str]]:
    """A CSV's `features` with each column of true / false or yes / no words (pandas writes bool columns True /
    False; surveys and spreadsheets yes / no) as 1 / 0, as a bool input's cells are read (they were refused as
    text); changed in place."""
    if not features:
        return features
    flags = [j for j, cell in enumerate(features[0]) if cell.strip().lower() in FLAG_WORDS
             and all(row[j].strip().lower() in FLAG_WORDS for row in features)]
    for row in features if flags else ():
        for j in flags:
            row[j] = FLAG_WORDS[row[j].strip().lower()]
    return features


def is_missing(cell: str) -> bool:
    """Whether a CSV cell is a missing value as spreadsheets and pandas write one (empty, NA, N/A, ?, ...)."""
    return cell.strip().lower() in MISSING_CELLS


def sha256(path: str | os.PathLike) -> str:
    """The hex SHA-256 of a file's bytes."""
    digest = hashlib.sha256()
    _digest_file(digest, path)
    return digest.hexdigest()


def _digest_file(digest: Any, path: str | os.PathLike) -> None:
    """Feed a file's bytes to `digest`, a megabyte at a time."""
    with Path(path).open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)


def model_sha256(path: str | os.PathLike, model: onnx.ModelProto) -> str:
    """The SHA-256 fingerprint of the model at `path` (`model`: as loaded from it without its weights): of its file,
    then, for a model that keeps its weights in separate files, of each file's name and bytes, in name order; an
    edited weights file changes it as an edited .onnx does. A model without weight files: `sha256(path)`."""
    files = weight_files(model)
    if not files:
        return sha256(path)
    folder = model_location(path, model).parent
    digest = hashlib.sha256()
    _digest_file(digest, path)
    for name in files:
        digest.update(b"\0" + name.encode() + b"\0")
        _digest_file(digest, folder / name)
    return digest.hexdigest()


def write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write `data` to `path` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_text(path: str | os.PathLike, text: str) -> None:
    """Write `text` (UTF-8) to `path` atomically."""
    write_bytes(path, text.encode("utf-8"))


def is_number(text: str) -> bool:
    """Whether a CSV cell reads as a number (used to tell a header row from data)."""
    try:
        float(text)
    except ValueError:
        return False
    return True


def thousands_separated(cell: str) -> str | None:
    """What an error line says of a CSV cell holding a number written with thousands separators ('1,000'),
    which reads as text; None for any other cell."""
    cell = cell.strip()
    plain = cell.replace(",", "")
    if plain == cell or not is_number(plain):
        return None
    return f"holds {cell!r}, a number with thousands separators; write the numbers without them ({plain})"


def save_model(model: onnx.ModelProto, path: str | os.PathLike) -> Path:
    """Serialise `model` to `path` atomically and return the path."""
    data = model.SerializeToString()
    write_bytes(path, data)
    return Path(path)


def irreplaceable(path: str | os.PathLike) -> str | None:
    """What the file at `path` holds when a model written over it would lose what no onnxkit command makes
    again: a trained model, a model from elsewhere (an export, a download) or a file that is no model (data,
    code). None for no file, an empty one, or a model `onnxkit build` or `quantize` wrote (run it again).
    `build -o` and `quantize -o` onto a run's model.onnx replaced the trained weights, exit status 0."""
    import onnx
    from google.protobuf.message import DecodeError

    from onnxkit.metadata_keys import QUANTIZATION_KEY, RECIPE_KEY, TRAINING_KEY, VERSION_KEY

    path = Path(path)
    if not path.is_file() or path.stat().st_size == 0:
        return None
    try:
        model = onnx.load(str(path), load_external_data=False)
    except (DecodeError, ValueError, RuntimeError, OSError):
        model = None
    if model is None or not (model.graph.node or model.graph.output):
        return "a file that is no ONNX model"
    meta = {p.key: p.value for p in model.metadata_props}
    if QUANTIZATION_KEY in meta:
        return None
    if TRAINING_KEY in meta:
        try:
            data = json.loads(meta[TRAINING_KEY]).get("data")
        except (ValueError, AttributeError):
            data = None
        return f"a trained model (trained on {data})" if isinstance(data, str) else "a trained model"
    if RECIPE_KEY in meta or VERSION_KEY in meta:
        return None
    return "a model onnxkit did not build (an export or a download)"


def missing_model(path: str | os.PathLike) -> OnnxkitError:
    """The error for a model file that is not there; a run folder's model.onnx is written when
    training ends, so for one of an unfinished run it says how to finish it."""
    path = Path(path)
    if path.name == "model.onnx" and (path.parent / "run.json").is_file():
        try:
            resumable = isinstance(json.loads((path.parent / "run.json").read_text()).get("config"), dict)
        except (ValueError, OSError, AttributeError):  # damaged: resume refuses it too
            resumable = False
        then = (f"continue it with onnxkit train --resume {path.parent}" if resumable else
                "its run.json is damaged, so it cannot be resumed: train again")
        return OnnxkitError(f"{path}: not written yet, the training run in {path.parent} has not finished; {then}")
    if path.is_dir():
        return _folder_given(path)
    if path.exists() or path.is_symlink():
        return OnnxkitError(f"{path}: {not_a_file(path)}; pass the path of an .onnx model")
    if not path.suffix and (Path(__file__).resolve().parent / "models" / f"{path.name.replace('-', '_')}.py").is_file():
        return OnnxkitError(f"{path.name} is a zoo model, not a file: build it first (onnxkit build {path.name} "
                            f"-o {path.name}.onnx), then pass {path.name}.onnx")
    return OnnxkitError(f"{path}: no such file; pass the path of an .onnx model")


def _folder_given(folder: Path) -> OnnxkitError:
    """The error for a folder given as the model: it names the model in it (a run folder's
    model.onnx, else its .onnx files) or says how to finish the run that will write it."""
    inside = folder / "model.onnx"
    if inside.is_file():
        return OnnxkitError(f"{folder}: a folder, not a model; pass the model in it: {inside}")
    if (folder / "run.json").is_file():
        return missing_model(inside)
    models = sorted(p.name for p in folder.glob("*.onnx") if p.is_file())
    held = first_few(models, 5) if models else "no .onnx file"
    return OnnxkitError(f"{folder}: a folder, not a model (it holds {held}); pass the path of an .onnx model")


def foreign_file(path: str | os.PathLike) -> str | None:
    """What a file that did not parse as ONNX is instead, and what to do, when its first bytes say (a PyTorch
    checkpoint, a pickle, a Keras .h5, a safetensors file, gzip, text, numpy's files: the data given first); None when
    they do not."""
    try:
        with open(path, "rb") as f:
            head = f.read(512)
    except OSError:
        return None
    export = "export the model to ONNX (torch.onnx.export) and pass that .onnx file"
    if not head:
        return "an empty file (0 bytes), not an ONNX model; copy or write the model again"
    if head.startswith(b"version https://git-lfs.github.com/spec/"):
        return "a Git LFS pointer, not the model itself; fetch the file (git lfs pull, or download it)"
    data = "if it is the data, give the .onnx model first and the data after it"
    if head.startswith(b"\x93NUMPY"):
        return f"a numpy array (.npy), not an ONNX model; {data}"
    if head.startswith(b"PK\x03\x04") and Path(path).suffix.lower() == ".npz":
        return f"an .npz archive of numpy arrays, not an ONNX model; {data}"
    if head.startswith(b"PK\x03\x04"):
        return f"a zip archive, not an ONNX model (a PyTorch .pt or .pth checkpoint is one); {export}"
    if head[:1] == b"\x80" and head[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05"):
        return ("a Python pickle, not an ONNX model (an older PyTorch checkpoint, or a scikit-learn model saved with "
                f"joblib or pickle); {export}, or convert a scikit-learn model with skl2onnx")
    if head.startswith(b"\x89HDF\r\n\x1a\n"):
        return "an HDF5 file (a Keras .h5 model), not an ONNX model; convert it to ONNX with tf2onnx"
    if head.startswith(b"\x1f\x8b"):
        return "a gzip-compressed file, not an ONNX model; decompress it first (gunzip)"
    if len(head) > 9 and head[8:10] == b'{"' and int.from_bytes(head[:8], "little") < 100_000_000:
        return "a safetensors file of weights, not an ONNX model; pass the .onnx model they belong to"
    text = head.decode("utf-8", errors="replace")
    text = text[:-4] if len(head) == 512 else text  # the read may cut a character in two
    if text and "\ufffd" not in text and all(c.isprintable() or c in "\t\r\n" for c in text):
        table = Path(path).suffix.lower() in (".csv", ".tsv", ".txt", ".json")
        return f"a text file, not an ONNX model; {data}" if table else "a text file, not an ONNX model; pass the " \
            ".onnx file itself"
    return None


def load_model(path: str | os.PathLike, *, load_weights: bool = True) -> onnx.ModelProto:
    """Load an ONNX file, turning every failure into one clear OnnxkitError. A path through a symbolic link is
    read where the model's weight files are (`model_location`)."""
    import onnx
    from google.protobuf.message import DecodeError

    path = Path(path)
    if not path.is_file():
        raise missing_model(path)
    try:
        model = onnx.load(str(path), load_external_data=False)
    except (DecodeError, ValueError, RuntimeError, OSError) as e:
        if kind := foreign_file(path):
            raise OnnxkitError(f"{path}: {kind}") from e
        raise OnnxkitError(
            f"{path}: not a readable ONNX model ({type(e).__name__}); "
            "check that the file is complete and really is .onnx"
        ) from e
    if not model.graph.node and not model.graph.output:
        raise OnnxkitError(f"{path}: {foreign_file(path) or 'not an ONNX model (empty graph); is it the right file?'}")
    if load_weights:
        read_weights(model, path)
    return model


PROTOBUF_LIMIT = 2**31  # bytes: the most one serialized protobuf holds (an .onnx file, less its weight files)


def tensor_bytes(model: onnx.ModelProto) -> int:
    """The bytes of the tensors of `model` (initializers, subgraphs' and Constant nodes'), from their shapes and
    types: the same loaded with its weights or without them."""
    import numpy as np
    from onnx import helper
    from onnx.external_data_helper import _get_all_tensors

    total = 0
    for tensor in _get_all_tensors(model):
        try:
            itemsize = np.dtype(helper.tensor_dtype_to_np_dtype(tensor.data_type)).itemsize
        except (KeyError, TypeError, ValueError):  # strings, undefined: their bytes are not counted
            continue
        total += math.prod(tensor.dims) * itemsize
    return total


def check_fits_protobuf(model: onnx.ModelProto, source: str | os.PathLike, command: str, hint: str = "") -> None:
    """An error saying that `command` cannot take `model` (read from `source`, with or without its weights), whose
    tensors are past the 2 GB one protobuf holds, as `command` holds the whole model (checked before its weights
    are read, it replaces protobuf's 'Failed to serialize proto' traceback, seconds and gigabytes later)."""
    size = tensor_bytes(model)
    if size >= PROTOBUF_LIMIT:
        from onnxkit.summary import human_bytes

        raise OnnxkitError(f"{source}: its weights take {human_bytes(size)}, past the {human_bytes(PROTOBUF_LIMIT)} "
                           f"one ONNX protobuf holds, and {command} holds the whole model as one: it cannot take a "
                           f"model this large{hint}")


def weight_files(model: onnx.ModelProto) -> list[str]:
    """The weight files (paths relative to the model's folder) that the tensors of `model`, loaded without its
    weights, keep their data in, sorted."""
    from onnx.external_data_helper import ExternalDataInfo, _get_all_tensors, uses_external_data

    return sorted({ExternalDataInfo(t).location for t in _get_all_tensors(model) if uses_external_data(t)})


def model_location(path: str | os.PathLike, model: onnx.ModelProto | None = None) -> Path:
    """Where to read the model at `path` from, with its weight files: `path` itself, unless it is a symbolic link
    whose weight files are not beside it but beside the file it leads to (`ln -s /models/bert/model.onnx`); a link
    with its weight files beside it (Hugging Face's cache links each file to a blob of another name) stays as it is.
    `model`: the model as loaded without its weights (else read here)."""
    path = Path(path)
    if not path.is_symlink():
        return path
    if model is None:
        import onnx

        try:
            model = onnx.load(str(path), load_external_data=False)
        except Exception:  # noqa: BLE001 - not readable: the caller's load says why
            return path
    files = weight_files(model)
    target = resolved(path)
    beside_link, beside_target = ([(folder / f).exists() for f in files] for folder in (path.parent, target.parent))
    if files and not all(beside_link) and all(beside_target):
        return target
    return path


def read_weights(model: onnx.ModelProto, path: Path) -> None:
    """Read the weights a model keeps in files beside it (`model.onnx.data`, say) into its tensors; a file that is
    missing or cut short is an error naming it. Weight files that are symbolic links are read (onnx refuses them,
    and Hugging Face's cache is made of them); a location outside the model's folder is refused."""
    from onnx import TensorProto
    from onnx.external_data_helper import ExternalDataInfo, _get_all_tensors, uses_external_data

    check_external_data(model, path)
    folder = model_location(path, model).parent
    with contextlib.ExitStack() as stack:
        opened: dict[str, Any] = {}
        for tensor in _get_all_tensors(model):
            if not uses_external_data(tensor):
                continue
            info = ExternalDataInfo(tensor)
            try:
                if info.location not in opened:
                    opened[info.location] = stack.enter_context(open(folder / info.location, "rb"))  # noqa: SIM115
                f = opened[info.location]
                f.seek(info.offset or 0)
                tensor.raw_data = f.read() if info.length is None else f.read(info.length)
            except OSError as e:
                raise OnnxkitError(f"{path}: cannot read its weights file {info.location} ({e.strerror}); "
                                   "check that it is readable") from e
            tensor.data_location = TensorProto.DEFAULT
            del tensor.external_data[:]


def check_external_data(model: onnx.ModelProto, path: Path) -> None:
    """An error naming the file, unless every weight file that `model` (loaded from `path` without its
    weights) names is inside the model's folder, beside it and long enough."""
    from onnx.external_data_helper import ExternalDataInfo, _get_all_tensors, uses_external_data

    folder = model_location(path, model).parent
    for tensor in _get_all_tensors(model):
        if not uses_external_data(tensor):
            continue
        info = ExternalDataInfo(tensor)
        location = Path(info.location)
        if not info.location or location.is_absolute() or ".." in location.parts:
            raise OnnxkitError(f"{path}: weight {tensor.name!r} names a file outside the model's folder "
                               f"({info.location!r}); a model's weight files must be beside it or below it")
        file = folder / location
        if not file.is_file():
            raise OnnxkitError(f"{path}: its weights are kept in a separate file, {info.location}, which is not "
                               f"beside it ({file} is missing); copy that file next to the model")
        end = (info.offset or 0) + (info.length or 0)
        if file.stat().st_size < end:
            raise OnnxkitError(f"{path}: its weights file {info.location} is cut short ({file.stat().st_size:,} "
                               f"bytes; weight {tensor.name!r} needs {end:,}); copy that file again in full")


def parquet_table(path: Path) -> Any:
    """A Parquet file's pyarrow Table (pyarrow imported here: the `ray` extra brings it); one error line when
    pyarrow is missing or the file is no Parquet."""
    try:
        import pyarrow
        import pyarrow.parquet
    except ImportError:
        raise OnnxkitError(f"{path}: reading Parquet needs pyarrow; pip install pyarrow, or save the table as "
                           ".csv") from None
    try:  # a file's own reader: read_table's (Arrow datasets) refused two columns of one name in 9 lines
        table = pyarrow.parquet.ParquetFile(path).read()
    except (OSError, pyarrow.ArrowException) as e:
        raise OnnxkitError(f"{path}: cannot read it as Parquet ({str(e).splitlines()[0]}); check the file") from e
    twice = first_repeated(table.column_names)
    if twice is not None:  # columns are read by name (pandas' to_parquet refuses to write such a table)
        raise OnnxkitError(f"{path}: two columns are named {twice!r}; give each column its own name")
    return table


def column_cells(values: list[Any]) -> list[str]:
    """A table column's values (pyarrow's `to_pylist`) as a CSV's cells: a null empty, a bool 1 or 0, else its text."""
    return ["" if v is None else str(int(v)) if isinstance(v, bool) else str(v) for v in values]


def refuse_past_memory(needed: int, what: str, advice: str) -> None:
    """'WHAT take N, more than the M of memory free; ADVICE', when `needed` bytes would not fit in the memory free now
    (the kernel would kill the process partway, with no word)."""
    from onnxkit.summary import human_bytes

    free = available_memory()
    if free is not None and needed > free:
        raise OnnxkitError(f"{what} take {human_bytes(needed)}, more than the {human_bytes(free)} of memory free; "
                           f"{advice}")


def available_memory() -> int | None:
    """Bytes of memory free for a new allocation (Linux's MemAvailable, else free pages); None where unknown."""
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            return next(int(line.split()[1]) * 1024 for line in f if line.startswith("MemAvailable:"))
    except (OSError, StopIteration, ValueError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, OSError, ValueError):
        return None
