# Sweep 1 (nvidia-h200): does literal-swap augmentation bring copying forward?
set -u
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl >/dev/null 2>&1
export PYTHONPATH=/tmp/site:$PWD/libs PYTHONUNBUFFERED=1
R="timeout 540 python3 benchmarks/tiny_recipe.py --device cuda --threads 1 --every 50 data.source=.demo/gpu/dataset --base .demo/gpu/tiny-base optim.lr=3e-3"
run() { name=$1; shift; $R "$@" > $OUT/$name.log 2>&1 & }
run base_s0 --steps 600 --seed 0
run adamw_s0 --steps 600 --seed 0 optim.optimizer=adamw
for s in 0 1 2; do run aug2_s$s --steps 600 --seed $s data.augment_copies=2; done
for s in 0 1; do run aug5_s$s --steps 600 --seed $s data.augment_copies=5; done
run aug2_adamw_s0 --steps 600 --seed 0 data.augment_copies=2 optim.optimizer=adamw
run aug2_n300_s0 --steps 300 --seed 0 data.augment_copies=2
run aug2_lr2_s0 --steps 600 --seed 0 data.augment_copies=2 optim.lr=2e-3
run aug2_full_s0 --steps 600 --seed 0 data.augment_copies=2 model.mode=full lora.modules_to_save=[] optim.lr=1e-3
run aug2_b8_s0 --steps 1200 --batch 8 --seed 0 data.augment_copies=2
wait
cd $OUT && for f in *.log; do echo "== $f"; grep -E "^step|Error|error" $f | sed 's/val teacher-forced //'; done > summary.txt; cat summary.txt
