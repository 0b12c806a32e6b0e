# Sweep 4 (nvidia-h200): the cheapest induction pre-training (multi-span repeats, lr 1e-3) that still
# brings copying within ~300 QLoRA steps of 16 examples.
set -u
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl >/dev/null 2>&1
export PYTHONPATH=/tmp/site:$PWD/libs PYTHONUNBUFFERED=1
R="timeout 530 python3 benchmarks/tiny_recipe.py --device cuda --threads 1 --every 50 data.source=.demo/gpu/dataset --base .demo/gpu/tiny-base optim.lr=3e-3 --ind-kind multi --ind-lr 1e-3"
run() { name=$1; shift; $R "$@" > $OUT/$name.log 2>&1 & }
run b16L128_n1000_q300_s0 --steps 300 --seed 0 --induction-steps 1000 --ind-batch 16 --ind-len 128
run b16L128_n1000_q300_s1 --steps 300 --seed 1 --induction-steps 1000 --ind-batch 16 --ind-len 128
run b8L128_n1000_q300_s0 --steps 300 --seed 0 --induction-steps 1000 --ind-batch 8 --ind-len 128
run b8L64_n1000_q300_s0 --steps 300 --seed 0 --induction-steps 1000 --ind-batch 8 --ind-len 64
run b16L64_n1000_q300_s0 --steps 300 --seed 0 --induction-steps 1000 --ind-batch 16 --ind-len 64
run b4L128_n1000_q300_s0 --steps 300 --seed 0 --induction-steps 1000 --ind-batch 4 --ind-len 128
run b16L128_n500_q300_s0 --steps 300 --seed 0 --induction-steps 500 --ind-batch 16 --ind-len 128
run b8L128_n500_q300_s0 --steps 300 --seed 0 --induction-steps 500 --ind-batch 8 --ind-len 128
run b16L128_n1000_lr2e3_q300_s0 --steps 300 --seed 0 --induction-steps 1000 --ind-batch 16 --ind-len 128 --ind-lr 2e-3
run b16L128_n1000_q250_s0 --steps 250 --seed 0 --induction-steps 1000 --ind-batch 16 --ind-len 128
run b16L128_n1000_qb8x500_s0 --steps 500 --batch 8 --seed 0 --induction-steps 1000 --ind-batch 16 --ind-len 128
run b8L64_n2000_q300_s0 --steps 300 --seed 0 --induction-steps 2000 --ind-batch 8 --ind-len 64
wait
cd $OUT && for f in *.log; do echo "== $f"; grep -E "^step|^induction step [0-9]*(000|500) |Error|error" $f | sed 's/val teacher-forced //'; done > summary.txt; rm -f *.log; cat summary.txt
