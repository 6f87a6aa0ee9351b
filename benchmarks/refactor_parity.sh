#!/usr/bin/env bash
# Behaviour parity across a refactor: run once on the old commit and once on the new one with
# the same BASE folder, then diff BASE/<tag>/hashes.txt (equal = bit-identical behaviour).
#   bash benchmarks/refactor_parity.sh before /tmp/parity   (on the old commit)
#   bash benchmarks/refactor_parity.sh after  /tmp/parity   (on the new commit)
#   diff /tmp/parity/before/hashes.txt /tmp/parity/after/hashes.txt
# 1) deterministic tiny training on MSD Hippocampus fold 0 (seed 3, --deterministic) -> weight hash
# 2) fixed checkpoints made by the first run (BASE/fixed_run: hippocampus; BASE/ct_run: the tests'
#    tiny CT phantom run) -> predictions on the 42 hippocampus validation cases (plain; mirror
#    TTA with probabilities) and on two CT phantoms (plain; CRF with probabilities) -> hashes of
#    every output's voxels and affine
# 3) bundle export of the fixed run -> bundle prediction vs run prediction, voxel for voxel
# Needs ../shared/data/msd_hippocampus and the .venv of `make venv`; about 90 s on 2 cores.
set -euo pipefail
TAG=$1
BASE=${2:-/tmp/medseg_parity}
cd "$(dirname "$0")/.."
B=$PWD/.venv/bin
DATA=$(cd .. && pwd)/shared/data/msd_hippocampus
OUT=$BASE/$TAG; rm -rf $OUT; mkdir -p $OUT
cat > $OUT/tiny.yaml <<'Y'
plans: {channels: [4, 8, 16], patch_size: [24, 32, 24]}
train: {iterations_per_epoch: 4, val_every: 1, postprocess_decision: true, num_workers: 0}
Y
$B/medseg train --manifest data_manifests/msd_hippocampus.json --data-root $DATA \
  --out $OUT/run --fold 0 --folds 5 --epochs 2 --seed 3 --deterministic --device cpu \
  --config $OUT/tiny.yaml > $OUT/train.log 2>&1
$B/python - <<PY >> $OUT/hashes.txt
import torch, hashlib
s = torch.load("$OUT/run/fold_0/checkpoint_last.pt", weights_only=True)
h = hashlib.sha256()
for k, v in sorted(s["model"].items()):
    h.update(k.encode()); h.update(v.numpy().tobytes())
print("train_weights", h.hexdigest())
PY
for f in plans.json fingerprint.json splits.json; do echo "run/$f $(sha256sum < $OUT/run/$f)" >> $OUT/hashes.txt; done
$B/python -c "
import json, hashlib
d = json.load(open('$OUT/run/postprocessing.json'))
d['report'] = {k: v for k, v in d['report'].items() if not k.endswith('_seconds')}  # timings vary
print('run/postprocessing.json', hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest())
" >> $OUT/hashes.txt
[ -d $BASE/fixed_run ] || cp -r $OUT/run $BASE/fixed_run
if [ ! -d $BASE/ct_run ]; then
  (cd tests && $B/python -c "
from pathlib import Path; from tiny_run import make_tiny_run; make_tiny_run(Path('$BASE/ct_run'))
import json; json.dump({'1': {'fill_holes': True, 'largest_component': True}}, open('$BASE/ct_run/unused.json','w'))")
fi
if [ ! -d $BASE/ct_in ]; then
  mkdir -p $BASE/ct_in; $B/python -c "
from pathlib import Path
from medseg.data.synthetic import make_ct_phantom
from medseg.io.nifti import write_nifti
for s in (5, 6):
    img, lab = make_ct_phantom((40, 36, 20), (1.5, 1.5, 3.0), seed=s)
    write_nifti(img.array, img.affine, Path('$BASE/ct_in/ph%d.nii.gz' % s))
"
fi
mkdir -p $OUT/hipp_in
$B/python - <<PY
import json, os
sp = json.load(open("$BASE/fixed_run/splits.json"))
for c in sp[0]["val"]:
    os.symlink(f"$DATA/imagesTr/{c}.nii.gz", f"$OUT/hipp_in/{c}.nii.gz")
PY
$B/medseg predict --model $BASE/fixed_run --input $OUT/hipp_in --output $OUT/hipp_pred --device cpu > $OUT/p1.log 2>&1
$B/medseg predict --model $BASE/fixed_run --input $OUT/hipp_in --output $OUT/hipp_pred_tta --device cpu --tta --save-probabilities > $OUT/p2.log 2>&1
$B/medseg predict --model $BASE/ct_run --input $BASE/ct_in --output $OUT/ct_pred --device cpu > $OUT/p3.log 2>&1
$B/medseg predict --model $BASE/ct_run --input $BASE/ct_in --output $OUT/ct_pred_crf --device cpu --crf --save-probabilities > $OUT/p4.log 2>&1
$B/medseg export-bundle $BASE/fixed_run $OUT/bundle > $OUT/b.log 2>&1
$B/medseg predict --model $OUT/bundle --input $OUT/hipp_in --output $OUT/hipp_pred_bundle --device cpu > $OUT/p5.log 2>&1
$B/python - <<PY >> $OUT/hashes.txt
import glob, hashlib, os
import nibabel as nib, numpy as np
def h(path):
    img = nib.load(path)
    return hashlib.sha256(np.asarray(img.dataobj).tobytes() + img.affine.tobytes()).hexdigest()[:16]
for d in ("hipp_pred", "hipp_pred_tta", "ct_pred", "ct_pred_crf", "hipp_pred_bundle"):
    files = sorted(glob.glob(f"$OUT/{d}/*.nii.gz"))
    agg = hashlib.sha256("".join(os.path.basename(f) + h(f) for f in files).encode()).hexdigest()
    print(d, len(files), agg)
a = sorted(glob.glob("$OUT/hipp_pred/*.nii.gz")); b = sorted(glob.glob("$OUT/hipp_pred_bundle/*.nii.gz"))
same = all(np.array_equal(np.asarray(nib.load(x).dataobj), np.asarray(nib.load(y).dataobj)) for x, y in zip(a, b))
print("bundle_parity", len(a) == len(b) and same)
PY
cat $OUT/hashes.txt
