# VisualCOMET (issue 3). DATA_DIR defaults to a synthetic dataset made on first use.
VC_DATA_DIR := $(if $(DATA_DIR),$(DATA_DIR),runs/synthetic/visualcomet)
VC_RUN_DIR ?= runs/visualcomet
VC_MODEL ?= $(if $(DATA_DIR),gpt2,$(VC_DATA_DIR)/gpt2-tiny)
VC_SEQ_LEN ?= $(if $(DATA_DIR),128,40)
VC_GENS := $(VC_RUN_DIR)/model/val_sample_1_num_5_top_k_0_top_p_0.9.json

.PHONY: visualcomet-demo visualcomet-data visualcomet-finetune visualcomet-generate visualcomet-evaluate \
	visualcomet-rank visualcomet-visualize visualcomet-check-keys visualcomet-bench

visualcomet-demo: install ## VisualCOMET: synthetic data, train image/text-only models, rank, generate, score, draw
	$(PY) -m visualcomet.demo --data_dir runs/synthetic/visualcomet --out runs/demo/visualcomet

visualcomet-data: install ## VisualCOMET: write the synthetic dataset to runs/synthetic/visualcomet (if missing)
	@test -f runs/synthetic/visualcomet/train_annots.json || $(PY) -m visualcomet.synthetic --out runs/synthetic/visualcomet

$(if $(DATA_DIR),,visualcomet-finetune visualcomet-generate visualcomet-rank visualcomet-evaluate visualcomet-visualize): visualcomet-data

visualcomet-finetune: install ## VisualCOMET: run_finetuning.py on DATA_DIR into runs/visualcomet/model (ARGS=extra flags)
	$(PY) visualcomet/scripts/run_finetuning.py $(THREADS_FLAG) --data_dir $(VC_DATA_DIR) --model_name_or_path $(VC_MODEL) \
		--output_dir $(VC_RUN_DIR)/model --max_seq_len $(VC_SEQ_LEN) --overwrite_output_dir \
		$(if $(DATA_DIR),,--per_gpu_train_batch_size 16 --max_steps 300 --learning_rate 1e-3 --save_steps 100 --no_cuda) $(ARGS)

visualcomet-generate: install ## VisualCOMET: run_generation.py --split val with the finetuned model
	$(PY) visualcomet/scripts/run_generation.py $(THREADS_FLAG) --data_dir $(VC_DATA_DIR) --model_name_or_path $(VC_RUN_DIR)/model \
		--split val --max_seq_len $(VC_SEQ_LEN) --gen_batch_size 16 --overwrite_output $(ARGS)

visualcomet-evaluate: install ## VisualCOMET: evaluate_generation.py (BLEU/METEOR/CIDEr + diversity) of the val generations
	$(PY) visualcomet/scripts/evaluate_generation.py $(THREADS_FLAG) --gens_file $(VC_GENS) --refs_file $(VC_DATA_DIR)/val_annots.json \
		--diversity --train_file $(VC_DATA_DIR)/train_annots.json --overwrite $(ARGS)

visualcomet-rank: install ## VisualCOMET: run_rank.py Acc@50 (random_10 on synthetic data) with the finetuned model
	$(PY) visualcomet/scripts/run_rank.py $(THREADS_FLAG) --data_dir $(VC_DATA_DIR) --model_name_or_path $(VC_RUN_DIR)/model \
		--split val --max_seq_len $(VC_SEQ_LEN) --overwrite_output $(if $(DATA_DIR),,--rank_mode random_10) $(ARGS)

visualcomet-visualize: install ## VisualCOMET: draw boxes, event, place and generations into runs/visualcomet/generations.png
	$(PY) visualcomet/scripts/visualize.py $(THREADS_FLAG) --gens_file $(VC_GENS) --data_dir $(VC_DATA_DIR) \
		--out_png $(VC_RUN_DIR)/generations.png --overwrite $(ARGS)

visualcomet-check-keys: install ## VisualCOMET: convert.py --check-keys on the released checkpoint's key list
	$(PY) -m visualcomet.convert --check-keys tests/fixtures/visualcomet_state_dict_keys.txt

visualcomet-bench: install ## VisualCOMET: speed table at the paper's size (GPT-2 small + 2048-d), fp32 eager vs SDPA/AdamW/autocast/compile, sampling and beams; ARGS="--compile on" adds compile on CPU
	$(PY) benchmarks/visualcomet.py $(ARGS)

DEMO_TARGETS += visualcomet-demo
