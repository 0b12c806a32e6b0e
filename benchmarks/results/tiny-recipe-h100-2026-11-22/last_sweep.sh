set -u
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl >/dev/null 2>&1
export PYTHONPATH=/tmp/site:$PWD/libs
R="timeout 560 python3 benchmarks/tiny_recipe.py --device cuda --threads 1 --every 100 data.source=.demo/gpu-dataset --base .demo/tiny-new optim.lr=3e-3"
run() { name=$1; shift; $R "$@" > $OUT/$name.log 2>&1 & }
for s in 0 1 2 3; do run n712_s$s --steps 712 --seed $s; done
for s in 0 1; do run n1500_s$s --steps 1500 --seed $s; done
for s in 0 1; do run n2500_s$s --steps 2500 --every 250 --seed $s; done
wait
cd $OUT && for f in *.log; do echo "== $f"; grep -E "^step|Error" $f | sed 's/val teacher-forced //'; done > summary.txt; rm -f *.log; cat summary.txt
