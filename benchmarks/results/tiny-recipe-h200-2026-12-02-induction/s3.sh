# Sweep 3 (nvidia-h200): which induction pre-training is cheapest, then 400 QLoRA steps.
set -u
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl >/dev/null 2>&1
export PYTHONPATH=/tmp/site:$PWD/libs PYTHONUNBUFFERED=1
R="timeout 530 python3 benchmarks/tiny_recipe.py --device cuda --threads 1 --every 50 data.source=.demo/gpu/dataset --base .demo/gpu/tiny-base optim.lr=3e-3 --steps 400"
run() { name=$1; shift; $R "$@" > $OUT/$name.log 2>&1 & }
run pair_b32L256_1e3_n1000_s0 --seed 0 --induction-steps 1000
run pair_b32L256_1e3_n1000_s1 --seed 1 --induction-steps 1000
run multi_b16L128_3e3_n500_s0 --seed 0 --induction-steps 500 --ind-kind multi --ind-batch 16 --ind-len 128 --ind-lr 3e-3
run multi_b16L128_3e3_n1000_s0 --seed 0 --induction-steps 1000 --ind-kind multi --ind-batch 16 --ind-len 128 --ind-lr 3e-3
run multi_b16L128_3e3_n1000_s1 --seed 1 --induction-steps 1000 --ind-kind multi --ind-batch 16 --ind-len 128 --ind-lr 3e-3
run multi_b16L128_1e3_n1000_s0 --seed 0 --induction-steps 1000 --ind-kind multi --ind-batch 16 --ind-len 128 --ind-lr 1e-3
run multi_b16L128_5e3_n1000_s0 --seed 0 --induction-steps 1000 --ind-kind multi --ind-batch 16 --ind-len 128 --ind-lr 5e-3
run multi_b32L128_3e3_n500_s0 --seed 0 --induction-steps 500 --ind-kind multi --ind-batch 32 --ind-len 128 --ind-lr 3e-3
run multi_b8L128_3e3_n1000_s0 --seed 0 --induction-steps 1000 --ind-kind multi --ind-batch 8 --ind-len 128 --ind-lr 3e-3
run multi_b16L64_3e3_n1000_s0 --seed 0 --induction-steps 1000 --ind-kind multi --ind-batch 16 --ind-len 64 --ind-lr 3e-3
run pair_b16L128_3e3_n1000_s0 --seed 0 --induction-steps 1000 --ind-batch 16 --ind-len 128 --ind-lr 3e-3
run multi_b16L128_3e3_n2000_s0 --seed 0 --induction-steps 2000 --ind-kind multi --ind-batch 16 --ind-len 128 --ind-lr 3e-3
wait
cd $OUT && for f in *.log; do echo "== $f"; grep -E "^step|^induction step [0-9]*(00|50) |Error|error" $f | sed 's/val teacher-forced //'; done > summary.txt; rm -f *.log; cat summary.txt
