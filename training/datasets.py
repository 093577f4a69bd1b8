"""Read signature datasets from disk into one list of `Signature` records.

Six layouts are understood (see `LAYOUTS`); `read_signatures` finds the image (or pen-stroke)
files, reads writer, genuine/forged and sample number from the names, drops byte-identical
duplicates and returns the records sorted. The fixed evaluation split of ../shared/datasets/README.md is
built in (`SPLITS`); other datasets get a documented rule (`writer_split`).

Run on its own:  python -m edge_verify.training.datasets ROOT [--layout L]
"""
from __future__ import annotations

import argparse
import hashlib
import random
import re
import sys
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from edge_verify.edge.errors import EdgeVerifyError


class DatasetError(EdgeVerifyError):
    """A dataset folder does not have the layout it was read as."""


LAYOUTS = ("cedar", "bhsig", "sigcomp", "generic", "strokes", "crossmedia")

LAYOUT_HELP = (
    "cedar (original_W_S.png / forgeries_W_S.png, flat or in full_org/ + full_forg/), "
    "bhsig (writer_NNN/genuine/ + writer_NNN/forged/, or per-writer folders of B-S-1-G-01.tif), "
    "sigcomp (NNN/ genuine + NNN_forg/ forgeries), "
    "generic (WRITER/genuine/ + WRITER/forged/), "
    "strokes (writer_NNN/genuine/*.csv + writer_NNN/forged/*.csv pen-stroke files), "
    "crossmedia (index.csv: file,group,writer,name_index,name,medium)"
)

# The fixed split: dataset -> split -> inclusive range of writer numbers (a writer's first number).
# Writers not listed train. CEDAR and Bengali: ../shared/datasets/README.md. The four added sets
# are training data with no test writers; the writers listed as "val" are held out to make the
# validation pool larger (model selection only; only those with skilled forgeries count there).
SPLITS = {
    "cedar": {"test": (46, 55), "val": (41, 45)},
    "bhsig-bengali": {"test": (91, 100), "val": (81, 90)},
    "svc2004": {"val": (33, 40)},
    "mcyt100-online": {"val": (23, 30)},
    "sigwicomp2013-japanese": {"val": (9, 10)},
    "crossmedia-chinese": {"val": (91, 100)},   # experiment writers; control writers (c01-c11) train
}
STROKE_SUFFIXES = {".csv", ".jsonl", ".ndjson"}  # pen-stroke files, drawn by the pad renderer
CROSSMEDIA_FORGERS = 6  # per (writer, name): this many other writers' drawings of the name are its "forgeries"
# Any other dataset: writers sorted, the last HOLDOUT_FRACTION test, the same share before them
# validation (at least one writer each).
HOLDOUT_FRACTION = 0.1
SPLIT_NAMES = ("train", "val", "test", "all")

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp"}
IGNORED_NAMES = {"thumbs.db", "desktop.ini", "__macosx"}
IGNORED_SUFFIXES = {".txt", ".md", ".csv", ".json", ".pdf", ".xls", ".xlsx"}

CEDAR_NAME = re.compile(r"(original|forgeries)_(\d+)_(\d+)", re.IGNORECASE)
BHSIG_NAME = re.compile(r"([BH])-S-(\d+)-([GF])-(\d+)", re.IGNORECASE)
SIGCOMP_FORGED_FOLDER = re.compile(r"(\d+)_forg", re.IGNORECASE)
TWO_NUMBERS = re.compile(r"(\d+)_(\d+)")
LAST_NUMBER = re.compile(r"(\d+)\D*$")


@dataclass(frozen=True)
class Signature:
    """One image of a signature dataset. For a forgery, `writer` is the writer forged."""

    dataset: str
    writer: str
    genuine: bool
    sample: int
    path: Path
    variant: int = 0  # pen-stroke files: which rendering (0 = the device's pad renderer)
    bend: float = 0.0  # pen-stroke files: how far a variant redraws the trajectory (strokes.bent)
    imitation: bool = True  # a forgery drawn to imitate the writer; False: another person's own writing of the text


# ---------------------------------------------------------------- files and folders


def is_stroke_file(path: Path) -> bool:
    """A pen-stroke file (drawn by the pad renderer), not an image."""
    return path.suffix.lower() in STROKE_SUFFIXES


def _ignored(path: Path) -> bool:
    name = path.name.lower()
    return (name.startswith(".") or name in IGNORED_NAMES or name.startswith(("readme", "license"))
            or (path.is_file() and path.suffix.lower() in IGNORED_SUFFIXES))


def _entries(folder: Path) -> list[Path]:
    """Entries of a folder, sorted, without hidden files and obvious non-images."""
    return sorted(p for p in folder.iterdir() if not _ignored(p))


def _images(folder: Path) -> list[Path]:
    """Image files of a folder; anything else there is an error."""
    images = []
    for entry in _entries(folder):
        if entry.is_file() and entry.suffix.lower() in IMAGE_SUFFIXES:
            images.append(entry)
        else:
            raise DatasetError(f"unexpected {'folder' if entry.is_dir() else 'file'} {entry}: "
                               f"expected only signature images ({', '.join(sorted(IMAGE_SUFFIXES))})")
    return images


def _subfolders(root: Path) -> list[Path]:
    return [p for p in _entries(root) if p.is_dir()]


# ---------------------------------------------------------------- layouts


def _is_cedar(root: Path) -> bool:
    if (root / "full_org").is_dir() and (root / "full_forg").is_dir():
        return True
    return any(p.is_file() and CEDAR_NAME.fullmatch(p.stem) for p in _entries(root))


def _is_sigcomp(root: Path) -> bool:
    return any(SIGCOMP_FORGED_FOLDER.fullmatch(p.name) for p in _subfolders(root))


def _is_bhsig(root: Path) -> bool:
    for folder in _subfolders(root):
        if re.fullmatch(r"writer_\d+", folder.name):
            return True
        if any(BHSIG_NAME.fullmatch(p.stem) for p in _entries(folder)):
            return True
    return False


def _is_generic(root: Path) -> bool:
    return any((folder / "genuine").is_dir() for folder in _subfolders(root))


def _is_strokes(root: Path) -> bool:
    return any((folder / "genuine").is_dir() and any(is_stroke_file(p)
                                                     for p in (folder / "genuine").iterdir())
               for folder in _subfolders(root))


def _is_crossmedia(root: Path) -> bool:
    index = root / "index.csv"
    return index.is_file() and index.open(encoding="utf-8").readline().startswith("file,group,writer,name_index")


def detect_layout(root) -> str:
    """Name of the layout of `root`, one of LAYOUTS."""
    root = _existing_folder(root)
    for layout, test in (("crossmedia", _is_crossmedia), ("cedar", _is_cedar), ("sigcomp", _is_sigcomp),
                         ("strokes", _is_strokes), ("bhsig", _is_bhsig), ("generic", _is_generic)):
        if test(root):
            return layout
    raise DatasetError(f"cannot tell the layout of {root}: expected one of {LAYOUT_HELP}")


def _existing_folder(root) -> Path:
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"dataset folder {root} does not exist or is not a folder")
    return root


def _number(text: str, path: Path, expected: str) -> int:
    if not text.isdigit():
        raise DatasetError(f"cannot read a number from {path}: expected {expected}")
    return int(text)


def _read_cedar(root: Path) -> list[Signature]:
    files = []
    for entry in _entries(root):
        if entry.is_dir() and entry.name.lower() in ("full_org", "full_forg"):
            files += _images(entry)
        elif entry.is_dir():
            raise DatasetError(f"unexpected folder {entry}: a CEDAR folder holds original_W_S / "
                               "forgeries_W_S images, or the folders full_org/ and full_forg/")
        else:
            files.append(entry)
    signatures = []
    for path in files:
        match = CEDAR_NAME.fullmatch(path.stem)
        if not match or path.suffix.lower() not in IMAGE_SUFFIXES:
            raise DatasetError(f"unexpected file {path}: CEDAR files are named original_W_S.png "
                               "(genuine) or forgeries_W_S.png (forgery of writer W), S the sample")
        kind, writer, sample = match.groups()
        signatures.append(Signature("cedar", writer, kind.lower() == "original", int(sample), path))
    return signatures


def _bhsig_dataset_name(root: Path, letters: set[str]) -> str:
    name = root.name.lower()
    if "bengali" in name or letters == {"B"}:
        return "bhsig-bengali"
    if "hindi" in name or letters == {"H"}:
        return "bhsig-hindi"
    return root.name


def _read_bhsig(root: Path) -> list[Signature]:
    if any(re.fullmatch(r"writer_\d+", f.name) for f in _subfolders(root)):
        dataset = _bhsig_dataset_name(root, set())
        return _read_writer_folders(root, dataset, writer_folder=re.compile(r"writer_(\d+)"))
    # The original BHSig260 naming: one folder per writer, B-S-<writer>-<G|F>-<sample>.tif.
    found = []
    for folder in _writer_folders(root):
        for path in _images(folder):
            match = BHSIG_NAME.fullmatch(path.stem)
            if not match:
                raise DatasetError(f"unexpected file {path}: BHSig files are named like "
                                   "B-S-1-G-01.tif (G genuine, F forged, then the sample)")
            script, writer, kind, sample = match.groups()
            if int(writer) != _number(folder.name, folder, "a writer number as folder name"):
                raise DatasetError(f"{path} names writer {writer} but lies in folder {folder.name}")
            found.append((script.upper(), folder.name, kind.upper() == "G", int(sample), path))
    dataset = _bhsig_dataset_name(root, {f[0] for f in found})
    return [Signature(dataset, *f[1:]) for f in found]


def _writer_folders(root: Path) -> list[Path]:
    for entry in _entries(root):
        if not entry.is_dir():
            raise DatasetError(f"unexpected file {entry}: expected one folder per writer in {root}")
    return _subfolders(root)


def _read_writer_folders(root: Path, dataset: str, writer_folder=re.compile(r"(.+)")) -> list[Signature]:
    """ROOT/<writer>/genuine/* and ROOT/<writer>/forged/* (bhsig and generic layouts)."""
    signatures = []
    for folder in _writer_folders(root):
        match = writer_folder.fullmatch(folder.name)
        if not match:
            raise DatasetError(f"unexpected folder {folder}: expected writer folders like writer_001")
        if not (folder / "genuine").is_dir() or not _images(folder / "genuine"):
            raise DatasetError(f"writer folder {folder} has no genuine/ folder with images: "
                               f"expected {folder.name}/genuine/ (and optionally {folder.name}/forged/)")
        for entry in _entries(folder):
            if entry.name not in ("genuine", "forged"):
                raise DatasetError(f"unexpected {'folder' if entry.is_dir() else 'file'} {entry}: "
                                   "a writer folder holds only genuine/ and forged/")
            for path in _images(entry):
                number = LAST_NUMBER.search(path.stem)
                if not number:
                    raise DatasetError(f"no sample number in the file name {path}: expected e.g. "
                                       f"{entry.name}_01{path.suffix}")
                signatures.append(Signature(dataset, match.group(1), entry.name == "genuine",
                                            int(number.group(1)), path))
    return signatures


def _read_strokes(root: Path) -> list[Signature]:
    """ROOT/writer_NNN/genuine/*.csv and ROOT/writer_NNN/forged/*.csv: pen strokes (MCYT, SigWiComp)."""
    signatures = []
    for folder in _writer_folders(root):
        match = re.fullmatch(r"writer_(\d+)", folder.name)
        if not match:
            raise DatasetError(f"unexpected folder {folder}: expected writer folders like writer_001")
        for kind in ("genuine", "forged"):
            for path in sorted((folder / kind).glob("*")) if (folder / kind).is_dir() else []:
                number = LAST_NUMBER.search(path.stem)
                if not is_stroke_file(path) or not number:
                    raise DatasetError(f"unexpected file {path}: expected pen-stroke files like {kind}_01.csv")
                signatures.append(Signature(root.name, match.group(1), kind == "genuine",
                                            int(number.group(1)), path))
    return signatures


def _read_crossmedia(root: Path) -> list[Signature]:
    """Cross-media Chinese: every writer wrote the same 10 names. A "writer" here is one person
    writing one name ("e007-03": experiment writer 7, name 3; control writers are c01..c11);
    its forgeries are CROSSMEDIA_FORGERS other people's drawings of the same name (same text,
    other hand), chosen by a fixed rule."""
    import csv

    by_name = defaultdict(list)   # name index -> [(key, sample, path)]
    with (root / "index.csv").open(encoding="utf-8", newline="") as index:
        for row in csv.DictReader(index):
            path = root / row["file"]
            key = f"{row['group'][0]}{int(row['writer']):03d}-{int(row['name_index']):02d}"
            sample = int(Path(row["file"]).stem)
            by_name[int(row["name_index"])].append((key, sample, path))
    signatures = []
    for entries in by_name.values():
        keys = sorted({key for key, _, _ in entries})
        firsts = {}
        for key, sample, path in sorted(entries):
            signatures.append(Signature(root.name, key, True, sample, path))
            firsts.setdefault(key, path)
        for split in SPLIT_NAMES:  # forgers from the same split only: held-out writers stay out of training
            group = [key for key in keys if writer_split(root.name, key) == split]
            for i, key in enumerate(group):  # the next writers in order, each one's first drawing
                others = [group[(i + j) % len(group)] for j in range(1, min(CROSSMEDIA_FORGERS + 1, len(group)))]
                signatures += [Signature(root.name, key, False, n + 1, firsts[other], imitation=False)
                               for n, other in enumerate(others)]
    return signatures


def _other_number(a: str, b: str, writer: str) -> str | None:
    """Of the two numbers of a genuine sigcomp name, the one that is not the writer."""
    for same in (lambda x: x == writer, lambda x: int(x) == int(writer)):  # spelling first
        if same(a):
            return b
        if same(b):
            return a
    return None


def _read_sigcomp(root: Path) -> list[Signature]:
    """NNN/ genuine and NNN_forg/ forgeries (SigComp2011 / Kaggle "sign_data").

    Genuine files are NNN_SS.png or SS_NNN.png; forgeries FFFFNNN_SS.png or SS_FFFFNNN.png,
    FFFF the forger and NNN the writer forged.
    """
    signatures = []
    for folder in _writer_folders(root):
        forged = SIGCOMP_FORGED_FOLDER.fullmatch(folder.name)
        writer = forged.group(1) if forged else folder.name
        _number(writer, folder, "genuine folders named NNN and forgery folders named NNN_forg")
        for path in _images(folder):
            parts = TWO_NUMBERS.fullmatch(path.stem)
            if not parts:
                raise DatasetError(f"unexpected file {path}: expected NNN_SS{path.suffix} in a "
                                   f"genuine folder or FFFFNNN_SS{path.suffix} in a _forg folder")
            a, b = parts.groups()
            if forged:
                long, sample = (a, b) if len(a) > len(b) else (b, a)
                if len(long) < 4 or int(long[-3:]) != int(writer):
                    raise DatasetError(f"{path} does not name a forgery of writer {writer}: "
                                       f"expected FFFF{writer}_SS{path.suffix}")
            else:
                sample = _other_number(a, b, writer)
                if sample is None:
                    raise DatasetError(f"{path} does not name writer {writer}: "
                                       f"expected {writer}_SS{path.suffix} or SS_{writer}{path.suffix}")
            signatures.append(Signature(root.name, writer, not forged, int(sample), path))
    return signatures


# ---------------------------------------------------------------- reading


def _sort_key(s: Signature):
    writer = (0, int(s.writer), s.writer) if s.writer.isdigit() else (1, 0, s.writer)
    return (s.dataset, writer, not s.genuine, s.sample, str(s.path))


def list_signatures(root, layout: str | None = None) -> list[Signature]:
    """Every signature image under `root`, duplicates included, sorted."""
    root = _existing_folder(root)
    layout = layout or detect_layout(root)
    readers = {"cedar": _read_cedar, "bhsig": _read_bhsig, "sigcomp": _read_sigcomp,
               "generic": lambda r: _read_writer_folders(r, r.name), "strokes": _read_strokes,
               "crossmedia": _read_crossmedia}
    if layout not in readers:
        raise DatasetError(f"unknown layout {layout!r}: expected one of {', '.join(LAYOUTS)}")
    signatures = readers[layout](root)
    if not signatures:
        raise DatasetError(f"no signature images in {root} (read as layout {layout}): "
                           f"expected {LAYOUT_HELP}")
    with_genuine = {s.writer for s in signatures if s.genuine}
    for s in signatures:
        if s.writer not in with_genuine:
            raise DatasetError(f"writer {s.writer} has forgeries but no genuine signature "
                               f"(first: {s.path})")
    return sorted(signatures, key=_sort_key)


def remove_duplicates(signatures) -> tuple[list[Signature], list[Signature]]:
    """(kept, removed): a file whose bytes equal an earlier one's (sorted by path) of the same
    writer is removed. (Cross-media lists one file under two writers: as one's genuine drawing
    and as the other's forgery.)"""
    seen = set()
    duplicates = set()
    for s in sorted(signatures, key=lambda s: (str(s.path), s.writer, not s.genuine)):
        key = (hashlib.sha256(s.path.read_bytes()).digest(), s.dataset, s.writer)
        if key in seen:
            duplicates.add(s)
        seen.add(key)
    kept = [s for s in signatures if s not in duplicates]
    removed = [s for s in signatures if s in duplicates]
    return kept, removed


def read_signatures(root, layout: str | None = None) -> list[Signature]:
    """The signature images under `root`, exact duplicates removed, sorted.

    `layout` is one of LAYOUTS; None detects it. Raises DatasetError on a malformed folder.
    """
    return remove_duplicates(list_signatures(root, layout))[0]


# ---------------------------------------------------------------- the writer split


def _writer_key(writer: str):
    return (0, int(writer), writer) if writer.isdigit() else (1, 0, writer)


CROSSMEDIA_KEY = re.compile(r"([a-z]\d{3})-(\d{2})")  # a Cross-media writer key: person, name index


def person_of(writer: str) -> str:
    """The person behind a writer key: a Cross-media "writer" is one person writing one name
    ("e007-03" is person e007); any other writer is a person."""
    key = CROSSMEDIA_KEY.fullmatch(writer)
    return key.group(1) if key else writer


def people_by_dataset(keys) -> dict[str, dict[str, list[tuple[str, str]]]]:
    """Each dataset's people (person_of), each with their (dataset, writer) keys in the order
    given: {dataset: {person: [key, ...]}}."""
    people = defaultdict(lambda: defaultdict(list))
    for dataset, writer in keys:
        people[dataset][person_of(writer)].append((dataset, writer))
    return people


def dataset_weights(keys) -> dict[str, float]:
    """How much each dataset counts, from its (dataset, writer) keys: the square root of its
    number of people, so that neither a big set drowns the small ones nor a set of two people
    counts as much as one of a hundred. Training batches draw by it (train.writer_weights) and
    the validation pool averages by it (evaluate.pool_figure)."""
    return {dataset: len(names) ** 0.5 for dataset, names in people_by_dataset(keys).items()}


def writer_split(dataset: str, writer: str, all_writers=None) -> str:
    """"train", "val" or "test" for `writer` of `dataset`.

    The datasets of SPLITS use that fixed table (by the first number in the writer name). Any other dataset needs `all_writers`
    (every writer of the dataset): sorted (numerically where they are numbers), the last 10 %
    (rounded, at least one) are test, as many before them validation, the rest train.
    """
    if dataset in SPLITS:
        digits = re.search(r"\d+", writer)
        if not digits:
            raise DatasetError(f"writer {writer!r} of dataset {dataset} has no number")
        number = int(digits.group())
        if dataset == "crossmedia-chinese" and not writer.startswith("e"):
            return "train"  # control writers: their numbers are another series
        for split, (first, last) in SPLITS[dataset].items():
            if first <= number <= last:
                return split
        return "train"
    if all_writers is None:
        raise ValueError(f"dataset {dataset!r} has no fixed split: pass all_writers")
    writers = sorted(set(all_writers), key=_writer_key)
    if writer not in writers:
        raise ValueError(f"writer {writer!r} is not among all_writers")
    held_out = max(1, round(len(writers) * HOLDOUT_FRACTION))
    if len(writers) < 2 * held_out + 1:
        raise DatasetError(f"dataset {dataset} has {len(writers)} writers: at least 3 are needed "
                           "to split it into train, val and test")
    position = writers.index(writer)
    if position >= len(writers) - held_out:
        return "test"
    if position >= len(writers) - 2 * held_out:
        return "val"
    return "train"


def select_split(signatures, split: str) -> list[Signature]:
    """The signatures whose writer belongs to `split` (train, val, test or all)."""
    if split not in SPLIT_NAMES:
        raise ValueError(f"unknown split {split!r}: expected one of {', '.join(SPLIT_NAMES)}")
    signatures = list(signatures)
    if split == "all":
        return signatures
    writers = defaultdict(set)
    for s in signatures:
        writers[s.dataset].add(s.writer)
    return [s for s in signatures if writer_split(s.dataset, s.writer, writers[s.dataset]) == split]


def some_people(signatures, fraction: float, seed: int = 0) -> list[Signature]:
    """The signatures of `fraction` of each dataset's people (at least one), drawn at random by
    `seed`; a person keeps all their writer keys (every name of a Cross-media person)."""
    if not 0 < fraction <= 1:
        raise ValueError(f"fraction {fraction} is not in (0, 1]")
    people, rng = people_by_dataset({(s.dataset, s.writer) for s in signatures}), random.Random(seed)
    kept = {(dataset, person) for dataset, names in people.items()
            for person in rng.sample(sorted(names), max(1, round(fraction * len(names))))}
    return [s for s in signatures if (s.dataset, person_of(s.writer)) in kept]


# ---------------------------------------------------------------- command line


def split_counts(root, layout: str | None = None) -> dict[str, dict[str, int]]:
    """Per split: writers, genuine, forged (after de-duplication) and duplicates removed."""
    kept, removed = remove_duplicates(list_signatures(root, layout))
    writers = defaultdict(set)
    for s in kept + removed:
        writers[s.dataset].add(s.writer)
    counts = {}
    for split in SPLIT_NAMES:
        chosen = [s for s in kept if split == "all"
                  or writer_split(s.dataset, s.writer, writers[s.dataset]) == split]
        dropped = [s for s in removed if split == "all"
                   or writer_split(s.dataset, s.writer, writers[s.dataset]) == split]
        counts[split] = {"writers": len({(s.dataset, s.writer) for s in chosen}),
                         "genuine": sum(s.genuine for s in chosen),
                         "forged": sum(not s.genuine for s in chosen),
                         "duplicates_removed": len(dropped)}
    return counts


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m edge_verify.training.datasets",
                                     description="Count the signatures of a dataset per split.")
    parser.add_argument("root", type=Path, help="dataset folder")
    parser.add_argument("--layout", choices=LAYOUTS, help="folder layout (default: detect)")
    args = parser.parse_args(argv)
    try:
        layout = args.layout or detect_layout(args.root)
        counts = split_counts(args.root, layout)
    except DatasetError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"{args.root} (layout {layout})")
    columns = ("writers", "genuine", "forged", "duplicates_removed")
    print(f"{'split':<6}" + "".join(f"  {c}" for c in columns))
    for split, row in counts.items():
        print(f"{split:<6}" + "".join(f"  {row[c]:>{len(c)}}" for c in columns))
    return 0


if __name__ == "__main__":
    sys.exit(main())
