# Sweep 6 (nvidia-h200): QLoRA settings for ~300 steps after the CPU-affordable induction
# pre-training (multi-span repeats, 1,000 steps of 16 x 32 tokens, lr 1e-3).
set -u
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl >/dev/null 2>&1
export PYTHONPATH=/tmp/site:$PWD/libs PYTHONUNBUFFERED=1
R="timeout 300 python3 benchmarks/tiny_recipe.py --device cuda --threads 1 --every 50 data.source=.demo/gpu/dataset --base .demo/gpu/tiny-base --ind-kind multi --ind-lr 1e-3 --induction-steps 1000 --ind-batch 16 --ind-len 32 --steps 300"
run() { name=$1; shift; $R "$@" > $OUT/$name.log 2>&1 & }
run aug2_s0 --seed 0 optim.lr=3e-3 data.augment_copies=2
run aug2_s1 --seed 1 optim.lr=3e-3 data.augment_copies=2
run lr4_s0 --seed 0 optim.lr=4e-3
run lr2_s0 --seed 0 optim.lr=2e-3
run const_s0 --seed 0 optim.lr=3e-3 optim.schedule=constant
run minlr3_s0 --seed 0 optim.lr=3e-3 optim.min_lr_ratio=0.3
run r16_s0 --seed 0 optim.lr=3e-3 lora.r=16 lora.alpha=32
run ref_s2 --seed 2 optim.lr=3e-3
run aug2_minlr3_s0 --seed 0 optim.lr=3e-3 data.augment_copies=2 optim.min_lr_ratio=0.3
run indlr2_s0 --seed 0 optim.lr=3e-3 --ind-lr 2e-3
run aug2_s2 --seed 2 optim.lr=3e-3 data.augment_copies=2
run minlr3_s1 --seed 1 optim.lr=3e-3 optim.min_lr_ratio=0.3
wait
cd $OUT && for f in *.log; do echo "== $f"; grep -E "^step (150|200|250|300) |^induction step 1000 |Error|error" $f | sed 's/val teacher-forced //'; done > summary.txt; rm -f *.log; cat summary.txt
