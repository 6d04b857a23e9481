# tsc-snn: every target creates the virtualenv it needs.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
SHARED ?= ../shared
# the reference data: the original CIFAR-10 (lossless, official binary layout), read packed, never copied.
# Any dataset spec works, e.g. the lossy JPEG copy (about 10 points worse; not used for measurements):
#   make data-jpeg && make train-resnet20 DATA=imagefolder:$HOME/.cache/tsc-snn/cifar10
DATA ?= cifar10:$(SHARED)/datasets/cifar10-binary-lossless.tar.gz
CACHE ?= $(HOME)/.cache/tsc-snn
# training runs live in the repository (models/zoo/<run>/: weights, recipe, resumable state), committed, so a
# run outlives the machine and every reported row can be rebuilt (benchmarks/results/ reads them from TSC_RUNS)
RUNS ?= models/zoo
export TSC_RUNS := $(RUNS)
# the default model's windows
T ?= 16
T_IN ?= 16
# the low-T rows (lowt-thirdparty here; make lossless-resnet20 T=4 T_IN=8 for ours)
LOW_T ?= 4
LOW_T_IN ?= 8
# the shipped model's recipe: one cosine schedule from scratch with an exponential moving average of the
# weights (decay EMA), tested and kept (2 CPU cores with bf16 autocast: ~35 s/epoch; DEVICE=cuda on a GPU)
EPOCHS ?= 120
EMA ?= 0.999
LOSSLESS_EPOCHS ?= 2
VGG_EPOCHS ?= 108
DEVICE ?= auto

.PHONY: serve test lint lint-docker proto bench data data-jpeg train-resnet20 lossless-resnet20 distil-resnet20 convert-resnet20 \
        lowt-thirdparty reconstruct-thirdparty train-vgg16 convert-vgg16 results clean

# what serving needs (requirements.txt, what the container installs), then everything else (tests, Ray, tools)
$(VENV)/.runtime: requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements.txt
	touch $@

$(VENV)/.installed: $(VENV)/.runtime requirements-dev.txt requirements-ray.txt requirements-onnx.txt \
                    requirements-bench.txt
	$(PY) -m pip install -q -r requirements-dev.txt
	$(PY) -m pip install -q --no-deps -r requirements-onnx.txt -r requirements-bench.txt
	touch $@

## serve: start the service on the embedded default model (http://127.0.0.1:8000/docs); installs only
## what serving needs
serve: $(VENV)/.runtime
	$(PY) -m service

## test: lint and run the whole test suite
test: $(VENV)/.installed lint
	$(PY) -m pytest -q -n logical --dist loadfile

lint: $(VENV)/.installed
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

## lint-docker: hadolint the Dockerfile and validate the compose file
lint-docker: $(VENV)/.installed
	$(VENV)/bin/hadolint docker/Dockerfile
	docker-compose -f docker-compose.yml config -q

## proto: compile the vendored Open Inference Protocol gRPC proto into the descriptor set the service loads
## (committed, so that installing needs no compiler; the tests check that it is current)
proto: $(VENV)/.installed
	$(PY) -m grpc_tools.protoc -I service/proto --descriptor_set_out=service/proto/open_inference_grpc.binpb \
		open_inference_grpc.proto

## bench: engine throughput (fast vs ANN vs stepped) on ResNet-20
bench: $(VENV)/.installed
	$(PY) -m benchmarks.engines

## data: check that the dataset $(DATA) names is there (read in place: nothing is extracted into the repo)
data:
	@spec='$(DATA)'; path="$${spec#*:}"; \
	case "$$spec" in synthetic:*|*-download:*) exit 0;; esac; \
	test -e "$$path" || { echo "make data: $$path not found (DATA=$$spec). The reference data is" \
		"$(SHARED)/datasets/cifar10-binary-lossless.tar.gz (set SHARED=DIR to the shared folder);" \
		"make data-jpeg extracts the JPEG copy into $(CACHE)/cifar10" >&2; exit 1; }

## data-jpeg: extract the lossy JPEG copy into $(CACHE)/cifar10 for DATA=imagefolder:$(CACHE)/cifar10
data-jpeg: $(CACHE)/cifar10/test
$(CACHE)/cifar10/test:
	mkdir -p $(CACHE)
	tar xzf $(SHARED)/datasets/cifar10-jpeg.tar.gz -C $(CACHE)

## train-resnet20 / lossless-resnet20 / convert-resnet20: the default model, end to end
RESNET20 := $(RUNS)/resnet20-e$(EPOCHS)
export TSC_RESNET20 := $(RESNET20)
train-resnet20: $(VENV)/.installed data
	$(PY) -m converter train --model resnet20 --data $(DATA) --epochs $(EPOCHS) --lr 0.1 --wd 5e-4 \
		--label-smoothing 0.1 --warmup-epochs 2 --ema $(EMA) --eval-every 5 --device $(DEVICE) --out $(RESNET20)

## lossless-resnet20: low-T training, clip-floor activation with a learnable threshold per layer at T,
## from the ANN run FROM (T=3 T_IN=7, T=4 T_IN=8, T=6 T_IN=14, T=12 T_IN=28, T=25 T_IN=37: the low-T rows)
FROM ?= $(RESNET20)
lossless-resnet20: $(VENV)/.installed data
	$(PY) -m converter train --model resnet20 --data $(DATA) --init $(FROM)/model.safetensors \
		--clip-floor $(T) --clip-floor-input $(T_IN) --epochs $(LOSSLESS_EPOCHS) --lr 0.02 --wd 1e-4 \
		--warmup-epochs 0 --device $(DEVICE) --out $(FROM)-cf$(T)-in$(T_IN)

## distil-resnet20: low-T training that keeps the float accuracy: clip-floor at T (input T_IN), distilled from
## the float network TEACHER, KD_EPOCHS of one cosine schedule with an EMA; FROM a float run or a clip-floor
## run at a larger T (its clipping levels carry over), e.g. T=16, then T=8 FROM=$(RUNS)/resnet20-kd-cf16-in16
TEACHER ?= $(RESNET20)
KD_EPOCHS ?= 30
distil-resnet20: $(VENV)/.installed data
	$(PY) -m converter train --model resnet20 --data $(DATA) --init $(FROM)/model.safetensors \
		--clip-floor $(T) --clip-floor-input $(T_IN) --teacher $(TEACHER) --epochs $(KD_EPOCHS) --lr 0.02 \
		--wd 1e-4 --warmup-epochs 0 --ema $(EMA) --eval-every 5 --device $(DEVICE) \
		--out $(RUNS)/resnet20-kd-cf$(T)-in$(T_IN)

convert-resnet20: $(VENV)/.installed data
	$(PY) -m converter convert --run $(FROM)-cf$(T)-in$(T_IN) --data $(DATA) --T trained \
		--name resnet20-cifar10 --out models/resnet20-cifar10

## lowt-thirdparty: the third-party ResNet-20 (a measurement, never shipped) low-T trained at LOW_T
lowt-thirdparty: $(VENV)/.installed data
	$(PY) -m benchmarks.thirdparty_zoo $(CACHE)/thirdparty-resnet20-zoo.safetensors
	$(PY) -m converter train --model resnet20 --data $(DATA) --init $(CACHE)/thirdparty-resnet20-zoo.safetensors \
		--clip-floor $(LOW_T) --clip-floor-input $(LOW_T_IN) --epochs $(LOSSLESS_EPOCHS) --lr 0.02 --wd 1e-4 \
		--warmup-epochs 0 --device $(DEVICE) --out $(RUNS)/thirdparty-cf$(LOW_T)-in$(LOW_T_IN)

## reconstruct-thirdparty: the third-party ResNet-20 converted post-training by reconstruction at T (no labels),
## measured on the first LIMIT original test images (T=8: 160 steps, T=12: 240; README, "Calibration")
LIMIT ?= 2000
reconstruct-thirdparty: $(VENV)/.installed data
	$(PY) -m converter convert --factory benchmarks.thirdparty:load_resnet20 --data $(DATA) --T $(T) \
		--method reconstruct --limit $(LIMIT) --out $(CACHE)/thirdparty-reconstruct-T$(T)

## train-vgg16 / convert-vgg16: the paper's main network (~3 s/epoch on an H200, ~10 min/epoch on CPU)
train-vgg16: $(VENV)/.installed data
	$(PY) -m converter train --model vgg16 --data $(DATA) --epochs $(VGG_EPOCHS) --lr 0.05 --wd 5e-4 \
		--device $(DEVICE) --out $(RUNS)/vgg16

convert-vgg16: $(VENV)/.installed data
	$(PY) -m converter convert --run $(RUNS)/vgg16 --data $(DATA) --T $(T) --name vgg16-cifar10 \
		--out $(RUNS)/vgg16-cifar10-tsc

## results: measure every table of docs/results.md again and regenerate it with its plots
results: $(VENV)/.installed data
	$(PY) -m benchmarks.results --data $(DATA)

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .hypothesis
