"""(degraded, clean) file pairs in benchmark and fine-tuning folders, found the same way everywhere.

The benchmarks (``src.benchmarks``) and the real-pair training source (``src.dataset.PairFolder``)
both read their pairs from here, so a folder that scores also fine-tunes and vice versa.

Layouts are the declared rules in :data:`LAYOUTS`, not code paths: a rule names where the
degraded (``lq``) and the clean (``gt``) files live, a sub-folder (case-insensitive) or the root
itself, and, for a side that shares its folder with other files, the file name prefixes that
mark it. Exactly one rule must match a folder: none or several is a one-line
:class:`PairLayoutError`, so a half-renamed folder is never read the wrong way silently.

Files pair by their key, the path relative to their side's folder, lower-cased, without the
extension, without a ``rain-``/``rain_``/``norain-``/``norain_`` prefix and (degraded side, SR)
without an ``x{scale}`` suffix: ``rain-12.png`` pairs with ``norain-12.png``, ``babyx2.png`` with
``baby.png``, ``1.png`` with ``1.png``. Files left over are then paired by the last number in
their key when that number is unique on both sides of the same sub-folder, so ``rain-012.png``
pairs with ``norain-12.png`` and ``im_0001_lq.png`` with ``im_0001_gt.png``. For SR, a degraded
folder holding ``X{s}`` sub-folders (EDSR's ``LR_bicubic/X2``) is read from ``X{scale}``.
Whatever still has no partner is logged (one warning line with the count) and listed in
``PairList.skipped``; it never stops a run. Files of one side sharing a key (``a.png`` and
``a.jpg``) are all skipped rather than guessed.
"""
from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Iterator, List, NamedTuple, Optional, Sequence, Tuple, Union

from src.image_io import list_images

LOG = logging.getLogger(__name__)

PathLike = Union[str, Path]

_RAIN = ("rain-", "rain_")
_NORAIN = ("norain-", "norain_")
_NAME_PREFIX = re.compile(r"^(?:no)?rain[-_]", re.IGNORECASE)
_LAST_NUMBER = re.compile(r"(\d+)(?!.*\d)")
_SCALE_DIR = re.compile(r"^x(\d+)$", re.IGNORECASE)


class PairLayoutError(ValueError):
    """A folder with no paired layout, or one that several layouts match (one-line message)."""


class MissingScaleError(PairLayoutError):
    """The degraded folder is split by scale (``X2``, ``X4``...) but not for the scale asked."""


@dataclass(frozen=True)
class PairLayout:
    """One declared layout: the folder of each side ("" = the root) and its name prefixes.

    Prefixes are needed only where a side shares its folder with other files (the root of the
    PReNet layout, the side-by-side layout); a side with prefixes is read non-recursively.
    """

    name: str
    lq_dir: str
    gt_dir: str
    lq_prefixes: Tuple[str, ...] = ()
    gt_prefixes: Tuple[str, ...] = ()

    def describe(self) -> str:
        """Human form for errors, e.g. ``rainy/ + norain-N``."""
        def side(folder: str, prefixes: Tuple[str, ...]) -> str:
            where = f"{folder}/" if folder else ""
            return f"{where}{prefixes[0]}N" if prefixes else where
        return f"{side(self.lq_dir, self.lq_prefixes)} + {side(self.gt_dir, self.gt_prefixes)}"


# The accepted layouts. Order only decides how they are listed in messages.
LAYOUTS: Tuple[PairLayout, ...] = (
    PairLayout("rain/norain", "rain", "norain"),                 # Rain12
    PairLayout("rainy/norain", "rainy", "norain"),
    PairLayout("input/target", "input", "target"),
    PairLayout("LR/HR", "LR", "HR"),
    PairLayout("LR_bicubic/HR", "LR_bicubic", "HR"),             # EDSR benchmark download
    PairLayout("lq/gt", "lq", "gt"),
    PairLayout("low/high", "low", "high"),
    PairLayout("prenet", "rainy", "", gt_prefixes=_NORAIN),      # Rain100L: rainy/rain-N, norain-N in root
    PairLayout("side-by-side", "", "", _RAIN, _NORAIN),          # rain-N and norain-N in one folder
)


class Pair(NamedTuple):
    """A matched pair; ``name`` is the degraded file's relative stem without ``x{scale}``."""

    name: str
    lq: Path
    gt: Path


class Unpaired(NamedTuple):
    path: Path
    reason: str


@dataclass
class PairList:
    """What :func:`find_pairs` found: the layout, the two folders, sorted pairs, skipped files."""

    layout: str
    lq_dir: Path
    gt_dir: Path
    pairs: List[Pair] = field(default_factory=list)
    skipped: List[Unpaired] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.pairs)

    def __iter__(self) -> Iterator[Pair]:
        return iter(self.pairs)


class LayoutMatch(NamedTuple):
    layout: PairLayout
    lq_dir: Path
    gt_dir: Path


def _child_dir(root: Path, name: str) -> Optional[Path]:
    """The sub-folder called ``name`` in any letter case ("" is the root itself)."""
    if not name:
        return root
    found = [p for p in root.iterdir() if p.is_dir() and p.name.lower() == name.lower()]
    if len(found) > 1:
        raise PairLayoutError(f"{root}: folders {', '.join(sorted(p.name for p in found))} "
                              f"differ only in letter case")
    return found[0] if found else None


def _has_prefixed(folder: Path, prefixes: Tuple[str, ...]) -> bool:
    return any(p.name.lower().startswith(prefixes) for p in list_images(folder, recursive=False))


def _match(root: Path, layout: PairLayout) -> Optional[LayoutMatch]:
    lq, gt = _child_dir(root, layout.lq_dir), _child_dir(root, layout.gt_dir)
    if lq is None or gt is None:
        return None
    for folder, prefixes in ((lq, layout.lq_prefixes), (gt, layout.gt_prefixes)):
        if prefixes and not _has_prefixed(folder, prefixes):
            return None
    return LayoutMatch(layout, lq, gt)


def _contents(root: Path) -> str:
    dirs = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    shown = ", ".join(f"{d}/" for d in dirs[:6]) + (", ..." if len(dirs) > 6 else "")
    images = len(list_images(root, recursive=False))
    return f"found {shown or 'no sub-folder'} and {images} image(s) in the root"


def find_layout(root: PathLike, layouts: Sequence[PairLayout] = LAYOUTS) -> Optional[LayoutMatch]:
    """The one layout of ``root``, or None; several matches raise :class:`PairLayoutError`."""
    root = Path(root)
    if not root.is_dir():
        raise NotADirectoryError(f"folder not found: {root}")
    matches = [m for m in (_match(root, layout) for layout in layouts) if m is not None]
    if len(matches) > 1:
        raise PairLayoutError(
            f"{root}: ambiguous paired layout, it matches "
            f"{' and '.join(f'{m.layout.name} ({m.layout.describe()})' for m in matches)}; "
            f"remove or rename all but one")
    return matches[0] if matches else None


def has_pair_layout(root: PathLike) -> bool:
    """True when ``root`` holds exactly one paired layout (ambiguity raises, never guessed)."""
    return find_layout(root) is not None


def scale_dir(lq_dir: Path, scale: int) -> Path:
    """``lq_dir/X{scale}`` when ``lq_dir`` is split by scale (EDSR), else ``lq_dir`` itself."""
    if scale <= 1:
        return lq_dir
    by_scale = {int(m.group(1)): p for p in lq_dir.iterdir()
                if p.is_dir() and (m := _SCALE_DIR.match(p.name))}
    if not by_scale:
        return lq_dir
    if scale not in by_scale:
        raise MissingScaleError(
            f"{lq_dir}: no X{scale} sub-folder for scale {scale} "
            f"(has {', '.join(f'X{s}' for s in sorted(by_scale))})")
    return by_scale[scale]


def _key(path: Path, folder: Path, strip_scale: int = 0) -> Tuple[str, str]:
    """(pair key, pair name): relative stem without rain prefixes / ``x{scale}`` suffix."""
    rel = path.relative_to(folder).with_suffix("")
    stem = rel.name
    if strip_scale > 1 and stem.lower().endswith(f"x{strip_scale}"):
        stem = stem[: -len(f"x{strip_scale}")]
    name = (rel.parent / stem).as_posix()
    return (rel.parent / _NAME_PREFIX.sub("", stem)).as_posix().lower(), name


def _number_key(key: str) -> Optional[Tuple[str, int]]:
    parent, _, stem = key.rpartition("/")
    match = _LAST_NUMBER.search(stem)
    return (parent, int(match.group(1))) if match else None


def _side_files(folder: Path, prefixes: Tuple[str, ...]) -> List[Path]:
    if prefixes:
        return [p for p in list_images(folder, recursive=False) if p.name.lower().startswith(prefixes)]
    return list_images(folder, recursive=True)


def _by_key(files: List[Path], folder: Path, strip_scale: int, skipped: List[Unpaired]
            ) -> Dict[str, Tuple[Path, str]]:
    """Key -> (path, name); files sharing a key (``a.png`` and ``a.jpg``) are all skipped, not guessed."""
    found: Dict[str, List[Tuple[Path, str]]] = {}
    for path in files:
        key, name = _key(path, folder, strip_scale)
        found.setdefault(key, []).append((path, name))
    for key, same in found.items():
        if len(same) > 1:
            others = ", ".join(p.name for p, _ in same)
            skipped += [Unpaired(p, f"pairing key '{key}' is shared by {others}") for p, _ in same]
    return {key: same[0] for key, same in found.items() if len(same) == 1}


def _pair_by_number(lq: Dict[str, Tuple[Path, str]], gt: Dict[str, Tuple[Path, str]]
                    ) -> List[Tuple[str, str]]:
    """(lq key, gt key) of leftovers whose last number is unique on both sides."""
    def unique(keys) -> Dict[Tuple[str, int], str]:
        seen: Dict[Tuple[str, int], List[str]] = {}
        for key in keys:
            num = _number_key(key)
            if num is not None:
                seen.setdefault(num, []).append(key)
        return {num: ks[0] for num, ks in seen.items() if len(ks) == 1}
    lq_num, gt_num = unique(lq), unique(gt)
    return [(lq_num[num], gt_num[num]) for num in lq_num if num in gt_num]


def _log_skipped(root: Path, layout: str, skipped: List[Unpaired]) -> None:
    if not skipped:
        return
    names = ", ".join(u.path.name for u in skipped[:5]) + (", ..." if len(skipped) > 5 else "")
    LOG.warning("%s (%s layout): skipped %d unpaired file(s): %s", root, layout, len(skipped), names)
    for u in skipped:
        LOG.debug("skipped %s: %s", u.path, u.reason)


def find_pairs(root: PathLike, scale: int = 1, layouts: Sequence[PairLayout] = LAYOUTS) -> PairList:
    """The (name, lq, gt) pairs of a paired folder, sorted by name; unpaired files skipped.

    Raises :class:`PairLayoutError` when no layout or several match ``root``, and
    :class:`MissingScaleError` when the degraded side has ``X{s}`` folders but not ``X{scale}``.
    """
    root = Path(root)
    match = find_layout(root, layouts)
    if match is None:
        raise PairLayoutError(
            f"{root}: no paired layout; looked for "
            f"{', '.join(layout.describe() for layout in layouts)} ({_contents(root)})")
    layout = match.layout
    lq_dir, gt_dir = scale_dir(match.lq_dir, int(scale)), match.gt_dir
    skipped: List[Unpaired] = []
    shared: Dict[Path, Tuple[str, ...]] = {}  # folder of a prefixed side -> all prefixes read there
    for folder, prefixes in ((lq_dir, layout.lq_prefixes), (gt_dir, layout.gt_prefixes)):
        if prefixes:
            shared[folder] = shared.get(folder, ()) + prefixes
    for folder, prefixes in shared.items():  # e.g. a stray image next to Rain100L's norain-N
        skipped += [Unpaired(p, f"name starts with none of {', '.join(prefixes)}")
                    for p in list_images(folder, recursive=False) if not p.name.lower().startswith(prefixes)]
    lq = _by_key(_side_files(lq_dir, layout.lq_prefixes), lq_dir, int(scale), skipped)
    gt = _by_key(_side_files(gt_dir, layout.gt_prefixes), gt_dir, 0, skipped)
    matched = [(k, k) for k in lq if k in gt]
    left_lq = {k: v for k, v in lq.items() if k not in gt}
    left_gt = {k: v for k, v in gt.items() if k not in lq}
    matched += _pair_by_number(left_lq, left_gt)
    pairs = [Pair(lq[a][1], lq[a][0], gt[b][0]) for a, b in matched]
    used_lq, used_gt = {a for a, _ in matched}, {b for _, b in matched}
    skipped += [Unpaired(p, f"no clean file for '{k}' in {gt_dir}") for k, (p, _) in lq.items()
                if k not in used_lq]
    skipped += [Unpaired(p, f"no degraded file for '{k}' in {lq_dir}") for k, (p, _) in gt.items()
                if k not in used_gt]
    pairs.sort(key=lambda pair: pair.name)
    skipped.sort(key=lambda u: str(u.path))
    _log_skipped(root, layout.name, skipped)
    LOG.debug("%s: %s layout, %d pairs (%s -> %s)", root, layout.name, len(pairs), lq_dir, gt_dir)
    return PairList(layout.name, lq_dir, gt_dir, pairs, skipped)


__all__ = [
    "PairLayout", "LAYOUTS", "Pair", "Unpaired", "PairList", "LayoutMatch", "PairLayoutError",
    "MissingScaleError", "find_layout", "find_pairs", "has_pair_layout", "scale_dir",
]
