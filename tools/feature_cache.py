"""List the image-feature cache, or remove the files no run has used for some days.

    .venv/bin/python tools/feature_cache.py                           # list .cache/features (or $LMPT_CACHE_DIR)
    .venv/bin/python tools/feature_cache.py --cache_dir /data/cache   # another cache folder
    .venv/bin/python tools/feature_cache.py --unused_days 30 --dry_run  # what a prune would remove
    .venv/bin/python tools/feature_cache.py --unused_days 30          # remove files unused for 30 days

A cache file's last use is when a run last wrote or read it. A removed file costs only time: the next run
that needs it encodes its images again. Temporary files of writes killed a day ago or more are removed too.
Only the cache's own files (``<32 hex digits>.pt``) are listed or removed.
"""
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from lmpt.cache_files import cache_files, remove_files, stale_temp_files, unused_for  # noqa: E402
from lmpt.cli import printable_output, script_parser  # noqa: E402
from lmpt.features import DEFAULT_CACHE_DIR  # noqa: E402


def _size(n):
    return f"{n / 2 ** 20:.1f} MiB" if n >= 2 ** 20 else f"{n / 2 ** 10:.1f} KiB"


def _bytes(path):
    try:
        return path.stat().st_size
    except OSError:  # removed meanwhile
        return 0


def _describe(about):
    if about.get("unreadable"):
        return "unreadable (a run that needs it rebuilds it)"
    if not about:
        return "(written before cache files described themselves)"
    what = about.get("what", "").replace("encoding ", "")
    checkpoint = Path(about.get("checkpoint", "?")).name
    return (f"{what}: {about.get('images')} images of {about.get('image_folder')}, {checkpoint}"
            f" at {about.get('resolution')} px, {about.get('precision')}, {about.get('views')} view(s)")


def main(argv=None):
    p = script_parser(__doc__)
    p.add_argument("--cache_dir", type=Path, default=DEFAULT_CACHE_DIR,
                   help="the cache folder (default: $LMPT_CACHE_DIR, else the repository's .cache/features)")
    p.add_argument("--unused_days", type=float, default=None, metavar="DAYS",
                   help="remove the cache files no run has written or read for more than DAYS days")
    p.add_argument("--dry_run", action="store_true", help="with --unused_days: list what would be removed")
    args = p.parse_args(argv)
    if args.unused_days is not None and args.unused_days < 0:
        p.error(f"--unused_days must be >= 0, got {args.unused_days}")
    if args.dry_run and args.unused_days is None:
        p.error("--dry_run goes with --unused_days")
    if args.cache_dir.exists() and not args.cache_dir.is_dir():
        p.error(f"--cache_dir {args.cache_dir} is not a folder")

    files = cache_files(args.cache_dir)
    now = time.time()
    print(f"{args.cache_dir}: {len(files)} cache file(s), {_size(sum(f.bytes for f in files))}")
    for f in files:
        print(f"  {f.path.name}  {_size(f.bytes):>10}  last used {(now - f.last_used) / 86400:6.1f} days ago  "
              f"{_describe(f.about)}")
    if args.unused_days is None:
        return 0
    old, temps = unused_for(files, args.unused_days, now), stale_temp_files(args.cache_dir, now)
    paths = [f.path for f in old] + temps
    if args.dry_run:
        print(f"would remove {len(old)} cache file(s) unused for more than {args.unused_days:g} days and "
              f"{len(temps)} temporary file(s) of killed writes, {_size(sum(_bytes(path) for path in paths))}")
        for path in paths:
            print(f"  {path.name}")
        return 0
    freed = remove_files(paths)
    print(f"removed {len(old)} cache file(s) unused for more than {args.unused_days:g} days and {len(temps)} "
          f"temporary file(s) of killed writes: {_size(freed)} freed")
    return 0


if __name__ == "__main__":
    printable_output()
    sys.exit(main())
