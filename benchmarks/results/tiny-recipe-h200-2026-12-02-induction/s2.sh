# Sweep 2 (nvidia-h200): model shape, RoPE base, induction pre-training; value-token accuracy.
set -u
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl >/dev/null 2>&1
export PYTHONPATH=/tmp/site:$PWD/libs PYTHONUNBUFFERED=1
R="timeout 500 python3 benchmarks/tiny_recipe.py --device cuda --threads 1 --every 100 data.source=.demo/gpu/dataset --base .demo/gpu/tiny-base optim.lr=3e-3 --steps 600"
run() { name=$1; shift; $R "$@" > $OUT/$name.log 2>&1 & }
run ref_s0 --seed 0
run h512_s0 --seed 0 --shape hidden_size=512,num_heads=8,num_kv_heads=4,intermediate_size=1408
run L8_s0 --seed 0 --shape num_layers=8
run rope500_s0 --seed 0 --shape rope_theta=500
run rope100_s0 --seed 0 --shape rope_theta=100
run ind300_s0 --seed 0 --induction-steps 300
run ind1000_s0 --seed 0 --induction-steps 1000
run ind300_s1 --seed 1 --induction-steps 300
run ind300_aug2_s0 --seed 0 --induction-steps 300 data.augment_copies=2
run ind300_rope500_s0 --seed 0 --induction-steps 300 --shape rope_theta=500
run full_s0 --seed 0 model.mode=full lora.modules_to_save=[] optim.lr=2e-3
run h512_rope500_s0 --seed 0 --shape hidden_size=512,num_heads=8,num_kv_heads=4,intermediate_size=1408,rope_theta=500
wait
cd $OUT && for f in *.log; do echo "== $f"; grep -E "^step|^induction step (100|300|1000) |Error|error" $f | sed 's/val teacher-forced //'; done > summary.txt; rm -f *.log; cat summary.txt
