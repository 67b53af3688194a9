# Set abstraction (Andonian et al., ECCV 2020): make targets. See set_abstraction/README.md.
# DATA_DIR (a --metadata_dir) defaults to synthetic data generated on first use; pass DATA_DIR=...
# for the released metadata. ARGS=... is appended to the script's flags.

SA_SYNTHETIC := runs/synthetic/set_abstraction
SA_GIVEN := $(filter command line environment,$(origin DATA_DIR))
SA_DATA_DIR = $(if $(SA_GIVEN),$(DATA_DIR),$(SA_SYNTHETIC))
# The synthetic data needs the tiny model configuration of spec 10; released data uses the defaults.
SA_MODEL_FLAGS = $(if $(SA_GIVEN),,--model_config tiny --lr 3e-3 -b 64 --num_epochs 8 --num_workers 0)
SA_DATASET ?= moments
SA_RUNS := runs/set_abstraction
SA_RUN_FLAGS = --metadata_dir $(abspath $(SA_DATA_DIR)) --dataset $(SA_DATASET) \
	--log_dir $(abspath $(SA_RUNS))/logs --checkpoint_dir $(abspath $(SA_RUNS))/checkpoints \
	--output_dir $(abspath $(SA_RUNS))/outputs
SA_BEST = $(abspath $(SA_RUNS))/checkpoints/AbstractionEmbedding/AbstractionEmbeddingModule/AbstractionEmbedding_make_$(SA_DATASET)_resnet3d50_1-1_MSE-CE_Adam-$(if $(SA_GIVEN),0.0001,0.003)_SAM_1-2-3-4_best.pth.tar

.PHONY: set_abstraction-demo set_abstraction-synthetic set_abstraction-train set_abstraction-test \
	set_abstraction-check-keys set_abstraction-download set_abstraction-extract set_abstraction-predict \
	set_abstraction-bench

set_abstraction-demo: install ## Set abstraction: synthetic data -> train tiny SAM -> 3 tasks; runs/demo/set_abstraction/
	$(PY) -m set_abstraction.demo --out runs/demo/set_abstraction --overwrite $(if $(SA_GIVEN),--data_dir $(DATA_DIR))

$(SA_SYNTHETIC)/moments_graph.json: | install
	$(PY) -m set_abstraction.synthetic --out $(SA_SYNTHETIC)

set_abstraction-synthetic: install $(SA_SYNTHETIC)/moments_graph.json ## Set abstraction: write the synthetic metadata (moments + kinetics)

set_abstraction-train: install $(if $(SA_GIVEN),,$(SA_SYNTHETIC)/moments_graph.json) ## Set abstraction: train.py on DATA_DIR (run id 'make'; ARGS=... more flags)
	cd set_abstraction && $(abspath $(PY)) train.py $(THREADS_FLAG) --exp_id make $(SA_RUN_FLAGS) $(SA_MODEL_FLAGS) $(ARGS)

set_abstraction-test: install $(if $(SA_GIVEN),,$(SA_SYNTHETIC)/moments_graph.json) ## Set abstraction: test.py (RESUME=ckpt, default: the set_abstraction-train best)
	cd set_abstraction && $(abspath $(PY)) test.py $(THREADS_FLAG) $(SA_RUN_FLAGS) --model AbstractionEmbeddingModule \
		--resume $(if $(RESUME),$(abspath $(RESUME)),$(SA_BEST)) $(if $(SA_GIVEN),,--model_config tiny --num_workers 0) $(ARGS)

set_abstraction-check-keys: install ## Set abstraction: check the released SAM and published 3D ResNet-50 key layouts
	$(PY) -m set_abstraction.convert --check-keys tests/fixtures/set_abstraction_state_dict_keys.txt
	$(PY) -m set_abstraction.convert --check-backbone-keys tests/set_abstraction/fixtures/resnet3d50_published_keys.txt

set_abstraction-download: install ## Set abstraction: download the released metadata into DATA_DIR (default metadata/)
	cd set_abstraction && $(abspath $(PY)) scripts/download_data.py --data_dir $(abspath $(if $(SA_GIVEN),$(DATA_DIR),set_abstraction/metadata)) $(ARGS)

set_abstraction-extract: install ## Set abstraction: cache features of VIDEO_DIR into DATA_DIR (extract_features.py)
	@test -n "$(VIDEO_DIR)" || { echo "set VIDEO_DIR=<directory of videos>"; exit 2; }
	$(PY) set_abstraction/scripts/extract_features.py --video_dir $(VIDEO_DIR) --out_dir $(SA_DATA_DIR) $(ARGS)

SA_DEMO := runs/demo/set_abstraction
SA_PREDICT := runs/predict/set_abstraction
# The demo's tiny SAM (256-d inputs) with a random resnet3d14 of width 8 (256-d features): shows the pipeline.
# With real weights: VIDEOS="a.mp4 b.mp4 c.mp4" RESUME=<SAM .pth.tar> BACKBONE=<3D ResNet-50 file> GRAPH=<graph.json>.
$(SA_DEMO)/pretrained/model.safetensors: | install
	$(PY) -m set_abstraction.demo --out $(SA_DEMO) --overwrite

set_abstraction-predict: install $(if $(VIDEOS),,$(SA_DEMO)/pretrained/model.safetensors) ## Set abstraction: what clips share + odd one out (synthetic clips and demo model unless VIDEOS/RESUME given)
	$(if $(VIDEOS),,$(PY) -m set_abstraction.clips --out $(SA_PREDICT)/clips)
	$(PY) -m set_abstraction.predict --overwrite --out $(SA_PREDICT) \
		$(if $(VIDEOS),--videos $(VIDEOS) --resume $(RESUME) $(if $(BACKBONE),--backbone_weights $(BACKBONE)) $(if $(GRAPH),--graph $(GRAPH)),\
		--videos $(addprefix $(SA_PREDICT)/clips/,red_right.mp4 red_down.mp4 red_diagonal.mp4 blue_right.mp4) \
		--candidates $(addprefix $(SA_PREDICT)/clips/,candidate_red_left.mp4 candidate_green_up.mp4) \
		--resume $(SA_DEMO)/pretrained --graph $(SA_DEMO)/data/moments_graph.json \
		--arch resnet3d14 --width 8 --num_frames 8 --frame_size 64) $(ARGS)

set_abstraction-bench: install ## Set abstraction: speed table at the paper's size (SAM 2048-d), fp32 eager vs fast paths
	$(PY) benchmarks/set_abstraction.py $(ARGS)

DEMO_TARGETS += set_abstraction-demo
