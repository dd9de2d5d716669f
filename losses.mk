# Which Improve loss is best for one step of ReST? The paper's Figure 5 (Section 4; Appendix A.7)
# on the demo or on your data, over several seeds.
#
#   make losses                                        from the checkout: the demo, 3 seeds, every objective
#   make -f losses.mk losses SEEDS="1 2 3 4 5" OBJECTIVES="nll gold"
#   make -f losses.mk losses TRAIN=my/train.jsonl VALID=my/valid.jsonl TEST=my/test.jsonl REWARD=chrf
#
# Per seed S (it seeds BC's initialisation and data order, the Grow step's samples, and every
# fine-tune's batches):
#   BC G=0 I=0    behaviour cloning on TRAIN, exactly as `make rest` trains it (BC_OPTS)
#   Grow 1        N samples per training source from that BC, references included, scored by REWARD
#   LOSS G=1 I=0  BC fine-tuned by LOSS (each of I0_OBJECTIVES: NLL, the paper's "ReST G=1 I=0") on
#                 all of Grow 1's data, unfiltered
#   LOSS G=1 I=1  BC fine-tuned by LOSS (each of OBJECTIVES) on the Grow 1 data the first threshold
#                 of SCHEDULE keeps (the same data for every loss)
# Every fine-tune from BC runs IMPROVE_STEPS steps at the first of LRS and keeps its last weights:
# the same data and the same steps for every loss, and no choice of checkpoint by validation NLL,
# which would favour NLL (GOLD's authors choose by BLEU). Each policy is measured on TEST, greedy
# and sampled (TEST_OPTS). The table and bar chart: RUN/losses.{md,json,png} (`rest loop arms`).
#
# Every other variable is rest.mk's (REWARD, N, SCHEDULE, LRS, IMPROVE_STEPS, BC_OPTS, ...), with
# its defaults; RUN defaults to runs/losses. As with rest.mk, make redoes only what is missing.

# rest.mk beside this file, wherever make was started.
HERE := $(dir $(lastword $(MAKEFILE_LIST)))
RUN ?= runs/losses
SEEDS ?= 1 2 3
OBJECTIVES ?= nll rwnll gold oac bvmpo
I0_OBJECTIVES ?= nll
# GOLD refreshes its lagged policy every `sync_every` steps; the authors' 3,000 would never come
# within one Improve step here, so it is refreshed four times in each.
GOLD_SYNC = $(shell echo $$(( ($(IMPROVE_STEPS) + 3) / 4 )))
LOSS_OPTS_gold ?= --objective-opt sync_every=$(GOLD_SYNC)
MORE_SETTINGS := SEEDS OBJECTIVES I0_OBJECTIVES
include $(HERE)rest.mk
.DEFAULT_GOAL := losses

.PHONY: losses
losses: $(RUN)/losses.md
	@cat $<

# The arms in the table's order; the name is LOSS-gG-iI (`rest loop arms` labels it "BC G=1 I=0").
ARMS := nll-g0-i0 $(foreach o,$(I0_OBJECTIVES),$(o)-g1-i0) $(foreach o,$(OBJECTIVES),$(o)-g1-i1)
FROM_BC_STEPS = --lr $(word 1,$(LRS)) --warmup 0 --steps $(IMPROVE_STEPS) $(FINETUNE_OPTS)
# The models are made by pattern rules, which would make them intermediate files that make deletes
# once the test reports are written: they are kept.
.SECONDARY: $(foreach s,$(SEEDS),$(foreach a,$(ARMS),$(RUN)/s$(s)/$(a)/config.json))

define SEED
$(RUN)/s$(1)/nll-g0-i0/config.json: $(TRAIN_JSONL) $(VALID_JSONL) $(if $(START),$(START)/config.json)
	$$(call heading,Seed $(1): BC (G=0 I=0) on $(TRAIN_JSONL))
	$(FINETUNE) $(TRAIN_JSONL) --valid $(VALID_JSONL) $(if $(START),--init $(START)) $(BC_OPTS) $(FINETUNE_OPTS) \
	  --seed $(1) --output $$(@D)
$(RUN)/s$(1)/g1/candidates.jsonl.gz: $(RUN)/s$(1)/nll-g0-i0/config.json $(TRAIN_JSONL)
	@mkdir -p $$(@D)
	$$(call heading,Seed $(1): Grow 1$$(comma) $(N) samples per source from BC and the references$$(comma) scored by $(REWARD))
	$(REST) sample -m $$(<D) -n $(N) --include-ref --seed $(1) $(SAMPLE_OPTS) $(TRAIN_JSONL) | $(REST) score -r $(R) -o $$@
$(RUN)/s$(1)/g1/kept.jsonl.gz: $(RUN)/s$(1)/g1/candidates.jsonl.gz
	tau=$$$$($(REST) loop threshold --kind $(FILTER) --schedule "$(SCHEDULE)" --step 1 --candidates $$<) && \
	$(REST) filter --$(FILTER) $$$$tau $(FILTER_OPTS) $$< -o $$@ --stats $$(@D)/kept.stats.json
$(RUN)/s$(1)/%-g1-i0/config.json: $(RUN)/s$(1)/g1/candidates.jsonl.gz
	$$(call heading,Seed $(1): $$* G=1 I=0$$(comma) all of Grow 1's data by $$*)
	$(FINETUNE) $$< --init $(RUN)/s$(1)/nll-g0-i0 --objective $$* $$(LOSS_OPTS_$$*) $(FROM_BC_STEPS) --seed $(1) \
	  --output $$(@D)
$(RUN)/s$(1)/%-g1-i1/config.json: $(RUN)/s$(1)/g1/kept.jsonl.gz
	$$(call heading,Seed $(1): $$* G=1 I=1$$(comma) one Improve step by $$*)
	$(FINETUNE) $$< --init $(RUN)/s$(1)/nll-g0-i0 --objective $$* $$(LOSS_OPTS_$$*) $(FROM_BC_STEPS) --seed $(1) \
	  --output $$(@D)
$(RUN)/test/%/s$(1).json: $(RUN)/s$(1)/%/config.json $(TEST_JSONL)
	@mkdir -p $$(@D)
	@$$(call eval_to,-m $(RUN)/s$(1)/$$* $(TEST_OPTS) $(TEST_JSONL),$$@)
endef
$(foreach s,$(SEEDS),$(eval $(call SEED,$(s))))

$(RUN)/losses.md: $(foreach a,$(ARMS),$(foreach s,$(SEEDS),$(RUN)/test/$(a)/s$(s).json))
	@$(REST) loop arms -r $(R) $(foreach a,$(ARMS),$(RUN)/test/$(a)) -o $(RUN)/losses
