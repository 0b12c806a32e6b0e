# Sweep 7 (nvidia-h200): how many QLoRA steps after the demo's induction pre-training
# (multi-span repeats, 1,000 steps of 16 x 32 tokens, lr 1e-3) reach whole-SQL accuracy >= 0.6, now that the
# CPU (AVX-512 BF16) affords more steps; and a few cheap stronger pre-trainings.
set -u
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl >/dev/null 2>&1
export PYTHONPATH=/tmp/site:$PWD/libs PYTHONUNBUFFERED=1
R="timeout 420 python3 benchmarks/tiny_recipe.py --device cuda --threads 1 --every 50 data.source=.demo/gpu/dataset --base .demo/gpu/tiny-base --ind-kind multi --ind-lr 1e-3 --ind-batch 16 --ind-len 32 optim.lr=3e-3 optim.min_lr_ratio=0.3"
run() { name=$1; shift; $R "$@" > $OUT/$name.log 2>&1 & }
run q400_s0 --seed 0 --induction-steps 1000 --steps 400
run q400_s1 --seed 1 --induction-steps 1000 --steps 400
run q500_s0 --seed 0 --induction-steps 1000 --steps 500
run q500_s1 --seed 1 --induction-steps 1000 --steps 500
run q600_s0 --seed 0 --induction-steps 1000 --steps 600
run q600_s1 --seed 1 --induction-steps 1000 --steps 600
run q450_s2 --seed 2 --induction-steps 1000 --steps 450
run ind2000_q400_s0 --seed 0 --induction-steps 2000 --steps 400
run ind32x32_q400_s0 --seed 0 --induction-steps 1000 --ind-batch 32 --steps 400
run ind16x64_q400_s0 --seed 0 --induction-steps 1000 --ind-len 64 --steps 400
run b8_q800_s0 --seed 0 --induction-steps 1000 --batch 8 --steps 800
run b24_q400_s0 --seed 0 --induction-steps 1000 --batch 24 --steps 400
wait
cd $OUT && for f in *.log; do echo "== $f"; grep -E "^step [0-9]+ |^induction step (1000|2000) |Error|error" $f | grep -E "induction|step (200|250|300|350|400|450|500|550|600|700|800) |rror" | sed 's/val teacher-forced //'; done > summary.txt; rm -f *.log; cat summary.txt
