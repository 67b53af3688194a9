# CLIP4IDC (clip4idc/): image-pair CLIP adaptation + difference captioning.
# DATA_DIR (optional) holds clevr/ (a CLEVR-Change root) and gt/; without it a synthetic set is
# generated once under runs/synthetic/clip4idc. C4I_MODEL_FLAGS picks the model size (tiny by default,
# from random CLIP weights: --random_clip_weights; set it to "" for the real ViT-B/32 configuration,
# which then needs ViT-B-32.pt in ./modules/ or ~/.cache/clip/); C4I_CAPTION_FLAGS is added to the caption stage
# (CLIP at 1/100 of the decoder LR and batch 8 for the tiny model, as in the demo; the original
# scripts use --coef_lr 1e-3). The tiny flags pin one CPU thread (--num_threads 1: 5 s/step -> 0.4 s/step on the
# busy 2-core machine); without them the scripts use the common policy (the cores this process may run on).

C4I_SYNTH := runs/synthetic/clip4idc
C4I_DATA = $(or $(DATA_DIR),$(C4I_SYNTH))
C4I_RUN ?= runs/clip4idc
C4I_BENCH_FLAGS ?=
C4I_EPOCHS_RET ?= 7
C4I_EPOCHS_CAP ?= 4
C4I_CAPTION_FLAGS ?= --coef_lr 0.01 --batch_size 8
C4I_MODEL_FLAGS ?= --pretrained_clip_name tiny --random_clip_weights --decoder_model decoder-tiny \
	--intra_num_hidden_layers 2 --max_words 10 --freeze_layer_num -1 --coef_lr 1 --lr 1e-3 --batch_size 16 --batch_size_val 128 \
	--num_thread_reader 0 --n_display 50 --num_threads 1
C4I_RET_CKPT = $(C4I_RUN)/retrieval/pytorch_model.bin.$(shell echo $$(($(C4I_EPOCHS_RET)-1)))
C4I_CAP_CKPT = $(C4I_RUN)/caption/pytorch_model.bin.$(shell echo $$(($(C4I_EPOCHS_CAP)-1)))

.PHONY: clip4idc-demo clip4idc-data clip4idc-retrieval clip4idc-caption clip4idc-eval clip4idc-predict \
	clip4idc-check-keys clip4idc-bench

clip4idc-demo: install ## CLIP4IDC: both stages on synthetic CLEVR-Change -> runs/demo/clip4idc (metrics.json, report.md, PNGs)
	$(PY) -m clip4idc.demo --data_dir $(C4I_SYNTH) --out runs/demo/clip4idc

clip4idc-data: install ## CLIP4IDC: generate the synthetic CLEVR-Change/Spot/IER set (only when DATA_DIR is not given)
	@if [ -z "$(DATA_DIR)" ] && [ -f $(C4I_SYNTH)/clevr/splits.json ] && [ "$$(cat $(C4I_SYNTH)/GENERATOR_VERSION \
		2>/dev/null)" != "$$($(PY) -c 'from clip4idc.synthetic import GENERATOR_VERSION as v; print(v)')" ]; then \
		echo "$(C4I_SYNTH) was written by an older synthetic generator; regenerating it"; rm -rf $(C4I_SYNTH); fi
	@if [ -z "$(DATA_DIR)" ] && [ ! -f $(C4I_SYNTH)/clevr/splits.json ]; then \
		$(PY) -m clip4idc.synthetic --out $(C4I_SYNTH); fi

clip4idc-retrieval: clip4idc-data ## CLIP4IDC: stage 1 (main_task_retrieval.py) on $(DATA_DIR)/clevr -> $(C4I_RUN)/retrieval
	$(PY) -m clip4idc.main_task_retrieval --do_train --datatype clevr --data_path $(C4I_DATA)/clevr \
		--output_dir $(C4I_RUN)/retrieval --epochs $(C4I_EPOCHS_RET) $(C4I_MODEL_FLAGS)

clip4idc-caption: clip4idc-data ## CLIP4IDC: stage 2 (main_task_caption.py) from the stage-1 weights -> $(C4I_RUN)/caption
	$(PY) -m clip4idc.main_task_caption --do_train --datatype clevr --data_path $(C4I_DATA)/clevr \
		--gt_dir $(C4I_DATA)/gt --output_dir $(C4I_RUN)/caption --epochs $(C4I_EPOCHS_CAP) \
		--init_model $(C4I_RET_CKPT) $(C4I_MODEL_FLAGS) $(C4I_CAPTION_FLAGS)

clip4idc-eval: clip4idc-data ## CLIP4IDC: caption eval (--do_eval) of the stage-2 weights, per change type -> $(C4I_RUN)/eval
	$(PY) -m clip4idc.main_task_caption --do_eval --datatype clevr --data_path $(C4I_DATA)/clevr \
		--gt_dir $(C4I_DATA)/gt --output_dir $(C4I_RUN)/eval --init_model $(C4I_CAP_CKPT) $(C4I_MODEL_FLAGS)

clip4idc-predict: clip4idc-data ## CLIP4IDC: caption one before/after pair of $(DATA_DIR) with the stage-2 weights
	$(PY) -m clip4idc.predict --init_model $(C4I_CAP_CKPT) \
		--before $(C4I_DATA)/clevr/images/CLEVR_default_000000.png \
		--after $(C4I_DATA)/clevr/sc_images/CLEVR_semantic_000000.png

clip4idc-check-keys: install ## CLIP4IDC: load the released checkpoints' key layouts (307/443 keys) strictly
	$(PY) -m clip4idc.convert --check-keys tests/fixtures/clip4idc_state_dict_keys.txt

clip4idc-bench: install ## CLIP4IDC: speed table at the real ViT-B/32 + decoder-base size (eager fp32 vs SDPA/KV cache/autocast/compile)
	$(PY) benchmarks/clip4idc.py $(C4I_BENCH_FLAGS)

DEMO_TARGETS += clip4idc-demo
