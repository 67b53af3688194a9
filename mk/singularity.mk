# Singularity (issue 7): demo and one target per task script, on synthetic data unless DATA_DIR is given.
# DATA_DIR (command line / environment) = a directory written by `python -m singularity.synthetic`
# (generated on first use when absent); runs go to runs/singularity/<step>-<timestamp>.

SL_DATA = $(if $(filter command line environment,$(origin DATA_DIR)),$(DATA_DIR),runs/synthetic/singularity)
SL_STAMP := $(shell date +%Y%m%d-%H%M%S)
SL_RUNS = runs/singularity
SL_TASK = PYTHONPATH=$(CURDIR) OMP_NUM_THREADS=$${OMP_NUM_THREADS:-1} $(PY) -m

.PHONY: singularity-demo singularity-data singularity-pretrain singularity-train_ret singularity-train_vqa \
	singularity-eval_ret singularity-eval_ret_mc singularity-eval_vqa singularity-check-keys

DEMO_TARGETS += singularity-demo

singularity-demo: install ## Singularity: retrieval, MC, QA and temporal check on synthetic clips -> runs/demo/singularity
	$(SL_TASK) singularity.demo --data_dir $(SL_DATA) --out runs/demo/singularity

$(SL_DATA)/configs/ret_syn.yaml:
	$(PY) -m singularity.synthetic --out $(SL_DATA)

singularity-data: install $(SL_DATA)/configs/ret_syn.yaml ## Singularity: write the synthetic colour x shape dataset (DATA_DIR)

singularity-pretrain: install $(SL_DATA)/configs/ret_syn.yaml ## Singularity: pre-training (ITC+ITM+MLM) on DATA_DIR
	$(SL_TASK) singularity.tasks.pretrain $(SL_DATA)/configs/pretrain_syn.yaml output_dir=$(SL_RUNS)/pretrain-$(SL_STAMP)

singularity-train_ret: install $(SL_DATA)/configs/ret_syn.yaml ## Singularity: retrieval fine-tuning on DATA_DIR
	$(SL_TASK) singularity.tasks.retrieval $(SL_DATA)/configs/ret_syn.yaml output_dir=$(SL_RUNS)/train_ret-$(SL_STAMP)

singularity-train_vqa: install $(SL_DATA)/configs/ret_syn.yaml ## Singularity: QA fine-tuning on DATA_DIR
	$(SL_TASK) singularity.tasks.vqa $(SL_DATA)/configs/qa_syn.yaml output_dir=$(SL_RUNS)/train_vqa-$(SL_STAMP)

singularity-eval_ret: install $(SL_DATA)/configs/ret_syn.yaml ## Singularity: retrieval evaluation of CKPT=<ckpt_best.pth>
	@test -n "$(CKPT)" || { echo "set CKPT=<checkpoint> (e.g. runs/singularity/train_ret-*/ckpt_best.pth)"; exit 2; }
	$(SL_TASK) singularity.tasks.retrieval $(SL_DATA)/configs/ret_syn.yaml evaluate=True pretrained_path=$(CKPT) output_dir=$(SL_RUNS)/eval_ret-$(SL_STAMP)

singularity-eval_ret_mc: install $(SL_DATA)/configs/ret_syn.yaml ## Singularity: multiple-choice evaluation of CKPT=<retrieval ckpt>
	@test -n "$(CKPT)" || { echo "set CKPT=<checkpoint> (a retrieval ckpt_best.pth)"; exit 2; }
	$(SL_TASK) singularity.tasks.retrieval_mc $(SL_DATA)/configs/mc_syn.yaml pretrained_path=$(CKPT) output_dir=$(SL_RUNS)/eval_ret_mc-$(SL_STAMP)

singularity-eval_vqa: install $(SL_DATA)/configs/ret_syn.yaml ## Singularity: QA evaluation of CKPT=<QA ckpt_best.pth>
	@test -n "$(CKPT)" || { echo "set CKPT=<checkpoint> (e.g. runs/singularity/train_vqa-*/ckpt_best.pth)"; exit 2; }
	$(SL_TASK) singularity.tasks.vqa $(SL_DATA)/configs/qa_syn.yaml evaluate=True pretrained_path=$(CKPT) output_dir=$(SL_RUNS)/eval_vqa-$(SL_STAMP)

singularity-check-keys: install ## Singularity: convert + strictly load every section of the released key list
	$(PY) -m singularity.convert --check-keys tests/fixtures/singularity_state_dict_keys.txt

# Your own videos (issue 14): text search over a folder of clips and QA about one clip, here on the synthetic clips
# with the demo's checkpoints (runs/demo/singularity/{retrieval,qa}/ckpt_best.pth), trained into
# runs/singularity/demo_ckpt/ first when there is no demo run.
SL_RET_CKPT = $(firstword $(wildcard runs/demo/singularity/retrieval/ckpt_best.pth) runs/singularity/demo_ckpt/retrieval/ckpt_best.pth)
SL_QA_CKPT = $(firstword $(wildcard runs/demo/singularity/qa/ckpt_best.pth) runs/singularity/demo_ckpt/qa/ckpt_best.pth)
SL_SEARCH = $(SL_RUNS)/search-$(SL_STAMP)
SL_ASK = $(SL_RUNS)/ask-$(SL_STAMP)

.PHONY: singularity-search singularity-ask

runs/singularity/demo_ckpt/retrieval/ckpt_best.pth: | $(SL_DATA)/configs/ret_syn.yaml
	$(SL_TASK) singularity.tasks.retrieval $(SL_DATA)/configs/ret_syn.yaml output_dir=$(@D) eval_after_training=False

runs/singularity/demo_ckpt/qa/ckpt_best.pth: | $(SL_RET_CKPT)
	$(SL_TASK) singularity.tasks.vqa $(SL_DATA)/configs/qa_syn.yaml output_dir=$(@D) eval_after_training=False \
		pretrained_path=$(SL_RET_CKPT) allow_partial=True

singularity-search: install $(SL_DATA)/configs/ret_syn.yaml $(SL_RET_CKPT) ## Singularity: index the synthetic clips with the demo retrieval checkpoint, run 2 text queries -> runs/singularity/search-*
	$(SL_TASK) singularity.search --videos $(SL_DATA)/videos_images/syn_vid --index $(SL_SEARCH)/syn_vid.npz --pretrained_path $(SL_RET_CKPT)
	$(SL_TASK) singularity.search --index $(SL_SEARCH)/syn_vid.npz --query "a red square" --topk 5 --png $(SL_SEARCH)/red_square.png
	$(SL_TASK) singularity.search --index $(SL_SEARCH)/syn_vid.npz --query "a yellow pole" --topk 5 --png $(SL_SEARCH)/yellow_pole.png

singularity-ask: install $(SL_DATA)/configs/ret_syn.yaml $(SL_QA_CKPT) ## Singularity: ask 2 questions about a synthetic clip with the demo QA checkpoint -> runs/singularity/ask-*
	$(SL_TASK) singularity.ask --video $(SL_DATA)/videos_images/syn_vid/qaval_blue_ring_01.mp4 --question "what color is the shape" --pretrained_path $(SL_QA_CKPT) --png $(SL_ASK)/color.png
	$(SL_TASK) singularity.ask --video $(SL_DATA)/videos_images/syn_vid/qaval_blue_ring_01.mp4 --question "what shape is it" --pretrained_path $(SL_QA_CKPT) --png $(SL_ASK)/shape.png

.PHONY: singularity-bench
singularity-bench: install ## Singularity: speed table at the real size (BEiT-base + BERT-base): eager fp32 vs SDPA/autocast/batched ITM re-rank/fused AdamW/compile; ARGS="--compile" adds compile on CPU
	$(PY) benchmarks/singularity.py $(ARGS)
