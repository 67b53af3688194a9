# Spatial image captioning (sidharth5n/Spatial-Image-Captioning + ORT + SCST): make targets.
# See spatial_captioning/README.md. DATA_DIR (README `data/` layout) defaults to the synthetic set, generated
# on first use; pass DATA_DIR=... for real COCO data. ARGS=... is appended to the script's flags.

SC_SYNTHETIC := runs/synthetic/spatial_captioning
SC_GIVEN := $(filter command line environment,$(origin DATA_DIR))
SC_DATA_DIR = $(abspath $(if $(SC_GIVEN),$(DATA_DIR),$(SC_SYNTHETIC)))
SC_RUNS = $(abspath runs/spatial_captioning)
SC_ID ?= spatial_transformer_bu
# The synthetic set needs the tiny configuration of spec 10.2; real data uses the README flags.
SC_ARCH_FLAGS = $(if $(SC_GIVEN),--num_layers 6 --input_encoding_size 512 --ff_size 2048 --img_feat_size 2048 \
	--num_grids 144 --save_checkpoint_every 1000 --val_images_use 5000,--num_layers 1 --input_encoding_size 64 \
	--ff_size 128 --heads 4 --img_feat_size 32 --num_grids 36 --dropout 0.1 --save_checkpoint_every 100 \
	--val_images_use 50 --cache_features 1 --seed 0 --device cpu)
SC_XE_FLAGS = $(if $(SC_GIVEN),--noamopt --noamopt_warmup 10000 --batch_size 15 --perform_validation_every 2500 \
	--max_epochs 30,--noamopt --noamopt_warmup 50 --batch_size 8 --perform_validation_every 100 --max_epochs 6)
SC_SCST_FLAGS = $(if $(SC_GIVEN),--batch_size 9 --learning_rate 1e-3 --perform_validation_every 4000 \
	--self_critical_after 30 --max_epochs 60,--batch_size 8 --learning_rate 2e-5 --perform_validation_every 100 \
	--self_critical_after 6 --max_epochs 7)
SC_DATA_FLAGS = --input_json $(SC_DATA_DIR)/cocotalk.json --input_img_feat_dir $(SC_DATA_DIR)/cocobu_att \
	--input_grid_vec_dir $(SC_DATA_DIR)/cocobu_box_vec --input_label_h5 $(SC_DATA_DIR)/cocotalk_label.h5 \
	--input_rel_box_dir $(SC_DATA_DIR)/cocobu_box_relative --input_fc_feat_dir $(SC_DATA_DIR)/cocobu_fc \
	--cached_tokens $(SC_DATA_DIR)/coco-train-idxs.p --ann_file $(SC_DATA_DIR)/annotations/captions_val2014.json
SC_NEED_DATA = $(if $(SC_GIVEN),,$(SC_SYNTHETIC)/cocotalk.json)

.PHONY: spatial_captioning-demo spatial_captioning-synthetic spatial_captioning-prepro_labels \
	spatial_captioning-prepro_ngrams spatial_captioning-prepro_areas spatial_captioning-prepro_bbox \
	spatial_captioning-make_bu_data spatial_captioning-prepro_feats spatial_captioning-train \
	spatial_captioning-train_scst spatial_captioning-eval spatial_captioning-create_report \
	spatial_captioning-check-keys spatial_captioning-bench

spatial_captioning-demo: install ## Spatial captioning: synthetic data -> XE + SCST + eval; runs/demo/spatial_captioning/
	$(PY) -m spatial_captioning.demo --out runs/demo/spatial_captioning --overwrite --data_dir $(SC_DATA_DIR)

$(SC_SYNTHETIC)/cocotalk.json: | install
	$(PY) -m spatial_captioning.synthetic --out $(SC_SYNTHETIC)

spatial_captioning-synthetic: install $(SC_SYNTHETIC)/cocotalk.json ## Spatial captioning: write the synthetic "object + position" set

spatial_captioning-prepro_labels: install $(SC_NEED_DATA) ## Spatial captioning: prepro_labels.py on DATA_DIR/dataset_coco.json -> runs/spatial_captioning/prepro/
	$(PY) spatial_captioning/scripts/prepro_labels.py --input_json $(SC_DATA_DIR)/dataset_coco.json \
		--output_json $(SC_RUNS)/prepro/cocotalk.json --output_h5 $(SC_RUNS)/prepro/cocotalk $(ARGS)

spatial_captioning-prepro_ngrams: install $(SC_NEED_DATA) ## Spatial captioning: prepro_ngrams.py --split train -> runs/spatial_captioning/prepro/coco-train-*.p
	$(PY) spatial_captioning/scripts/prepro_ngrams.py --input_json $(SC_DATA_DIR)/dataset_coco.json \
		--dict_json $(SC_DATA_DIR)/cocotalk.json --output_pkl $(SC_RUNS)/prepro/coco-train --split train $(ARGS)

spatial_captioning-prepro_areas: install $(SC_NEED_DATA) ## Spatial captioning: prepro_areas.py (grid vectors) -> runs/spatial_captioning/prepro/cocobu_box_vec
	$(PY) spatial_captioning/prepro_areas.py --input_dir $(SC_DATA_DIR)/cocobu_box \
		--output_dir $(SC_RUNS)/prepro/cocobu_box_vec --input_json $(SC_DATA_DIR)/cocotalk.json \
		--num_grids $(if $(SC_GIVEN),144,36) $(ARGS)

spatial_captioning-prepro_bbox: install $(SC_NEED_DATA) ## Spatial captioning: prepro_bbox_relative_coords.py -> runs/spatial_captioning/prepro/cocobu_box_relative
	$(PY) spatial_captioning/scripts/prepro_bbox_relative_coords.py --input_json $(SC_DATA_DIR)/dataset_coco.json \
		--image_root $(if $(IMAGE_ROOT),$(abspath $(IMAGE_ROOT)),$(SC_DATA_DIR)/images) \
		--input_box_dir $(SC_DATA_DIR)/cocobu_box --output_dir $(SC_RUNS)/prepro/cocobu_box_relative $(ARGS)

spatial_captioning-make_bu_data: install ## Spatial captioning: make_bu_data.py on DATA_DIR/bu_data (trainval TSVs) -> DATA_DIR/cocobu_*
	@test -n "$(SC_GIVEN)" || { echo "set DATA_DIR=<dir holding bu_data/trainval/*.tsv>"; exit 2; }
	$(PY) spatial_captioning/scripts/make_bu_data.py --downloaded_feats $(SC_DATA_DIR)/bu_data \
		--output_dir $(SC_DATA_DIR)/cocobu $(ARGS)

spatial_captioning-prepro_feats: install ## Spatial captioning: prepro_feats.py (ResNet grid features; IMAGE_ROOT=, weights in DATA_DIR/imagenet_weights)
	@test -n "$(SC_GIVEN)" && test -n "$(IMAGE_ROOT)" || { echo "set DATA_DIR=... IMAGE_ROOT=<coco images>"; exit 2; }
	$(PY) spatial_captioning/scripts/prepro_feats.py --input_json $(SC_DATA_DIR)/dataset_coco.json \
		--output_dir $(SC_DATA_DIR)/cocotalk --images_root $(abspath $(IMAGE_ROOT)) \
		--model_root $(SC_DATA_DIR)/imagenet_weights $(ARGS)

spatial_captioning-train: install $(SC_NEED_DATA) ## Spatial captioning: train.py XE (README command; tiny config on synthetic data)
	cd spatial_captioning && $(abspath $(PY)) train.py $(THREADS_FLAG) --id $(SC_ID) --caption_model spatial_pe $(SC_DATA_FLAGS) \
		--checkpoint_path $(SC_RUNS)/checkpoints/$(SC_ID) $(SC_ARCH_FLAGS) $(SC_XE_FLAGS) --enc_pos_embedding 1 \
		--enc_pos_type gxg --cross_attn xlinear $(ARGS)

spatial_captioning-train_scst: install $(SC_NEED_DATA) ## Spatial captioning: copy_model.sh <id> <id>_rl, then train.py SCST (README command)
	cd $(SC_RUNS)/checkpoints && sh $(abspath spatial_captioning/scripts/copy_model.sh) $(SC_ID) $(SC_ID)_rl .
	cd spatial_captioning && $(abspath $(PY)) train.py $(THREADS_FLAG) --id $(SC_ID)_rl --caption_model spatial_pe $(SC_DATA_FLAGS) \
		--checkpoint_path $(SC_RUNS)/checkpoints/$(SC_ID)_rl --start_from $(SC_RUNS)/checkpoints/$(SC_ID)_rl \
		$(SC_ARCH_FLAGS) $(SC_SCST_FLAGS) --enc_pos_embedding 1 --enc_pos_type gxg --cross_attn xlinear $(ARGS)

spatial_captioning-eval: install $(SC_NEED_DATA) ## Spatial captioning: eval.py on the test split (RUN=<id>, default the XE run); writes <run>/vis, <run>/eval_results (again: ARGS="--overwrite 1")
	cd spatial_captioning && $(abspath $(PY)) eval.py $(THREADS_FLAG) --dump_images 0 --num_images $(if $(SC_GIVEN),5000,-1) \
		--model $(SC_RUNS)/checkpoints/$(or $(RUN),$(SC_ID))/model.pth \
		--infos_path $(SC_RUNS)/checkpoints/$(or $(RUN),$(SC_ID))/infos_$(or $(RUN),$(SC_ID)).pkl \
		--image_root $(if $(IMAGE_ROOT),$(abspath $(IMAGE_ROOT)),$(SC_DATA_DIR)/images) --language_eval 1 \
		--dump_png 8 \
		--input_box_dir $(SC_DATA_DIR)/cocobu_box --ann_file $(SC_DATA_DIR)/annotations/captions_val2014.json $(ARGS)

spatial_captioning-create_report: install ## Spatial captioning: create_report.py on PICKLES="a.pkl b.pkl" NAMES="a b" -> runs/spatial_captioning/report-<time>
	@test -n "$(PICKLES)" && test -n "$(NAMES)" || { echo "set PICKLES=\"<eval_results/*_report_data.pkl ...>\" NAMES=\"<one name each>\""; exit 2; }
	cd spatial_captioning && $(abspath $(PY)) create_report.py --pickles $(abspath $(PICKLES)) --run_names $(NAMES) \
		--out_dir $(SC_RUNS)/report --add_time $(ARGS)

spatial_captioning-check-keys: install ## Spatial captioning: convert.py --check-keys on the released-layout key file
	$(PY) -m spatial_captioning.convert --check-keys tests/fixtures/spatial_captioning_state_dict_keys.txt

spatial_captioning-bench: install ## Spatial captioning: speed table at the README configuration (eager fp32 vs SDPA/autocast/fused Adam/compile); ARGS="--compile" adds compile on CPU
	$(PY) benchmarks/spatial_captioning.py $(ARGS)

DEMO_TARGETS += spatial_captioning-demo
