# Multi30k German-English (../shared/data/multi30k-de-en, or M30K=DIR): a BC trained until its
# validation loss stops falling, the start of the real-data ReST runs (docs/results.md).
#
#   make -f examples/multi30k/m30k.mk bc          from the checkout, with rest on PATH or REST=...
#
# The BC is rest's `demo` Transformer (2+2 layers, d 128) with a 4,000-piece vocabulary, the size
# this 2-core machine trains in about an hour; validation every VALID_EVERY steps, stopping after
# PATIENCE validations without a new best (the best is kept), MAX_STEPS at most. Interrupted, it
# resumes from RUN/bc.partial/ when run again (checkpoints every VALID_EVERY / 2 steps). On a GPU
# machine add FINETUNE_OPTS="--device cuda".

M30K ?= ../shared/data/multi30k-de-en
RUN ?= runs/m30k
REST ?= rest
MAX_STEPS ?= 40000
VALID_EVERY ?= 1000
PATIENCE ?= 3
BC_OPTS ?= --preset demo --vocab-size 4000 --lr 1e-3 --warmup 400 --batch-tokens 4096
FINETUNE_OPTS ?=

SHELL := bash
.SHELLFLAGS := -o pipefail -c
.DELETE_ON_ERROR:
.PHONY: bc data

data: $(RUN)/data/train.jsonl $(RUN)/data/valid.jsonl $(RUN)/data/test.jsonl
$(RUN)/data/train.jsonl: $(M30K)/train.de $(M30K)/train.en
$(RUN)/data/valid.jsonl: $(M30K)/val.de $(M30K)/val.en
$(RUN)/data/test.jsonl: $(M30K)/test_2016_flickr.de $(M30K)/test_2016_flickr.en
$(RUN)/data/%.jsonl:
	@mkdir -p $(@D)
	$(REST) from-text $^ -o $@

bc: $(RUN)/bc/config.json
$(RUN)/bc/config.json: $(RUN)/data/train.jsonl $(RUN)/data/valid.jsonl
	$(REST) finetune $< --valid $(RUN)/data/valid.jsonl $(BC_OPTS) --steps $(MAX_STEPS) \
	  --valid-every $(VALID_EVERY) --patience $(PATIENCE) --checkpoint-every $$(( $(VALID_EVERY) / 2 )) \
	  --log-every 500 $(FINETUNE_OPTS) --output $(@D)
