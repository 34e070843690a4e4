"""Generate the embedded synthetic long-tailed benchmark (synth-lt) into <data_root>/synth/.

    .venv/bin/python tools/make_synthetic.py                  # data/synth, seed 0, unless already there
    .venv/bin/python tools/make_synthetic.py --force --seed 1
    .venv/bin/python tools/make_synthetic.py --corpus 2000    # also save a corpus sample to data/corpus/

Prints the per-class training / test counts and the head / medium / tail groups.
"""
import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from lmpt.metrics import class_group  # noqa: E402
from lmpt.synthetic import (benchmark_is_complete, ensure_benchmark, generate_benchmark, generate_corpus,  # noqa: E402
                            generation_locked)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                allow_abbrev=False)
    p.add_argument("--data_root", type=Path, default=ROOT / "data", help="the benchmark goes to <data_root>/synth")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--n_train", type=int, default=None, help="training images (default 1200)")
    p.add_argument("--n_test", type=int, default=None, help="test images (default 1200)")
    p.add_argument("--force", action="store_true", help="regenerate even if a complete benchmark is there")
    p.add_argument("--corpus", type=int, default=0, metavar="N",
                   help="also save N images of the pretraining corpus to <data_root>/corpus/")
    args = p.parse_args(argv)

    from lmpt.data import load_dataset

    out_dir = args.data_root / "synth"
    t0 = time.time()
    if args.force:  # after another process generating it, as ensure_benchmark waits
        with generation_locked(out_dir):
            generate_benchmark(out_dir, args.seed, args.n_train, args.n_test)
    else:
        cached = benchmark_is_complete(out_dir, args.seed, args.n_train, args.n_test)
        ensure_benchmark(args.data_root, args.seed, args.n_train, args.n_test)
        if cached:
            print(f"{out_dir}: already complete for these settings (use --force to regenerate)")
    print(f"benchmark ready in {out_dir} ({time.time() - t0:.1f}s)")

    data = load_dataset("synth-lt", args.data_root)
    train, test = data.train_labels.sum(0).astype(int), data.test_labels.sum(0).astype(int)
    print(f"{len(data.train_paths)} train / {len(data.test_paths)} test images; "
          f"labels per image {data.train_labels.sum(1).mean():.2f} / {data.test_labels.sum(1).mean():.2f}")
    print(f"{'id':>3} {'class':<12} {'train':>6} {'test':>6}  group")
    for i in sorted(range(data.num_classes), key=lambda i: -train[i]):
        print(f"{i:>3} {data.class_names[i]:<12} {train[i]:>6} {test[i]:>6}  {class_group(train[i])}")
    groups = [class_group(c) for c in train]
    print("classes per group: " + ", ".join(f"{g} {groups.count(g)}" for g in ("head", "medium", "tail")))

    if args.corpus:
        t0 = time.time()
        path = generate_corpus(args.data_root / "corpus", args.corpus, args.seed)
        print(f"corpus sample of {args.corpus} images in {path} ({time.time() - t0:.1f}s)")


if __name__ == "__main__":
    main()
