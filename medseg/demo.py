"""The built-in demo: synthetic CT cohort -> train -> predict (NIfTI + DICOM) -> evaluate -> bundle.

Run with ``make demo`` or ``python -m medseg.demo --out demo_output``. Every step is the
``medseg`` command a user would type (printed before it runs), executed in-process through
:func:`medseg.cli.main`. Offline, about five minutes on 2 CPU cores. When the real data
folder ``../shared/data`` sits beside the repository, the real CT DICOM series is also
described and converted to NIfTI.
"""

from __future__ import annotations

import argparse
import logging
import shlex
import shutil
import sys
import time
from pathlib import Path

from medseg.cli import main as medseg_main
from medseg.errors import MedsegError
from medseg.io.atomic import atomic_copy, atomic_write_text

logger = logging.getLogger("medseg.demo")

MARKER = ".medseg-demo"
REAL_CT = (
    Path(__file__).resolve().parents[2]
    / "shared"
    / "data"
    / "dicom"
    / "ct_abdomen_siemens_20slices"
)

# A small model and patch so the demo trains in minutes on 2 CPU cores; real cohorts use the
# automatically planned defaults (see README, "Training on your own cohort").
DEMO_CONFIG = """\
# medseg demo training config (every key is documented in README, "Configuration")
plans:
  patch_size: [48, 48, 32]
  batch_size: 2
  channels: [8, 16, 32, 64]
train:
  iterations_per_epoch: 25
  val_every: 2
  learning_rate: 0.003
"""


def run(args: list[str]) -> None:
    """Print and run one ``medseg`` command; stop the demo if it fails."""
    line = "medseg " + " ".join(shlex.quote(a) for a in args)
    logger.info("\n$ %s", line)
    start = time.perf_counter()
    code = medseg_main(args)
    if code != 0:
        raise MedsegError(f"demo step failed with exit code {code}: {line}")
    logger.info("  (%.1f s)", time.perf_counter() - start)


def prepare_output(out: Path, force: bool) -> None:
    """Create ``out``; replace a previous demo output only with ``force``."""
    if out.exists() and any(out.iterdir()):
        if not force:
            raise MedsegError("output folder is not empty (use --force to replace a demo run)", out)
        if not (out / MARKER).exists():
            raise MedsegError("refusing to delete a folder the demo did not create", out)
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / MARKER, "created by python -m medseg.demo\n")


def assemble_scans(test_root: Path, scans: Path) -> None:
    """A scan folder as users have them: NIfTI files next to a DICOM series folder."""
    scans.mkdir()
    shutil.copytree(test_root / "dicom" / "phantom_000", scans / "phantom_000")
    for image in sorted((test_root / "imagesTr").glob("*.nii.gz")):
        if not image.name.startswith("phantom_000"):
            atomic_copy(image, scans / image.name)


def demo(out: Path, *, minutes: float, force: bool) -> None:
    """Run every step of the demo into ``out``."""
    prepare_output(out, force)
    data, run_dir = out / "data", out / "run"
    atomic_write_text(out / "demo_train.yaml", DEMO_CONFIG)
    run(["synth-ct", str(data / "train"), "--cases", "10", "--seed", "0"])
    run(["synth-ct", str(data / "test"), "--cases", "3", "--seed", "1", "--dicom", "1"])
    manifest = data / "train" / "dataset.json"
    run(["validate-manifest", str(manifest), "--data-root", str(data / "train")])
    run([
        "train", "--manifest", str(manifest), "--data-root", str(data / "train"),
        "--out", str(run_dir), "--config", str(out / "demo_train.yaml"),
        "--fold", "0", "--folds", "5", "--time-limit", str(minutes), "--seed", "0",
    ])  # fmt: skip
    assemble_scans(data / "test", out / "scans")
    run(["predict", "--model", str(run_dir), "--input", str(out / "scans"),
         "--output", str(out / "masks")])  # fmt: skip
    run([
        "evaluate", "--pred", str(out / "masks"), "--manifest", str(data / "test" / "dataset.json"),
        "--data-root", str(data / "test"), "--lesion-labels", "5", "--out", str(out / "report"),
    ])  # fmt: skip
    run(["export-bundle", str(run_dir), str(out / "bundle"), "--name", "demo_phantom_ct"])
    if REAL_CT.is_dir():
        run(["info", str(REAL_CT)])
        run(["convert", str(REAL_CT), str(out / "real_ct_abdomen.nii.gz")])
    logger.info(
        "\nDemo finished. Outputs in %s:\n"
        "  run/            trained model (plans, checkpoints, logs, post-processing choice)\n"
        "  masks/          predicted masks (NIfTI + JSON sidecars; phantom_000 came from DICOM)\n"
        "  report/         metrics.csv, summary.json, report.html with overlay images\n"
        "  bundle/         MONAI bundle: python -m monai.bundle run --config_file "
        "%s/bundle/configs/inference.json --dataset_dir %s/scans --output_dir OUT",
        out,
        out,
        out,
    )


def main(argv: list[str] | None = None) -> int:
    """Command-line entry: ``python -m medseg.demo [--out DIR] [--minutes M] [--force]``."""
    parser = argparse.ArgumentParser(prog="python -m medseg.demo", description=__doc__)
    parser.add_argument("--out", type=Path, default=Path("demo_output"), help="output folder")
    parser.add_argument("--minutes", type=float, default=2.5, help="training time budget")
    parser.add_argument("--force", action="store_true", help="replace a previous demo output")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        demo(args.out, minutes=args.minutes, force=args.force)
    except MedsegError as exc:
        logger.error("error: %s", exc)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
