# Multi30k German-English (../shared/data/multi30k-de-en, or M30K=DIR): a BC trained until its
# validation loss stops falling, then ReST from it under two rewards (docs/results.md).
#
#   make -f examples/multi30k/m30k.mk bc          from the checkout, with rest on PATH or REST=...
#   make -f examples/multi30k/m30k.mk rest-chrf   ReST with chrF against the references
#   make -f examples/multi30k/m30k.mk rest-free   ReST with a reference-free reward (FREE_REWARD)
#   make -f examples/multi30k/m30k.mk compare-chrf compare-free   the test-set comparison, with significance
#
# The BC is rest's `demo` Transformer (2+2 layers, d 128) with a 4,000-piece vocabulary, small
# enough for a 2-core machine (about 3-4 steps a second with --threads 2: it stopped at 35,000
# steps, best at 32,000, after 4h01m of training); validation every VALID_EVERY steps, stopping after
# PATIENCE validations without a new best (the best is kept), MAX_STEPS at most. Interrupted, it
# resumes from RUN/bc.partial/ when run again (checkpoints every VALID_EVERY / 2 steps). On a GPU
# machine add FINETUNE_OPTS="--device cuda". The two ReST runs can share a 2-core machine once the
# BC is trained (make bc first: two makes started together would both start it, and the second
# `rest finetune` is refused): OMP_NUM_THREADS=1 and FINETUNE_OPTS="--threads 1 --bf16" for each
# ran both in 53 minutes.

M30K ?= ../shared/data/multi30k-de-en
RUN ?= runs/m30k
REST ?= rest
MAX_STEPS ?= 40000
VALID_EVERY ?= 1000
PATIENCE ?= 3
BC_OPTS ?= --preset demo --vocab-size 4000 --lr 1e-3 --warmup 400 --batch-tokens 4096
FINETUNE_OPTS ?=

# ReST from that BC: rest.mk (beside the checkout's root) with BC=RUN/bc, in RUN/chrf/sSEED and
# RUN/free/sSEED (SEED=1, 2, 3 repeat a run with other samples and batches; CHRF_NAME and
# FREE_NAME name other folders than chrf and free), both controls. N
# samples per source, filtered per source by percentile over the samples alone, each reference
# kept (FILTER_OPTS): with chrF a reference scores 1.0 against itself and would otherwise set its
# samples' bar, and global thresholds left the Improve data mostly references.
# The reference-free reward is slow (about 200 sentences/s on 2 cores), so its Grow steps draw
# FREE_N samples per source, not N: every training source is sampled in both runs, so that ReST
# and the controls see the same original data. More rest.mk variables: LOOP_VARS='I=2 ...'.
REST_MK ?= $(dir $(lastword $(MAKEFILE_LIST)))../../rest.mk
G ?= 2
I ?= 4
N ?= 8
SCHEDULE ?= 50 75 90 90
LRS ?= 1e-4 7e-5 5e-5 3e-5
IMPROVE_STEPS ?= 500
# The converged control may train as long as every Improve step together.
CONTROL_MAX_STEPS ?= $(shell echo $$(( $(G) * $(I) * $(IMPROVE_STEPS) )))
FILTER_OPTS ?= --dedup --references keep
CHRF_REWARD ?= chrf
# With length-guard(min_ratio=0.8) shorter output costs reward: BLEU held in two seeds, the reward
# gain in one of them (docs/results.md). FREE_NAME=free-len with that FREE_REWARD runs it beside
# this one.
FREE_REWARD ?= product(use, copy-guard, repeat-guard, length-guard, lang-guard)
FREE_N ?= 4
# The runs' folders under RUN: another name keeps a variant (another FREE_REWARD, say) beside them.
CHRF_NAME ?= chrf
FREE_NAME ?= free
LOOP_VARS ?=
SEED ?= 1
LENGTH := --max-length 80

SHELL := bash
.SHELLFLAGS := -o pipefail -c
.DELETE_ON_ERROR:
.PHONY: bc data rest-chrf rest-free compare-chrf compare-free

data: $(RUN)/data/train.jsonl $(RUN)/data/valid.jsonl $(RUN)/data/test.jsonl
$(RUN)/data/train.jsonl: $(M30K)/train.de $(M30K)/train.en
$(RUN)/data/valid.jsonl: $(M30K)/val.de $(M30K)/val.en
$(RUN)/data/test.jsonl: $(M30K)/test_2016_flickr.de $(M30K)/test_2016_flickr.en
$(RUN)/data/%.jsonl:
	@mkdir -p $(@D)
	$(REST) from-text $^ -o $@

# The data is an order-only prerequisite of the BC: the BC takes hours, and a fresh copy of the same
# corpus (new timestamps, same text) must not start it again. Its training.json holds the sha256 of
# the data it learnt from; after changing the data, delete RUN/bc.
bc: $(RUN)/bc/config.json
$(RUN)/bc/config.json: | $(RUN)/data/train.jsonl $(RUN)/data/valid.jsonl
	$(REST) finetune $(RUN)/data/train.jsonl --valid $(RUN)/data/valid.jsonl $(BC_OPTS) --steps $(MAX_STEPS) \
	  --valid-every $(VALID_EVERY) --patience $(PATIENCE) --checkpoint-every $$(( $(VALID_EVERY) / 2 )) \
	  --log-every 500 $(FINETUNE_OPTS) --output $(@D)

# One ReST run from the converged BC: $(1) the run's name, $(2) the variable holding its reward
# (a reward spec may hold commas, which $(call) would split at), $(3) samples per source.
rest_from_bc = $(MAKE) --no-print-directory -f $(REST_MK) rest REST='$(REST)' RUN=$(RUN)/$(1)/s$(SEED) SEED=$(SEED) BC=$(RUN)/bc \
  TRAIN=$(RUN)/data/train.jsonl VALID=$(RUN)/data/valid.jsonl TEST=$(RUN)/data/test.jsonl REWARD='$(subst ','\'',$($(2)))' \
  G=$(G) I=$(I) N=$(3) FILTER=percentile SCHEDULE='$(SCHEDULE)' FILTER_OPTS='$(FILTER_OPTS)' \
  LRS='$(LRS)' IMPROVE_STEPS=$(IMPROVE_STEPS) FINETUNE_OPTS='--batch-tokens 4096 $(FINETUNE_OPTS)' \
  SAMPLE_OPTS='--temperature 0.8 $(LENGTH)' EVAL_OPTS='$(LENGTH)' TEST_OPTS='$(LENGTH) --sample 4' \
  CONTROL_MAX_STEPS=$(CONTROL_MAX_STEPS) BON_N=1,2,4,8 $(LOOP_VARS)

rest-chrf: $(RUN)/bc/config.json data
	$(call rest_from_bc,$(CHRF_NAME),CHRF_REWARD,$(N))
rest-free: $(RUN)/bc/config.json data
	$(call rest_from_bc,$(FREE_NAME),FREE_REWARD,$(FREE_N))

# The test-set comparison of a finished run (rest eval --compare, paired bootstrap): the converged
# control first, so that every p-value is against it, then BC, the more-training control and
# ReST's final policy, under both rewards, with BLEU and chrF; RUN/NAME/sSEED/compare.{json,png}.
compare_run = out=$(RUN)/$(1)/s$(SEED)/compare && \
  $(REST) eval -m $(RUN)/$(1)/s$(SEED)/control/converged --compare $(RUN)/bc \
    --compare $(RUN)/$(1)/s$(SEED)/control/more --compare "$$(cat $(RUN)/$(1)/s$(SEED)/g$(G)/policy)" \
    -r '$(subst ','\'',$(CHRF_REWARD))' -r '$(subst ','\'',$(FREE_REWARD))' $(LENGTH) --plot $$out.png \
    $(RUN)/data/test.jsonl > $$out.json.tmp && mv $$out.json.tmp $$out.json

compare-chrf: rest-chrf
	$(call compare_run,$(CHRF_NAME))
compare-free: rest-free
	$(call compare_run,$(FREE_NAME))
