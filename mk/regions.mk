# Your own images (issue 13): region features without detectron2 (common/regions/) and the predict paths of
# VisualCOMET and spatial captioning, run on matplotlib's bundled grace_hopper.jpg with tiny random weights.
# The real-weights commands are in common/regions/README.md and the papers' READMEs.

REG_HOPPER = $(shell $(PY) -c "import matplotlib.cbook as c; print(c.get_sample_data('grace_hopper.jpg', asfileobj=False))")
VC_PREDICT_DIR := runs/demo/visualcomet_predict
SC_PREDICT_DIR := runs/demo/spatial_captioning_predict

.PHONY: visualcomet-predict spatial_captioning-predict regions-check-keys regions-bench

visualcomet-predict: install ## VisualCOMET: grace_hopper.jpg + boxes -> inferences JSON + PNG (tiny random weights) in runs/demo/visualcomet_predict
	@test -f $(VC_PREDICT_DIR)/inputs/detectron2_tiny.pkl || $(PY) -m visualcomet.predict --demo_setup $(VC_PREDICT_DIR)/inputs
	$(PY) -m visualcomet.predict --image "$(REG_HOPPER)" --metadata $(VC_PREDICT_DIR)/inputs/grace_hopper.json \
		--event "1 is giving a talk about computers" --place "in a lecture hall" \
		--model_name_or_path $(VC_PREDICT_DIR)/inputs/gpt2-tiny --detector_weights $(VC_PREDICT_DIR)/inputs/detectron2_tiny.pkl \
		--num_samples 3 --output_dir $(VC_PREDICT_DIR) --overwrite

spatial_captioning-predict: install ## Spatial captioning: grace_hopper.jpg -> detected regions, caption, PNG (tiny random weights) in runs/demo/spatial_captioning_predict
	@test -f $(SC_PREDICT_DIR)/ckpt/model.pth || $(PY) -m spatial_captioning.image_folder --demo_setup $(SC_PREDICT_DIR)/ckpt
	@mkdir -p $(SC_PREDICT_DIR)/images && cp "$(REG_HOPPER)" $(SC_PREDICT_DIR)/images/grace_hopper_1.jpg
	$(PY) -m spatial_captioning.eval --image_folder $(SC_PREDICT_DIR)/images --model $(SC_PREDICT_DIR)/ckpt/model.pth \
		--infos_path $(SC_PREDICT_DIR)/ckpt/infos_demo.pkl --detector_weights $(SC_PREDICT_DIR)/ckpt/bua_tiny.pth \
		--vis_dir $(SC_PREDICT_DIR)/vis --device cpu --beam_size 2 --overwrite 1

regions-check-keys: install ## Region detectors: load the detectron2 R101-C4 and bottom-up-attention key layouts strictly (534/535 keys)
	$(PY) -m common.regions.convert --check-keys tests/fixtures/detectron2_r101_c4_keys.txt
	$(PY) -m common.regions.convert --check-keys tests/fixtures/bua_r101_c4_keys.txt

regions-bench: install ## Region detectors: images/s of the R101-C4 extractors at the real input size, fp32 and bf16
	$(PY) benchmarks/regions.py
