# Sweep 5 (nvidia-h200): shorter/cheaper induction pre-training (CPU cost ~ batch x length x steps).
set -u
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl >/dev/null 2>&1
export PYTHONPATH=/tmp/site:$PWD/libs PYTHONUNBUFFERED=1
R="timeout 400 python3 benchmarks/tiny_recipe.py --device cuda --threads 1 --every 50 data.source=.demo/gpu/dataset --base .demo/gpu/tiny-base optim.lr=3e-3 --ind-kind multi --ind-lr 1e-3"
run() { name=$1; shift; $R "$@" > $OUT/$name.log 2>&1 & }
run b16L64_n1000_q300_s1 --steps 300 --seed 1 --induction-steps 1000 --ind-batch 16 --ind-len 64
run b16L64_n1000_q300_s2 --steps 300 --seed 2 --induction-steps 1000 --ind-batch 16 --ind-len 64
run b16L64_n1000_q250_s0 --steps 250 --seed 0 --induction-steps 1000 --ind-batch 16 --ind-len 64
run b16L64_n1000_qb8x400_s0 --steps 400 --batch 8 --seed 0 --induction-steps 1000 --ind-batch 16 --ind-len 64
run b16L64_n600_q300_s0 --steps 300 --seed 0 --induction-steps 600 --ind-batch 16 --ind-len 64
run b16L32_n1000_q300_s0 --steps 300 --seed 0 --induction-steps 1000 --ind-batch 16 --ind-len 32
run b32L32_n1000_q300_s0 --steps 300 --seed 0 --induction-steps 1000 --ind-batch 32 --ind-len 32
run b16L32_n600_q300_s0 --steps 300 --seed 0 --induction-steps 600 --ind-batch 16 --ind-len 32
run b32L16_n1000_q300_s0 --steps 300 --seed 0 --induction-steps 1000 --ind-batch 32 --ind-len 16
run b16L32_n1000_qb8x400_s0 --steps 400 --batch 8 --seed 0 --induction-steps 1000 --ind-batch 16 --ind-len 32
run b16L32_n1000_q300_s1 --steps 300 --seed 1 --induction-steps 1000 --ind-batch 16 --ind-len 32
run b32L32_n600_q300_s0 --steps 300 --seed 0 --induction-steps 600 --ind-batch 32 --ind-len 32
wait
cd $OUT && for f in *.log; do echo "== $f"; grep -E "^step (150|200|250|300|350|400) |^induction step [0-9]*(000|600) |Error|error" $f | sed 's/val teacher-forced //'; done > summary.txt; rm -f *.log; cat summary.txt
