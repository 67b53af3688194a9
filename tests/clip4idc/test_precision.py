"""Issue 17 item 4: saving in the original's precision (195 float16 CLIP tensors), and how far float32
evaluation of float16 weights is from the original's float16 run (measured on a tiny RANDOM model; the
README quotes these figures)."""
import copy

import torch
from safetensors.torch import load_file, save_file

from clip4idc.convert import default_model, main as convert_main
from clip4idc.convert import new_to_original, original_fp16_names, to_original_precision
from clip4idc.decoding import greedy_decode
from clip4idc.models import build_model, load_clip_config, load_decoder_config
from clip4idc.models.precision import convert_weights_fp16
from clip4idc.tokenizer import SOT_ID


def _half_names(sd):
    return {k for k, v in sd.items() if v.dtype == torch.float16}


def test_original_precision_is_the_faithful_layout_at_the_default_config():
    fp32 = new_to_original(default_model("caption").state_dict())
    faithful = default_model("caption")
    convert_weights_fp16(faithful)
    faithful = new_to_original(faithful.state_dict())
    saved = to_original_precision(fp32)
    assert len(original_fp16_names(fp32)) == 195 and _half_names(saved) == _half_names(faithful)
    assert {k: v.dtype for k, v in saved.items()} == {k: v.dtype for k, v in faithful.items()}
    retrieval = to_original_precision(new_to_original(default_model("retrieval").state_dict()))
    assert len(_half_names(retrieval)) == 195 and len(retrieval) == 307


def test_convert_cli_writes_original_precision(tmp_path):
    torch.manual_seed(0)
    model = build_model(load_clip_config("tiny"), load_decoder_config("decoder-tiny"), "caption")
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(tmp_path / "m.safetensors"))
    assert convert_main(["--input", str(tmp_path / "m.safetensors"), "--output", str(tmp_path / "o.safetensors"),
                         "--to-original", "--original_precision"]) == 0
    written = load_file(str(tmp_path / "o.safetensors"))
    faithful = copy.deepcopy(model)
    convert_weights_fp16(faithful)
    assert _half_names(written) == _half_names(new_to_original(faithful.state_dict()))
    assert len(_half_names(written)) == 51  # tiny: 6 blocks x 8 (q/k/v fused as in_proj) + conv1, both projections
    for key, value in new_to_original(model.state_dict()).items():  # float16 rounding only
        torch.testing.assert_close(written[key].float(), value, rtol=1e-3, atol=1e-3)


def test_float32_evaluation_of_float16_weights_is_close_to_the_float16_run():
    """The released files' float16 CLIP tensors, evaluated as the original does (float16 CLIP compute)
    vs cast to float32 as this code loads them: pair-encoder outputs differ by float16 rounding, the
    decoder (float32 in both) sees it in the logits, greedy tokens stay the same here."""
    torch.manual_seed(0)
    fp16 = build_model(load_clip_config("tiny"), load_decoder_config("decoder-tiny"), "caption").eval()
    convert_weights_fp16(fp16)
    fp32 = copy.deepcopy(fp16).float()
    bef, aft = torch.randn(8, 3, 28, 28), torch.randn(8, 3, 28, 28)
    with torch.no_grad():
        h16, h32 = fp16.encode_pair(bef, aft)[1], fp32.encode_pair(bef, aft)[1]
        ids16, ids32 = greedy_decode(fp16, bef, aft, 10), greedy_decode(fp32, bef, aft, 10)
        prefix = torch.cat([torch.full((8, 1), SOT_ID), ids32[:, :-1]], 1)
        l16 = fp16.decode_step(fp16.decoder_memory(h16), prefix)
        l32 = fp32.decode_step(fp32.decoder_memory(h32), prefix)
    hidden_diff, logit_diff = (h16.float() - h32).abs().max().item(), (l16 - l32).abs().max().item()
    print(f"pair encoder max abs diff {hidden_diff:.2e} (max |h| {h32.abs().max().item():.2f}), "
          f"logits max abs diff {logit_diff:.2e}, same greedy tokens {torch.equal(ids16, ids32)}")
    assert h16.dtype == torch.float16 and 1e-4 < hidden_diff < 2e-2
    assert logit_diff < 1e-4
    assert torch.equal(ids16, ids32)
