# Serving speed and load tests; included by the Makefile (include tests/benchmarks/bench.mk).
#   make bench                          in-process bounds (PyTorch fp32, the .mar's runtime) vs TorchServe vs a
#                                       naive server, on $(SAMPLE); archive exports the int8 runtime model first
#   make bench BENCH_SECONDS=4 BENCH_ARGS="--photos 16 --warmup 3 --rounds 1"   runs end to end in a few minutes
#   make bench-runtimes                 the network alone in each candidate runtime (PyTorch, ONNX Runtime, OpenVINO;
#                                       fp32, bf16, int8), ms per image on one thread, on an archived MODEL_DIR
#   make bench-decode                   what decoding and resizing a sample photo costs, per decoder and scale
#   make loadtest USERS=32 SECONDS=60   locust headless against the local TorchServe, reports in var/loadtest/
# `make loadtest` uses the TorchServe of `make serve` when one answers on 127.0.0.1:8080-8082,
# else starts one the same way (run dir var/serve) and stops it afterwards;
# LOADTEST_ARGS=--free-ports always starts a private one on free ports instead.
# Both load the 2 CPUs fully: run them on a quiet machine (`make bench` prints what others took).

BENCH_SECONDS ?= 30
BENCH_ARGS ?=
USERS ?= 32
SECONDS ?= 60
LOADTEST_ARGS ?=

.PHONY: bench bench-runtimes bench-decode loadtest bench-training

# MODEL_DIR archived into a store of the benchmark's own, so the in-process bound and TorchServe run the same
# model and the .mar that `make serve` serves is left as it is.
BENCH_STORE := var/bench/model-store

bench: venv  ## in-process bound, TorchServe and a naive server on the sample photos (BENCH_SECONDS, MODEL_DIR)
	$(TRAIN) archive --model $(MODEL_DIR) --out $(BENCH_STORE)
	$(PY) -m tests.benchmarks.bench_serving --sample $(SAMPLE) --model $(MODEL_DIR) \
		--model-store $(BENCH_STORE) --seconds $(BENCH_SECONDS) $(BENCH_ARGS)

bench-runtimes: venv  ## the network alone per runtime and precision on one thread, ms per image (an archived MODEL_DIR)
	$(PY) -m tests.benchmarks.bench_runtimes --model $(MODEL_DIR) --sample $(SAMPLE)

bench-decode: venv  ## photo -> model input per way of decoding (Pillow draft then and now, simplejpeg), ms per photo
	$(PY) -m tests.benchmarks.bench_decode --sample $(SAMPLE)

# Load-tests the archived .mar (the one `make serve` serves); never archives or trains.
loadtest: venv  ## locust load test against the local TorchServe (USERS, SECONDS); reports in var/loadtest/
	@test -f $(MAR) || { echo "no $(MAR): archive a model first (make archive)" >&2; exit 1; }
	$(PY) -m tests.benchmarks.locustfile --users $(USERS) --seconds $(SECONDS) --sample $(SAMPLE) \
		--model-store $(dir $(MAR)) --out var/loadtest $(LOADTEST_ARGS)

bench-training: venv  ## training step and inference per candidate change: memory format, bf16, torch.compile, stem, depth (images/s)
	$(PY) -m tests.benchmarks.bench_training
