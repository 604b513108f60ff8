"""Folders of images as datasets (torchvision's ImageFolder layout), and image files as a model's input.

- `DIR/<class>/...`: one subfolder per class holding its images (.png .jpg .jpeg .bmp .gif .webp .tif .tiff, any
  case; subfolders of a class folder, and links to folders, included); the classes are the subfolders' names in
  sorted order. Split by seed, as the other data files are.
- `DIR/train/<class>/...` with `val/` (or `validation/`) and/or `test/` beside it: those are the splits; one
  without a folder is carved out of `train/` by seed, at its usual fraction; the classes are train/'s.

Each image is decoded with Pillow (turned upright by its EXIF orientation; 16-bit gray: each value / 257), converted
to the channels of the model's image input (1: "L", 3: "RGB", 4: "RGBA"), resized (bilinear) to the input's fixed
height and width, laid out as the input is (`image_layouts`: NCHW when axis 1 is 1, 3 or 4, else NHWC when the last
axis is; where both are, the one of no more channels than either side: [batch, 4, 4, 3] is NHWC) and scaled to
[0, 1] for a float input (a uint8 input takes the bytes).
Every image is decoded once, into one array. Names starting with '.' (.DS_Store), and Windows' Thumbs.db and
desktop.ini, are left out.
Pillow is imported when an image is read.
"""

from __future__ import annotations

import hashlib
import os
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from onnxkit.data.split import SPLIT_ALIASES, SPLIT_NAMES, Dataset, Split, dataset_from_arrays, model_inputs
from onnxkit.errors import OnnxkitError, first_few
from onnxkit.files import IMAGE_SUFFIXES, not_a_file, refuse_past_memory

MODES = {1: "L", 3: "RGB", 4: "RGBA"}  # Pillow's mode for each channel count of an image input
_GRAY = ("1", "L", "LA", "I", "I;16", "F")  # modes read as one channel when no model says how many
_ORIENTATION = 0x0112  # the EXIF tag of how a camera held the image (1: as stored)
_SPLIT_FOLDERS = {**{name: name for name in SPLIT_NAMES}, **SPLIT_ALIASES}  # val/ or valid/ for validation/
_LAYOUT = "[batch, channels, height, width] or [batch, height, width, channels], with 1, 3 or 4 channels"
_SYSTEM_FILES = ("thumbs.db", "desktop.ini")  # Windows' Explorer writes them into folders of images
BUILT_SIDE = 64  # the largest square images of several sizes are resized to for a model built for them
GLANCE = 100  # a CSV column names images if one of its first this many rows does (a table's is not read through)


def image_layouts(shape: tuple | list) -> list[bool]:
    """The layouts a 4-D image `shape` can be read in, likelier first: False for [N, C, H, W], True for
    [N, H, W, C], each where its channel axis holds 1, 3 or 4; where both can, the one whose channels are no more
    than either side ([N, 4, 4, 3]: 4x4 pixels of 3 channels, not 4x3 of 4), else both, channels first (PyTorch's).
    Empty for another shape; two: the shape reads either way ([N, 3, 3, 3]; not [N, 1, 1, 1], the same both ways)."""
    if len(shape) != 4:
        return []
    read = {False: (shape[1], shape[2:]), True: (shape[3], shape[1:3])}  # layout: (channels, sides)
    found = [last for last, (channels, _) in read.items() if channels in MODES]
    fitting = [last for last in found
               if all(not isinstance(side, int) or read[last][0] <= side for side in read[last][1])]
    return fitting[:1] if len(fitting) == 1 or tuple(shape[1:]) == (1, 1, 1) else found  # [N, 1, 1, 1]: alike


@dataclass(frozen=True)
class ImageInput:
    """How a model input holds images: its name, channels, fixed height and width (None: the images' own), the
    order of its axes and its type. Channels None: those of the first image (gray: 1, else 3)."""

    name: str = "image"
    channels: int | None = None
    height: int | None = None
    width: int | None = None
    channels_last: bool = False
    dtype: np.dtype = np.dtype(np.float32)

    @classmethod
    def of(cls, spec: Any) -> ImageInput:
        """From a model input (`ModelInput` or the runtime's `TensorSpec`: name, dtype, shape)."""
        shape = tuple(spec.shape) if spec.shape is not None else ()
        shown = "[" + ", ".join("?" if d is None else str(d) for d in shape) + "]"
        if len(shape) != 4:
            raise OnnxkitError(f"model input {spec.name!r} {shown} is no image input ({_LAYOUT}), so a folder or "
                               "file of images cannot feed it; give this model .npz or .csv data")
        fixed = [d if isinstance(d, int) and d > 0 else None for d in shape]
        layouts = image_layouts(fixed)
        if not layouts:
            raise OnnxkitError(f"model input {spec.name!r} {shown} has no channel axis of 1, 3 or 4 ({_LAYOUT}); "
                               "give the images as .npy or .npz arrays shaped as the input")
        last = layouts[0]
        channels, height, width = (fixed[3], *fixed[1:3]) if last else fixed[1:]
        dtype = np.dtype(spec.dtype) if spec.dtype is not None else None
        if dtype is None or not (dtype.kind == "f" or dtype == np.uint8):
            raise OnnxkitError(f"model input {spec.name!r} holds {dtype or 'values numpy cannot hold'}; an image "
                               "input is float (pixels in [0, 1]) or uint8 (0-255): give the images as .npy arrays")
        return cls(spec.name, channels, height, width, last, dtype)

    @property
    def size(self) -> tuple[int, int] | None:
        """(width, height) to resize each image to, when the input fixes both."""
        return (self.width, self.height) if self.height and self.width else None


def image_input(specs: Sequence[Any]) -> ImageInput:
    """The one image input of a model (its `model_inputs`, or the runtime's `Model.inputs`)."""
    if len(specs) != 1:
        raise OnnxkitError(f"images feed a model of one image input; this one has {len(specs)} "
                           f"({first_few([s.name for s in specs], 5)}): give its data as an .npz file by input name")
    return ImageInput.of(specs[0])


def is_image(path: Path) -> bool:
    """Whether `path`'s suffix is an image's."""
    return path.suffix.lower() in IMAGE_SUFFIXES


def image_files(folder: Path) -> list[Path]:
    """The images in `folder` and its subfolders, sorted by path (none: []); another file beside them is an error
    naming it."""
    files = _files(folder)
    others = [p for p in files if not is_image(p)]
    if others and len(others) < len(files):
        raise OnnxkitError(f"{others[0]}: not an image, in the image folder {folder} ({len(others)} such "
                           f"file{'s' * (len(others) > 1)}: {first_few([p.name for p in others])}); move the other "
                           f"files out (images are {' '.join(IMAGE_SUFFIXES)})")
    return [] if others else files


def shown_name(name: str) -> str:
    """A file name as UTF-8 text: a byte that is not UTF-8 (a Latin-1 'é', which Python holds as a lone surrogate)
    written as \\xe9, as `ls -b` shows it."""
    return os.fsencode(name).decode("utf-8", "backslashreplace")


def no_images(folder: Path) -> str:
    """'FOLDER: no images (...) in it or its subfolders (it holds a.npy, ...)', for an error about `folder`."""
    others = _files(folder)
    held = f" (it holds {first_few([str(p.relative_to(folder)) for p in others])})" if others else ""
    return f"{folder}: no images ({' '.join(IMAGE_SUFFIXES)}) in it or its subfolders{held}"


def pillow_images(images: Sequence[Any], layout: ImageInput) -> np.ndarray:
    """Pillow images (`Model.predict`'s) as `read_images` reads image files: one array of `layout`'s shape and type."""
    return read_images([f"image {i}" for i in range(len(images))], layout,
                       lambda i, channels, size: _image_pixels(images[i], channels, size, f"image {i}"))


def read_images(paths: Sequence[Path], layout: ImageInput,
                decode: Callable[[int, int | None, tuple[int, int] | None], np.ndarray] | None = None) -> np.ndarray:
    """The images at `paths` as one array of `layout`'s shape and type ([N, C, H, W] or [N, H, W, C]). Without a
    fixed height and width, every image must have the first one's size. `decode(i, channels, size)`: image i's
    pixels, where they come from elsewhere than the file at paths[i] (which then only names it)."""
    decode = decode or (lambda i, channels, size: _pixels(paths[i], channels, size))
    first = decode(0, layout.channels, layout.size)
    height, width, channels = first.shape
    example = (height, width, channels) if layout.channels_last else (channels, height, width)
    _check_memory(len(paths), example, np.dtype(layout.dtype))
    array = np.empty((len(paths), *example), layout.dtype)
    decoded: dict[Any, int] = {}  # a file a list names again (an oversampled class) is copied, not decoded again
    for i, path in enumerate(paths):
        if path in decoded:
            array[i] = array[decoded[path]]
            continue
        decoded[path] = i
        pixels = first if i == 0 else decode(i, channels, layout.size)
        if pixels.shape != first.shape:
            raise OnnxkitError(f"{path}: {pixels.shape[1]}x{pixels.shape[0]} pixels where {paths[0]} has "
                               f"{width}x{height}; model input {layout.name!r} takes any size but one array holds "
                               "one: resize the images to one size, or export the model with a fixed height and width")
        array[i] = pixels if layout.channels_last else pixels.transpose(2, 0, 1)
    if array.dtype.kind == "f":
        array /= 255
    return array


def _check_memory(count: int, example: tuple[int, ...], dtype: np.dtype) -> None:
    """One error line, before decoding, when `count` images of `example`'s shape would not fit in the memory free."""
    refuse_past_memory(count * int(np.prod(example)) * dtype.itemsize,
                       f"{count:,} images of {' x '.join(map(str, example))} {dtype}",
                       "resize them smaller, use fewer, or export the model with a uint8 image input (a quarter of "
                       "float32's)")


def _pixels(path: Path, channels: int | None, size: tuple[int, int] | None) -> np.ndarray:
    """One image file's pixels as uint8 [H, W, C] (`_image_pixels`)."""
    return _opened(path, lambda image: _image_pixels(image, channels, size, path))


def _opened(path: Path, read: Callable[[Any], Any]) -> Any:
    """`read(image)` of the image file at `path` as Pillow opens it; one it cannot read is one error line."""
    from PIL import Image

    try:
        # Pillow warns of an image past MAX_IMAGE_PIXELS (a 10000x10000 scan) and refuses one twice as large: read it
        large = warnings.catch_warnings(action="ignore", category=Image.DecompressionBombWarning)
        with large, Image.open(path) as image:
            return read(image)
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:  # SyntaxError: a broken header
        raise OnnxkitError(f"{path}: not a readable image ({e}); replace the file or remove it") from e


def _image_pixels(image: Any, channels: int | None, size: tuple[int, int] | None, where: Any) -> np.ndarray:
    """A Pillow image's pixels as uint8 [H, W, C], turned upright by its EXIF orientation (as viewers and phones show
    it), converted to `channels` (None: gray 1, else 3) and resized to `size`; `where` names it in errors."""
    from PIL import Image, ImageOps

    if image.getexif().get(_ORIENTATION, 1) != 1:  # a phone's photo stored on its side: as viewers show it
        image = ImageOps.exif_transpose(image)
    mode = MODES[channels] if channels else "L" if image.mode in _GRAY else "RGB"
    image = _eight_bit(image, where).convert(mode)
    if size and image.size != size:
        image = image.resize(size, Image.Resampling.BILINEAR)
    pixels = np.asarray(image, dtype=np.uint8)
    return pixels.reshape(*pixels.shape[:2], -1)


def _eight_bit(image: Any, path: Any) -> Any:
    """A 16-bit grayscale image (Pillow's I;16 modes, and I, as which other readers give 16-bit PNGs) as 8 bits,
    each value / 257 rounded (65535: 255), where Pillow's convert saturates all but the darkest at 255. An I image
    past 0-65535, and a float one (F), are refused: no scale to 8 bits is theirs alone."""
    from PIL import Image

    if image.mode == "F":
        raise OnnxkitError(f"{path}: 32-bit float pixels (Pillow mode F), which have no one scale to 8 bits; save "
                           "the image with 8 or 16 bits per channel")
    if not image.mode.startswith("I"):
        return image
    values = np.asarray(image)
    if values.size and (values.min() < 0 or values.max() > 65535):
        raise OnnxkitError(f"{path}: 32-bit pixels from {values.min()} to {values.max()}, past 16 bits' 0-65535; "
                           "save the image with 8 or 16 bits per channel")
    return Image.fromarray(np.rint(values / 257).astype(np.uint8))


def folder_sha256(folder: Path) -> str:
    """The SHA-256 of an image folder's files (those read, `_files`): each one's path below it and its bytes' SHA-256,
    in sorted order. An image added, removed, renamed or edited changes it; a copy of the folder keeps it."""
    digest = hashlib.sha256()
    for path in _files(folder):
        digest.update(os.fsencode(path.relative_to(folder).as_posix()) + b"\0")  # a name's bytes, UTF-8 or not
        digest.update(hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()


def read_image_folder(root: Path, *, seed: int = 0, validation: float = 0.2, test: float = 0.2,
                      model: Any = None) -> Dataset:
    """A dataset from a folder of class folders of images, or of train/val/test folders of them (module docstring);
    the images as the image input of `model` (an `onnx.ModelProto`) takes them."""
    layout = image_input(model_inputs(model)) if model is not None else ImageInput()
    name = root.resolve().name or str(root)  # '.': the folder's own name
    folders = _split_folders(root)
    found = {split: _class_folders(folder) for split, folder in folders.items()}
    classes = list(found["train"])
    _check_held_out_classes(folders, found)
    _check_classes(root, classes, model)
    listed = {split: [(path, classes.index(label)) for label, paths in by_class.items() for path in paths]
              for split, by_class in found.items()}
    train = listed["train"]
    rows = np.arange(len(train))  # split as rows of train/: each split's rows say which of its images it takes
    labels = np.array([label for _, label in train], np.int64)
    carved = dataset_from_arrays(name, {layout.name: rows}, labels, label_names=classes, seed=seed,
                                 validation=0.0 if "validation" in listed else validation,
                                 test=0.0 if "test" in listed else test)
    parts = [listed[split] if split != "train" and split in listed else
             [train[i] for i in getattr(carved, split).inputs[layout.name]] for split in SPLIT_NAMES]
    return _image_dataset(name, parts, layout, classes, built=model is None)


def _image_dataset(name: str, parts: list[list[tuple[Path, Any]]], layout: ImageInput, classes: list[str] | None,
                   *, built: bool, task: str = "classification") -> Dataset:
    """The dataset of each split's (image file, label) `parts`, the images read as `layout` says; for a model to be
    `built` for them, at one size (`_one_size`)."""
    paths = [path for part in parts for path, _ in part]
    notes: tuple[str, ...] = ()
    if built:
        layout, notes = _one_size(paths, layout)
    images = read_images(paths, layout)
    ends = np.cumsum([0, *(len(part) for part in parts)])
    kind = np.int64 if task == "classification" else np.float32  # an empty split's labels too
    splits = [Split(split, {layout.name: images[lo:hi]}, np.array([label for _, label in part], kind))
              for split, part, lo, hi in zip(SPLIT_NAMES, parts, ends[:-1], ends[1:], strict=True)]
    return Dataset(name, *splits, label_names=classes, notes=notes, task=task)


def image_column(path: Path, header: Sequence[str] | None, body: Sequence[Sequence[str]], label: int | None,
                 lines: Sequence[int]) -> int | None:
    """The column of a CSV's rows (`lines` in the file; the `label` column aside) that names an image file in every
    row, by its suffix (a `path,label` list of images, as fastai's `ImageDataLoaders.from_csv` and Keras'
    `flow_from_dataframe` read), or None. One error line, beginning with `path`, for a column naming images in most
    rows but not all (the first row it does not; it was read as a table, 'too many distinct texts'), two such
    columns, and a label column naming images too (an image beside its mask)."""
    width = len(header or body[0]) if body else 0
    glance = [j for j in range(width) if any(is_image(Path(_cell(row, j))) for row in body[:GLANCE])]
    named = {j: [is_image(Path(_cell(row, j))) for row in body] for j in glance}  # a table's numbers: none
    listed = [j for j in named if j != label and all(named[j])]
    shown = [repr(header[j].strip()) if header else f"column {j + 1}" for j in range(width)]
    labelled = label is not None and all(named.get(label, [False]))
    if len(listed) > 1 or listed and labelled:
        found = [*listed, *([label] if labelled else [])]
        raise OnnxkitError(f"{path}: {' and '.join(shown[j] for j in found)} each name an image in every row; a list "
                           "of images has one such column, beside a label column of class names or numbers: drop the "
                           "others")
    if listed:
        return listed[0]
    partly = next((j for j in named if j != label and 2 * sum(named[j]) > len(body)), None)
    if partly is not None:
        i = named[partly].index(False)
        raise OnnxkitError(f"{path}:{lines[i]}: {shown[partly]} names an image file in {sum(named[partly])} of "
                           f"{len(body)} rows, but not here ({_cell(body[i], partly)!r}); name an image "
                           f"({' '.join(IMAGE_SUFFIXES)}) in every row, or drop the rows that name none")
    return None


def _cell(row: Sequence[str], j: int) -> str:
    """Cell `j` of a CSV row, stripped; '' past a short row's end (predict reads a list's rows as they are)."""
    return row[j].strip() if j < len(row) else ""


def listed_files(path: Path, column: int, body: Sequence[Sequence[str]]) -> list[Path]:
    """The image files a CSV lists in `column`, from its folder (or absolute); a Windows path (`imgs\\a.png`) is
    taken with / when only that names a file. Files that are not there are one error line, with their count."""
    files = [_listed(path.parent, row[column].strip()) for row in body]
    absent = [f for f in files if not f.is_file()]
    if absent:
        raise OnnxkitError(f"{path}: {len(absent)} of the {len(files)} images its column {column + 1} names are not "
                           f"there, the first {absent[0]} ({not_a_file(absent[0])}); paths are taken from the CSV's "
                           "folder: fix them, or drop those rows")
    return files


def _listed(folder: Path, cell: str) -> Path:
    """The file a list's cell names, from `folder`; its \\ read as / where only that names a file."""
    file = folder / cell
    if "\\" in cell and os.sep == "/" and not file.exists() and (folder / cell.replace("\\", "/")).is_file():
        return folder / cell.replace("\\", "/")
    return file


def read_listed_images(path: Path, column: int, body: Sequence[Sequence[str]], labels: np.ndarray,
                       label_names: list[str] | None, *, seed: int, validation: float, test: float,
                       inputs: Sequence[Any] = ()) -> Dataset:
    """A dataset of the images a CSV lists in `column` (`listed_files`) with their `labels`, split by seed; the
    images as the model's image input (`inputs`) takes them, else at one size."""
    files = listed_files(path, column, body)
    layout = image_input(inputs) if inputs else ImageInput()
    carved = dataset_from_arrays(path.stem, {"rows": np.arange(len(files))}, labels, label_names=label_names,
                                 seed=seed, validation=validation, test=test)
    parts = [[(files[i], labels[i]) for i in carved.split(split).inputs["rows"]] for split in SPLIT_NAMES]
    return _image_dataset(path.stem, parts, layout, carved.label_names, built=not inputs, task=carved.task)


def _one_size(paths: Sequence[Path], layout: ImageInput) -> tuple[ImageInput, tuple[str, ...]]:
    """The layout images of no model are read in: their own size when they share one of at most BUILT_SIDE pixels a
    side, else a square of the median of their shorter sides, at most BUILT_SIDE, each resized to it (bilinear, as
    for a model of that size; a square whatever way a photo's EXIF turns it), and the note that says so."""
    sized = {path: _opened(path, lambda image: image.size) for path in dict.fromkeys(paths)}  # the headers alone
    sizes = [sized[path] for path in paths]
    if len(set(sizes)) == 1 and max(sizes[0]) <= BUILT_SIDE:
        return layout, ()
    side = min(BUILT_SIDE, int(np.median([min(size) for size in sizes])))
    widths, heights = zip(*sizes, strict=True)
    span = [f"{min(v)}" if min(v) == max(v) else f"{min(v)}-{max(v)}" for v in (widths, heights)]
    note = (f"images of widths {span[0]} and heights {span[1]} pixels, resized to {side}x{side} for the model built "
            "for them")
    return replace(layout, height=side, width=side), (note,)


def _split_folders(root: Path) -> dict[str, Path]:
    """The split folders (train/ and val/, validation/ or test/) of `root` by split name, when it holds only those;
    else `root` as the one folder of the train split (split by seed)."""
    folders = _folders(root)
    splits = [p for p in folders if p.name in _SPLIT_FOLDERS]
    layout = "give it train/ with val/ (or validation/) and/or test/ alone, each with a subfolder of images per class"
    if splits and len(splits) < len(folders) and any(_folders(p) for p in splits):  # a class 'train' holds images
        others = [f"{p.name}/" for p in folders if p not in splits]
        raise OnnxkitError(f"{root}: holds the split folder{'s' * (len(splits) > 1)} "
                           f"{', '.join(f'{p.name}/' for p in splits)} beside {first_few(others)}; {layout}")
    if not splits or len(splits) < len(folders):
        return {"train": root}
    named = {_SPLIT_FOLDERS[p.name]: p for p in splits}
    if "train" not in named or len(named) < len(splits):
        raise OnnxkitError(f"{root}: holds the split folders {', '.join(f'{p.name}/' for p in splits)}; {layout}")
    return named


def holds_test_folder(root: Path) -> bool:
    """Whether the image folder `root` holds its own test split, a test/ beside train/ (`_split_folders`)."""
    try:
        return "test" in _split_folders(root)
    except OnnxkitError:  # said as the folder is read
        return False


def _hidden(name: str) -> bool:
    """Whether a file or folder of this name is left out: a dot-file (.DS_Store), or Thumbs.db or desktop.ini."""
    return name.startswith(".") or name.lower() in _SYSTEM_FILES


def _folders(folder: Path) -> list[Path]:
    """The subfolders of `folder` (not hidden ones, `_hidden`), sorted; a broken link among them is an error."""
    entries = [p for p in sorted(folder.iterdir()) if not _hidden(p.name)]
    broken = next((p for p in entries if p.is_symlink() and not p.exists()), None)
    if broken is not None:
        raise OnnxkitError(f"{broken}: {not_a_file(broken)}; remove the link or restore what it links to")
    return [p for p in entries if p.is_dir()]


def _class_folders(folder: Path) -> dict[str, list[Path]]:
    """The images of each class folder of `folder`, by class name (sorted)."""
    classes = _folders(folder)
    undecodable = next((p for p in classes if shown_name(p.name) != p.name), None)
    if undecodable is not None:  # its name would be the class's label in the model, served as JSON
        raise OnnxkitError(f"{shown_name(str(undecodable))}: a class folder whose name is not UTF-8; its name is the "
                           "class's label in the model: rename it in UTF-8")
    files = [p for p in sorted(folder.iterdir()) if p.is_file() and not _hidden(p.name)]
    if not classes and any(is_image(p) for p in files):
        raise OnnxkitError(f"{folder}: holds images but no class folders; put each class's images in a subfolder "
                           f"named after the class ({folder}/cat/1.png, {folder}/dog/1.png)")
    images = {p.name: image_files(p) for p in classes}
    if not any(images.values()):
        raise OnnxkitError(f"{no_images(folder)}; an image dataset holds a subfolder of images per class "
                           f"({folder}/cat/1.png), other data go in a .npz or .csv file")
    if files:
        raise OnnxkitError(f"{files[0]}: a file beside the class folders of {folder} ({len(files)} such "
                           f"file{'s' * (len(files) > 1)}: {first_few([p.name for p in files])}); an image folder "
                           "holds one subfolder of images per class: move the files out")
    empty = [name for name, paths in images.items() if not paths]
    if empty:
        raise OnnxkitError(f"{no_images(folder / empty[0])}: a class folder needs its images; add them or remove "
                           "the folder")
    return images


def _check_held_out_classes(folders: dict[str, Path], found: dict[str, dict[str, list[Path]]]) -> None:
    """Refuse a class folder of val/ or test/ that train/ lacks: its class would have no training example."""
    train = found["train"]
    for split, by_class in found.items():
        extra = next((name for name in by_class if name not in train), None)
        if extra is not None:
            raise OnnxkitError(f"{folders[split] / extra} has no folder in train/ (its classes: "
                               f"{first_few(list(train), 10)}); rename it to one of them, or add train/{extra} with "
                               "its training images")


def _check_classes(root: Path, classes: list[str], model: Any) -> None:
    """Refuse fewer than 2 classes, unless they are among the 2 or more a model names (a held-out folder of one)."""
    from onnxkit.data.registry import model_class_names

    named = (model_class_names(model) or []) if model is not None else []
    if len(classes) >= 2 or len(named) >= 2 and set(classes) <= set(named):
        return
    inner = root / classes[0] if (root / classes[0]).is_dir() else None
    deeper = inner is not None and bool(_folders(inner))
    hint = f" ({inner} holds folders: is it the folder of class folders? pass it)" if deeper else ""
    raise OnnxkitError(f"{root}: one class folder, {classes[0]!r}; a classifier trains on 2 or more classes: put "
                       f"each class's images in a subfolder named after it{hint}")


def _files(folder: Path) -> list[Path]:
    """The files in `folder` and its subfolders, sorted by path, less those with a part of their path (below
    `folder`) hidden (`_hidden`): .DS_Store, .ipynb_checkpoints/, Thumbs.db. Links to folders are followed, as
    torchvision's ImageFolder follows them (rglob left their images out); a broken link, or a link to a folder
    that holds it (a loop), is an error naming it."""
    return sorted(_walk(folder, ()))


def _walk(folder: Path, above: tuple[tuple[int, int], ...]) -> list[Path]:
    """The files below `folder` (`_files`); `above`: the (device, inode) of the folders holding it, to tell a loop."""
    stat = folder.stat()
    key = (stat.st_dev, stat.st_ino)
    if key in above:  # links that lead to one another (a/x -> b, b/y -> a)
        raise OnnxkitError(f"{folder}: {folder.resolve()} again, inside itself through links (a loop); remove them")
    files: list[Path] = []
    for entry in os.scandir(folder):
        path = Path(entry.path)
        if _hidden(entry.name):
            continue
        if entry.is_dir():
            if entry.is_symlink() and folder.resolve().is_relative_to(path.resolve()):
                raise OnnxkitError(f"{path}: a link to {path.resolve()}, a folder that holds it (a loop); remove it")
            files += _walk(path, (*above, key))
        elif entry.is_file():
            files.append(path)
        elif entry.is_symlink():  # to nothing
            raise OnnxkitError(f"{path}: {not_a_file(path)}; remove the link or restore what it links to")
    return files
