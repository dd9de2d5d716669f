# ReST (Gulcehre et al., 2023) as a Makefile. Copy it and edit it: every step is a plain `rest` command.
#
#   make -f rest.mk rest G=2 I=3                  the demo (made on the fly), BC, then 2 Grow x 3 Improve steps
#   make -f rest.mk rest TRAIN=my/train.jsonl VALID=my/valid.jsonl TEST=my/test.jsonl REWARD=chrf
#   make -f rest.mk rest TRAIN="train.de train.en" VALID="val.de val.en" TEST="test.de test.en"
#   make -f rest.mk rest INIT=~/models/opus-mt-de-en TRAIN=... VALID=... TEST=...   a pretrained start
#   make -f rest.mk rest TASK=arithmetic G=3      ReST-EM's demo: a decoder-only model, checked answers
#
# TRAIN, VALID and TEST are JSONL records (src, ref) or two aligned plain-text files (source,
# reference; `rest from-text` converts them into RUN/data/). Paths given on the command line are
# relative to the directory you run make from, also with `make -C`. The settings are checked
# before any work starts (`rest loop check`).
#
# Grow g:     the policy of Grow g-1 samples N candidates per training source; the references join
#             them (--include-ref) and everything is scored.
# Improve i:  keep candidates above the i-th threshold of the schedule, fine-tune the previous policy
#             on them with a lower learning rate, measure the validation reward. Improving stops when
#             validation reward stops rising; the best checkpoint becomes the Grow step's policy.
# Everything lands under $(RUN); make redoes only what is missing, so a stopped run resumes.
#
# Scaling out (docs/scaling.md): SHARDS=K splits each Grow step into K shards that make -j runs
# side by side; LAUNCH runs each shard elsewhere (e.g. LAUNCH="srun -N1 -n1 --exclusive" inside a
# Slurm allocation, see examples/slurm/); FINETUNE_LAUNCH runs the Improve steps data-parallel
# (e.g. FINETUNE_LAUNCH="torchrun --standalone --nproc-per-node 8 --no-python").

# Paths from the command line are the user's: relative to the shell's directory ($PWD), which
# `make -C DIR` leaves as it was while make itself moves to DIR. (A shell between two makes resets
# PWD, so the checkout's Makefile passes USER_DIR down.)
USER_DIR ?= $(or $(PWD),$(CURDIR))
from_user = $(foreach p,$(1),$(if $(filter /%,$(p)),$(p),$(abspath $(USER_DIR)/$(p))))
$(foreach v,RUN TRAIN VALID TEST INIT BC,$(if $(filter command line environment,$(origin $(v))),\
  $(eval override $(v) := $(call from_user,$($(v))))))

REST ?= rest
# The demo a run without TRAIN/VALID/TEST makes, and the defaults that suit it: `translation`
# (ReST's, with rest's own small Transformer) or `arithmetic` (ReST-EM's: sums whose answer
# the `answer` reward checks, a tiny Llama trained from scratch by BC, one Improve step per Grow
# step, a binary threshold, at most 10 distinct correct samples per source; each Improve step
# continues the previous policy: ReST-EM's IMPROVE_FROM=base plateaus after Grow 1 here,
# docs/results.md).
TASK ?= translation
ifeq ($(TASK),arithmetic)
RUN ?= runs/arithmetic
G ?= 3
I ?= 1
N ?= 8
REWARD ?= answer
SCHEDULE ?= 0.5
LRS ?= 2e-4
IMPROVE_STEPS ?= 300
IMPROVE_FROM ?= previous
FILTER_OPTS ?= --dedup --max-per-source 10
DEMO_OPTS ?= --task arithmetic
BC_OPTS ?= --steps 1500 --lr 2e-3 --warmup 100
FINETUNE_OPTS ?= --batch-tokens 1024 --max-length 16
SAMPLE_OPTS ?= --temperature 0.8 --max-length 8
EVAL_OPTS ?= --max-length 8
TEST_OPTS ?= $(EVAL_OPTS) --sample 8 --pass-at 1,8 --majority 8
BON_N ?= 1,2,4,8
CONTROLS ?= more
endif
RUN ?= runs/demo
G ?= 2
I ?= 3
N ?= 4
REWARD ?= numbers
FILTER ?= tau
SCHEDULE ?= 0.0 0.7 0.8 0.9 0.95 0.99
# Learning rate of Improve step i: the i-th word. Each step starts from the previous policy, lower.
LRS ?= 3e-4 2e-4 1.5e-4 1e-4 7e-5 5e-5
IMPROVE_STEPS ?= 200
# Where Improve step 1 of each Grow step starts: `previous`, the policy of the Grow step before
# (ReST), or `base`, BC (ReST-EM, which fine-tunes the base model afresh on each Grow step's data).
# Later Improve steps of a Grow step start from the best before them.
IMPROVE_FROM ?= previous
# More options of `rest filter` (--dedup, --max-per-source K, ...).
FILTER_OPTS ?=
DATA ?= $(RUN)/data
DEMO_SPLITS := $(DATA)/train.jsonl $(DATA)/valid.jsonl $(DATA)/test.jsonl
TRAIN ?= $(DATA)/train.jsonl
VALID ?= $(DATA)/valid.jsonl
TEST ?= $(DATA)/test.jsonl
DEMO_OPTS ?= --train 4000 --valid 300 --test 300
# A pretrained start (docs/models.md): INIT is a policy directory (made by `rest import`) or a
# Hugging Face folder saved with save_pretrained, which `rest import INIT $(IMPORT_OPTS)` turns
# into RUN/init first (IMPORT_OPTS: --chat-template, --prompt-template T, --target-lang L). BC is
# then INIT fine-tuned on TRAIN with BC_OPTS (model shape options do not apply), so that Grow 1
# samples from a policy that has seen the task, as the paper's BC has.
INIT ?=
IMPORT_OPTS ?=
# A BC you have already trained (a policy directory, e.g. one trained until its validation loss
# stopped falling: examples/multi30k/m30k.mk): copied in as Grow 0's policy instead of training
# one, so INIT and BC_OPTS do not apply.
BC ?=
BC_OPTS ?= $(if $(INIT),--steps 200 --lr 5e-5,--preset demo --vocab-size 400 --steps 800 --lr 1e-3)
# On a machine other work shares, add --threads 1: torch's threads slow down 2-6x when they
# compete for cores (docs/benchmarks.md); rest finetune says so when it sees the machine busy.
FINETUNE_OPTS ?= --batch-tokens 4096
# The Improve steps' loss (docs/objectives.md): nll (BC), rwnll, gold, oac or bvmpo; BC (g0) is NLL.
OBJECTIVE ?= nll
# The "converged" control stops when validation loss stops improving, or at this many steps.
CONTROL_MAX_STEPS ?= 2000
SAMPLE_OPTS ?= --temperature 0.8 --max-length 64
EVAL_OPTS ?= --max-length 64
TEST_OPTS ?= $(EVAL_OPTS) --sample 4
BON_N ?= 1,2,4,8,16
CONTROL_PATIENCE ?= 2
# Control arms to train and report (CONTROLS= skips them: they take about half the demo's time).
CONTROLS ?= converged more
SHARDS ?= 1
# Seeds every fine-tune (initialisation, batches, dropout) and the Grow steps' samples (Grow g
# samples with seed g + 1000 * SEED): SEED=1, 2, 3 repeat a run with other random draws.
SEED ?= 0
LAUNCH ?=
FINETUNE_LAUNCH ?=

# The data the steps read: the JSONL given, or RUN/data/SPLIT.jsonl made from two text files.
jsonl_of = $(if $(word 2,$(1)),$(DATA)/$(2).jsonl,$(1))
TRAIN_JSONL := $(call jsonl_of,$(TRAIN),train)
VALID_JSONL := $(call jsonl_of,$(VALID),valid)
TEST_JSONL := $(call jsonl_of,$(TEST),test)
USES_DEMO := $(filter $(DEMO_SPLITS),$(TRAIN) $(VALID) $(TEST))
GIVEN_DATA := $(filter-out $(DEMO_SPLITS),$(TRAIN) $(VALID) $(TEST))

# Every setting checked while make reads this file, so that a bad one fails in a second, not
# after minutes of training. qv quotes NAME=VALUE as one shell word (the value may hold commas,
# quotes, parentheses), reading the value itself so that $(call) does not split it at commas.
qv = '$(subst ','\'',$(1)=$($(1)))'
ifneq ($(and $(USES_DEMO),$(GIVEN_DATA)),)
$(error rest.mk: give TRAIN, VALID and TEST together (or none of them, for the demo); given: $(GIVEN_DATA))
endif
ifneq ($(and $(BC),$(INIT)),)
$(error rest.mk: give INIT (a model BC fine-tunes) or BC (a trained BC to start from), not both)
endif
SETTINGS := TASK G I N SEED IMPROVE_STEPS IMPROVE_FROM CONTROL_MAX_STEPS CONTROL_PATIENCE SHARDS FILTER SCHEDULE LRS \
  BON_N CONTROLS REWARD OBJECTIVE $(if $(INIT),INIT) $(if $(BC),BC) $(MORE_SETTINGS)
CHECKED := $(shell out=$$($(REST) loop check $(foreach v,$(SETTINGS) $(if $(GIVEN_DATA),TRAIN VALID TEST),\
  $(call qv,$(v))) 2>&1) || echo "$${out:-$(REST) loop check failed}")
ifneq ($(CHECKED),)
$(error $(CHECKED))
endif

comma := ,
# REWARD as one shell word, whatever it holds: "product(use, copy-guard)" has parentheses and spaces.
R := '$(subst ','\'',$(REWARD))'
# The same word inside the double quotes of the Grow step's `bash -c "..."`.
R_IN_DQ := $(subst `,\`,$(subst ",\",$(subst \,\\,$(R))))
GROWS := $(shell seq 1 $(G))
IMPROVES := $(shell seq 1 $(I))
STEPS := $(foreach g,$(GROWS),$(foreach i,$(IMPROVES),g$(g)-i$(i)))
SHARD_IDS := $(shell seq 1 $(SHARDS))
FINETUNE := $(strip $(FINETUNE_LAUNCH) $(REST) finetune --seed $(SEED))
grow_seed = $(shell echo $$(( $(1) + 1000 * $(SEED) )))
minus1 = $(shell echo $$(($(1) - 1)))
# The model a validation report measured: the policy of that step. (Used inside $(eval): $$$$ becomes $.)
model_of = $$$$($(REST) loop best -r $(R) $(1))
# Whether Improve step $(1) of a Grow step starts from BC.
from_base = $(and $(filter base,$(IMPROVE_FROM)),$(filter 1,$(1)))
eval_to = $(REST) eval --brief -r $(R) $(1) > $(2).tmp && mv $(2).tmp $(2)

# A failing command anywhere in a pipe fails the recipe: `rest sample` dying must not leave
# `rest score` to write a complete-looking file of part of the candidates.
SHELL := bash
.SHELLFLAGS := -o pipefail -c

.PHONY: rest
.DELETE_ON_ERROR:
# The end of every run, and of a rerun of a finished one: the results table and where the files are.
rest: $(RUN)/results.md
	@$(REST) loop summary $(RUN)

# A step's heading in the log (commands that would print a screenful run quietly under it;
# `make -n` shows them).
heading = @printf '\n== %s ==\n' '$(subst ','\'',$(1))'

ifneq ($(USES_DEMO),)
# Demo data, when TRAIN, VALID and TEST are left at their defaults.
$(DEMO_SPLITS) &:
	$(REST) demo-data $(DATA) $(DEMO_OPTS)
endif
# Plain-text data: a source and a reference file, line by line, into records.
define FROM_TEXT
$(DATA)/$(1).jsonl: $(2)
	@mkdir -p $$(@D)
	$(REST) from-text $(2) -o $$@
endef
$(foreach s,train:TRAIN valid:VALID test:TEST,$(if $(word 2,$($(lastword $(subst :, ,$(s))))),\
  $(eval $(call FROM_TEXT,$(firstword $(subst :, ,$(s))),$($(lastword $(subst :, ,$(s))))))))

# The pretrained start: INIT itself when it is a policy directory, else its import; the
# arithmetic demo starts from the untrained model `rest demo-data` writes beside its data.
IS_POLICY = $(shell grep -qs '"rest-model"' $(1)/config.json && echo yes)
DEMO_BASE := $(if $(and $(USES_DEMO),$(filter arithmetic,$(TASK))),$(DATA)/base-model)
ifneq ($(and $(filter arithmetic,$(TASK)),$(GIVEN_DATA),$(if $(INIT),,no)),)
$(error rest.mk: TASK=arithmetic with your own data needs INIT, a decoder-only model to start from)
endif
START := $(if $(INIT),$(if $(call IS_POLICY,$(INIT)),$(INIT),$(RUN)/init),$(if $(DEMO_BASE),$(RUN)/init))
$(RUN)/init/config.json: $(if $(DEMO_BASE),$(DEMO_SPLITS))
	$(call heading,Import: $(or $(INIT),$(DEMO_BASE)) as a policy)
	$(REST) import $(or $(INIT),$(DEMO_BASE)) -o $(RUN)/init $(IMPORT_OPTS)

# G=0: behaviour cloning on the original data (from INIT, when given), or the BC given, copied
# (through a temporary name, so that an interrupted copy is never taken for a model).
ifneq ($(BC),)
$(RUN)/g0/model/config.json: $(BC)/config.json
	$(call heading,BC (Grow 0): $(BC)$(comma) trained already)
	@mkdir -p $(RUN)/g0 && rm -rf $(RUN)/g0/model.tmp && cp -R -H $(BC) $(RUN)/g0/model.tmp && \
	  rm -rf $(RUN)/g0/model && mv $(RUN)/g0/model.tmp $(RUN)/g0/model && touch $@
else
$(RUN)/g0/model/config.json: $(TRAIN_JSONL) $(VALID_JSONL) $(if $(START),$(START)/config.json)
	$(call heading,BC (Grow 0): behaviour cloning on $(TRAIN_JSONL)$(if $(START), from $(START)))
	$(FINETUNE) $(TRAIN_JSONL) --valid $(VALID_JSONL) $(if $(START),--init $(START)) $(BC_OPTS) $(FINETUNE_OPTS) \
	  --output $(RUN)/g0/model
endif
$(RUN)/g0/valid.json: $(RUN)/g0/model/config.json
	@$(call eval_to,-m $(RUN)/g0/model $(EVAL_OPTS) $(VALID_JSONL),$@)
$(RUN)/g0/policy: $(RUN)/g0/valid.json
	@echo $(RUN)/g0/model > $@.tmp && mv $@.tmp $@

define GROW
# Grow $(1): sample with the policy of Grow $(call minus1,$(1)), references included, all scored,
# in SHARDS shards (each its own share of the sources and its own seed) joined in one file.
$(RUN)/g$(1)/shard-%.jsonl.gz: $(RUN)/g$(call minus1,$(1))/policy $(TRAIN_JSONL)
	@mkdir -p $$(@D)
	$(call heading,Grow $(1)$(if $(filter-out 1,$(SHARDS)), (shard $$*/$(SHARDS))): $(N) samples per source \
	  from the policy of Grow $(call minus1,$(1)) and the references$(comma) scored by $(REWARD))
	$(LAUNCH) bash -o pipefail -c "$(REST) sample -m $$$$(cat $$<) -n $(N) --include-ref --seed $(call grow_seed,$(1)) --shard $$*/$(SHARDS) \
	  $(SAMPLE_OPTS) $(TRAIN_JSONL) | $(REST) score -r $(R_IN_DQ) -o $$@"
$(RUN)/g$(1)/candidates.jsonl.gz: $(foreach k,$(SHARD_IDS),$(RUN)/g$(1)/shard-$(k).jsonl.gz)
	@cat $$^ > $$@.tmp && mv $$@.tmp $$@ && rm -f $$^
# Once joined, the shards go (they would double the disk the candidates take); a missing shard
# is no reason to sample again.
.INTERMEDIATE: $(foreach k,$(SHARD_IDS),$(RUN)/g$(1)/shard-$(k).jsonl.gz)
$(RUN)/g$(1)/i0/valid.json: $(RUN)/g$(call minus1,$(1))/policy
	@mkdir -p $$(@D)
	@$(call eval_to,-m $$$$(cat $$<) $(EVAL_OPTS) $(VALID_JSONL),$$@)
$(RUN)/g$(1)/policy: $(foreach i,0 $(IMPROVES),$(RUN)/g$(1)/i$(i)/valid.json)
	@$(REST) loop best -r $(R) $$^ > $$@.tmp && mv $$@.tmp $$@
endef

define IMPROVE
# Improve $(2) of Grow $(1): runs only while validation reward is still rising. `rest loop rising`
# prints its decision (rising or stopped); when it fails, the recipe fails and nothing is marked.
$(RUN)/g$(1)/i$(2)/valid.json: $(RUN)/g$(1)/candidates.jsonl.gz $(foreach j,$(shell seq 0 $(call minus1,$(2))),$(RUN)/g$(1)/i$(j)/valid.json)
	@mkdir -p $$(@D) && rm -f $$(@D)/skipped
	$(call heading,Grow $(1) Improve $(2): FILTER=$(FILTER) from SCHEDULE$(comma) then $(IMPROVE_STEPS) steps \
	  at lr $(word $(2),$(LRS)) from $(if $(call from_base,$(2)),BC (IMPROVE_FROM=base),the best policy so far))
	@decision=$$$$($(REST) loop rising -r $(R) $$(wordlist 2,99,$$^)) && \
	if [ "$$$$decision" = rising ]; then \
	  tau=$$$$($(REST) loop threshold --kind $(FILTER) --schedule "$(SCHEDULE)" --step $(2) --candidates $$<) && \
	  $(REST) filter --$(FILTER) $$$$tau $(FILTER_OPTS) $$< -o $$(@D)/data.jsonl.gz --stats $$(@D)/data.stats.json && \
	  $(FINETUNE) $$(@D)/data.jsonl.gz --init $(if $(call from_base,$(2)),$(RUN)/g0/model,$(call model_of,$$(lastword $$^))) \
	    --lr $(word $(2),$(LRS)) --objective $(OBJECTIVE) \
	    --warmup 0 --steps $(IMPROVE_STEPS) --valid $(VALID_JSONL) $(FINETUNE_OPTS) --output $$(@D)/model && \
	  $(call eval_to,-m $$(@D)/model $(EVAL_OPTS) $(VALID_JSONL),$$@); \
	else touch $$(@D)/skipped && cp $$(lastword $$^) $$@.tmp && mv $$@.tmp $$@; fi
$(RUN)/test/g$(1)-i$(2).json: $(RUN)/g$(1)/i$(2)/valid.json $(TEST_JSONL)
	@mkdir -p $$(@D)
	@$(call eval_to,-m $(call model_of,$$<) $(TEST_OPTS) $(TEST_JSONL),$$@)
endef

$(foreach g,$(GROWS),$(eval $(call GROW,$(g))))
$(foreach g,$(GROWS),$(foreach i,$(IMPROVES),$(eval $(call IMPROVE,$(g),$(i)))))

FINAL := $(RUN)/g$(G)/policy

# Test-set figures of BC, and Best-of-N curves of BC and of the final policy.
$(RUN)/test/bc.json: $(RUN)/g0/policy $(TEST_JSONL)
	@mkdir -p $(@D)
	$(call heading,Test set: BC)
	@$(call eval_to,-m $(RUN)/g0/model $(TEST_OPTS) $(TEST_JSONL),$@)
$(RUN)/bon/bc.json $(RUN)/bon/final.json: $(RUN)/bon/%.json:
	@mkdir -p $(@D)
	$(call heading,Best-of-N on the test set: $(if $(filter bc,$*),BC,the final policy) for N in $(BON_N))
	$(REST) sample -m $$(cat $(if $(filter bc,$*),$(RUN)/g0/policy,$(FINAL))) -n $(lastword $(subst $(comma), ,$(BON_N))) \
	  $(SAMPLE_OPTS) $(TEST_JSONL) | $(REST) score -r $(R) | $(REST) bestofn --curve $(BON_N) -o $@
$(RUN)/bon/bc.json: $(RUN)/g0/policy $(TEST_JSONL)
$(RUN)/bon/final.json: $(FINAL) $(TEST_JSONL)

# Controls, so that a gain is not just more training. Both start from BC on the original data:
# trained on to convergence (early stopping on validation loss), and trained for as many steps
# as all Improve steps that ran, at the first Improve learning rate.
$(RUN)/control/converged/config.json: $(RUN)/g0/policy
	$(call heading,Control: BC trained on the original data until validation loss stops falling)
	$(FINETUNE) $(TRAIN_JSONL) --init $(RUN)/g0/model --valid $(VALID_JSONL) --lr $(word 1,$(LRS)) --warmup 0 \
	  --steps $(CONTROL_MAX_STEPS) --valid-every $(IMPROVE_STEPS) --patience $(CONTROL_PATIENCE) $(FINETUNE_OPTS) \
	  --output $(@D)
$(RUN)/control/more/config.json: $(FINAL)
	$(call heading,Control: BC trained on the original data for as many steps as the Improve steps)
	steps=$$(( $$(ls -d $(RUN)/g*/i*/model 2>/dev/null | wc -l) * $(IMPROVE_STEPS) )); \
	$(FINETUNE) $(TRAIN_JSONL) --init $(RUN)/g0/model --valid $(VALID_JSONL) --lr $(word 1,$(LRS)) --warmup 0 \
	  --steps $$steps $(FINETUNE_OPTS) --output $(@D)
$(RUN)/test/control-%.json: $(RUN)/control/%/config.json $(TEST_JSONL)
	@mkdir -p $(@D)
	@$(call eval_to,-m $(RUN)/control/$* $(TEST_OPTS) $(TEST_JSONL),$@)

$(RUN)/results.md: $(RUN)/test/bc.json $(foreach s,$(STEPS),$(RUN)/test/$(s).json) \
                   $(foreach c,$(CONTROLS),$(RUN)/test/control-$(c).json) $(RUN)/bon/bc.json $(RUN)/bon/final.json
	@$(REST) loop report $(RUN) -r $(R)
